"""`rwkv-bench scaling`: the Typer layer over `sweep.run_sweep`."""
from __future__ import annotations

from typing import Optional

import typer

from .sweep import DEFAULTS


def register(app: typer.Typer) -> None:
    d = DEFAULTS

    @app.command("scaling")
    def scaling(
        models: Optional[str] = typer.Option(None, "--models", "-m", help=(
            f"Comma-separated model specs (default: {d['models']}). transformers:rwkv4-<size> runs transformers' "
            "own RwkvForCausalLM on the same random weights as rwkv4-<size>.")),
        scenario: Optional[str] = typer.Option(None, "--scenario", "-s",
                                               help=f"prefill, generate or both (default: {d['scenario']})."),
        min_len: Optional[int] = typer.Option(None, "--min-len", help=f"Shortest T (default: {d['min_len']})."),
        max_len: Optional[int] = typer.Option(None, "--max-len", help=f"Longest T, included (default: {d['max_len']})."),
        points: Optional[int] = typer.Option(None, "--points", help="Number of lengths in the geometric grid."),
        ratio: Optional[float] = typer.Option(None, "--ratio", help="Step of the geometric grid (default: 2)."),
        gen_max_len: Optional[int] = typer.Option(None, "--gen-max-len", help=(
            f"Longest T for generate (grid lengths above it are prefill only) (default: {d['gen_max_len']}; "
            "with --min-len or --max-len given: --max-len).")),
        kv_cache: Optional[bool] = typer.Option(None, "--kv-cache/--no-kv-cache", help=(
            "Transformers decode with their KV cache (default), or re-run the whole sequence per token "
            "(the paper's protocol).")),
        device: Optional[str] = typer.Option(None, "--device", help=f"cpu or cuda[:N] (default: {d['device']})."),
        dtype: Optional[str] = typer.Option(None, "--dtype", help=f"float32, bfloat16 or float16 (default: {d['dtype']})."),
        out: Optional[str] = typer.Option(None, "--out", "-o", help="Run directory (default: results/scaling/<UTC timestamp>)."),
        resume: bool = typer.Option(False, "--resume", help=(
            "Continue a run (--out DIR, else the latest under results/scaling): points already in points.csv "
            "are skipped; its stored options apply unless given again.")),
        time_budget: Optional[float] = typer.Option(None, "--time-budget", help=(
            f"Seconds per point after loading; past it the point is a timeout and longer lengths of that "
            f"model and scenario are skipped (default: {d['time_budget']:g}).")),
        memory_limit: Optional[str] = typer.Option(None, "--memory-limit", help=(
            "Cap on what a point may allocate beyond the loaded model, e.g. 2G (CPU: RLIMIT_AS of the child; "
            "CUDA: per-process memory fraction). Exceeding it records oom.")),
        repeats: Optional[int] = typer.Option(None, "--repeats", help=f"Timed prefill passes (default: {d['repeats']})."),
        warmup: Optional[int] = typer.Option(None, "--warmup", help=f"Untimed warm-up passes (default: {d['warmup']})."),
        prompt_len: Optional[int] = typer.Option(None, "--prompt-len", help=f"Prompt before generation (default: {d['prompt_len']})."),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch threads in each child (default: torch's)."),
        seed: Optional[int] = typer.Option(None, "--seed", help=f"Seed of weights and token ids (default: {d['seed']})."),
        tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer for RWKV checkpoints without one."),
        no_report: bool = typer.Option(False, "--no-report", help="Skip the figures and tables at the end."),
    ):
        """Time and peak memory against sequence length, prefill and generation, RWKV vs transformers."""
        from .sweep import run_sweep

        if (max_len is not None or min_len is not None) and gen_max_len is None and not resume:
            gen_max_len = max_len if max_len is not None else DEFAULTS["max_len"]  # lengths given: generate them all
        given = dict(models=models, scenario=scenario, min_len=min_len, max_len=max_len, points=points, ratio=ratio,
                     gen_max_len=gen_max_len, kv_cache=kv_cache, device=device, dtype=dtype,
                     time_budget=time_budget, memory_limit=memory_limit, repeats=repeats, warmup=warmup,
                     prompt_len=prompt_len, threads=threads, seed=seed, tokenizer=tokenizer)
        run_dir = run_sweep(given, out=out, resume=resume, report=not no_report)
        typer.echo(f"results: {run_dir}")
