"""`rwkv-bench scaling`: time and peak memory against sequence length, RWKV vs transformers.

    points.py    the length grid, model entries and the JSON spec of one measured point
    measure.py   what runs inside the child process: load, warm up, time, measure memory
    child.py     `python -m rwkv_bench.scaling.child SPEC.json`: one point in a fresh process
    launcher.py  spawns the child with a time budget and an optional memory cap, classifies the outcome
    sweep.py     the loop over (scenario, length, model): resume, skip-after-failure, progress, CSV rows
    table1.py    the paper's Table 1 next to exponents fitted on the measurements
    report.py    `render(run_dir)`: figures, table1.md and summary.md from the stored CSVs
    command.py   the Typer command
"""
