"""The uncheatable eval: score texts published after the models were trained (new arXiv papers, Wikipedia
articles, GitHub code, bioRxiv preprints, or a file), with intervals, per source.

The path of a run: `command` (the CLI) -> `evaluate.run` (the loop) -> `settings.settle` (every option
parsed and checked once into a typed Settings: model specs, sources, dates from `cutoffs`) -> `gather`
(texts from `sources`, prepared by `texts`) -> scoring -> `store` (the run directory's one owner: files,
columns, readers and writers) -> `report` (tables and figures, read back through `store`; `stats` for the
bootstrap intervals).
"""
