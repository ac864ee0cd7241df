"""`rwkv-bench report`: rebuild every run's tables and figures from its stored files, plus an index page.

Each run directory's meta.json names its `kind` ("scaling", "uncheatable", "nlp"); build.py's table
`RENDERERS` maps it to that kind's `rwkv_bench/<kind>/report.py: render(run_dir) -> list[Path]`, which
rebuilds its outputs, and `write_index` writes `index.md` linking them. Every renderer saves its figures with
`figures.save_figure` (PNG + SVG, byte-identical from one rebuild to the next) and formats numbers and
Markdown tables with `tables`.
"""
