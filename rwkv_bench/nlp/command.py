"""`rwkv-bench nlp`: the CLI layer over evaluate.run_nlp."""
from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("nlp")
    def nlp(
        models: str = typer.Option(..., "--models", "-m",
                                   help="Comma-separated model specs: RWKV-4 ones run in rwkv-bench's lm-eval model "
                                        "with state reuse, others in lm-eval's hf model (transformers:SPEC forces hf)."),
        tasks: str = typer.Option("paper", "--tasks", "-t",
                                  help="Comma-separated lm-eval task/group/tag names; 'paper' = the paper's twelve; "
                                       "rwkv_bench_local = our offline tasks in tasks/."),
        limit: float = typer.Option(None, "--limit", help="Examples per task (or a fraction below 1); for quick runs."),
        num_fewshot: int = typer.Option(0, "--num-fewshot", help="Few-shot examples per prompt (paper: 0)."),
        batch_size: int = typer.Option(8, "--batch-size",
                                       help="hf: requests per forward; rwkv-bench: continuations per forward."),
        include_path: list[str] = typer.Option(None, "--include-path",
                                               help="Extra folder(s) of lm-eval task YAMLs (tasks/ is always included)."),
        out: Path = typer.Option(None, "--out", help="Run directory (default results/nlp/<timestamp>)."),
        device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
        dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
        tokenizer: str = typer.Option(None, help="Tokenizer file/dir/hub id for RWKV checkpoints without one."),
        bootstrap_iters: int = typer.Option(100000, "--bootstrap-iters",
                                            help="lm-eval's bootstrap draws for perplexity-type standard errors."),
        log_samples: bool = typer.Option(False, "--log-samples", help="Also write lm-eval's per-request records."),
    ):
        """The paper's NLP benchmarks through lm-evaluation-harness, RWKV-4 with state reuse."""
        from .evaluate import run_nlp

        run_dir = run_nlp(models, tasks, limit=limit, num_fewshot=num_fewshot, batch_size=batch_size,
                          include_path=include_path, out=out, device=device, dtype=dtype, tokenizer=tokenizer,
                          bootstrap_iters=bootstrap_iters, log_samples=log_samples)
        print((run_dir / "table.md").read_text(encoding="utf-8"))
        print(f"results in {run_dir}")
