"""The uncheatable eval: score texts published after a model was trained (new arXiv papers, or a file).

Modules: `arxiv_source` (the only one touching the network: arXiv API, PDFs, cache), `texts` (loading
and preparing texts), `stats` (bootstrap intervals, paired differences), `evaluate` (the run loop),
`report` (tables and figures from a run directory), `command` (the CLI).
"""
