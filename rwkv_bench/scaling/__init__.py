"""`rwkv-bench scaling`: time and peak memory against sequence length, RWKV vs transformers.

    points.py    the length grid, model entries and the JSON spec of one measured point
    measure.py   what runs inside the child process: load, warm up, then each phase (prefill, decode at
                 context T from the prefill's state, generate): time, live memory
    child.py     `python -m rwkv_bench.scaling.child SPEC.json`: one (model, T) in a fresh process
    launcher.py  spawns the child with a time budget and an optional memory cap, classifies the outcome
    predict.py   a transformer point's KV cache and activations, predicted before it runs (skipped if too big)
    sweep.py     the loop over (length, model): resume, skip-after-failure, progress, CSV rows
    integrate.py Figure 7 from decode samples: cumulative generation time integrated over context length
    table1.py    the paper's Table 1 next to exponents fitted on the measurements
    report.py    `render(run_dir)`: figures, table1.md and summary.md from the stored CSVs
    command.py   the Typer command
"""
