"""`rwkv-bench scaling`: time and peak memory against sequence length, RWKV vs transformers.

    command.py   the Typer command
    config.py    ScalingConfig: the options (flags, meta.json, resume), each parsed and checked once into the
                 typed fields the sweep uses (model specs, scenarios, the length grid, the memory limit)
    sweep.py     the loop over (length, model): the kernel check, resume, skip-after-failure, progress
    plan.py      the points in order, grouped by child process, and the rough cost printed before they run
    estimate.py  the per-point cost model behind that estimate
    predict.py   a transformer point's KV cache and activations, predicted before it runs (skipped if too big)
    points.py    the length grid, the scenarios and the JSON spec of one measured point
    launcher.py  spawns the child with a time budget and an optional memory cap, classifies the outcome
    child.py     `python -m rwkv_bench.scaling.child SPEC.json`: one (model, T) in a fresh process
    measure.py   what runs inside the child: load, warm up, then each phase (prefill, decode at context T
                 from the prefill's state, generate): time, live memory
    store.py     the run directory's format: points.csv, generate_tokens.csv, serving.csv and meta.json's keys, their
                 one writer (the sweep) and one reader (the report, a resume)
    protocol.py  what each scenario measures, in words (meta.json, summary.md)
    serving.py   the serve scenario: one child per (model, T, B), its predicted memory, then each (model, T)'s
                 capacity confirmed where it can run
    serving_measure.py  inside the child: B sequences prefilled (or copied) and decoded together
    capacity.py  bytes per sequence from the held memory over the batch grid, the largest B in a budget
    bandwidth.py the machine's copy bandwidth (STREAM-like) that decode steps are set against
    serving_report.py  batched.md / batched.csv (llama-batched-bench columns), capacity.md, serving figures
    report.py    `render(run_dir)`: figures, table1.md and summary.md from the stored files
    facts.py     what the rows say about each model (family, implementation, weights) and its labels
    figures.py   the figures
    integrate.py Figure 7 from decode samples: cumulative generation time integrated over context length
    table1.py    the paper's Table 1 next to exponents fitted on the measurements
    summary.py   summary.md
"""
