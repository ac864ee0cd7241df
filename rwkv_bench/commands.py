"""Core commands: `score` (one text under one model) and `kernels` (the WKV implementations timed)."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from .options import parse_device, parse_dtype, parse_int_list, positive, read_utf8_file


def score_file(model: str, input_path: Path, *, tokenizer: str | None = None, device: str = "cpu",
               dtype: str = "float32") -> dict:
    """The plain function behind `rwkv-bench score`."""
    from .options import canonical_dtype
    from .specs import parse

    text = read_utf8_file(input_path)  # every input is checked before torch and transformers are imported
    spec = parse(model)
    canonical_dtype(dtype)
    from .backends import check_reachable, load
    from .scoring import score_text

    check_reachable([spec])
    backend = load(spec, device=parse_device(device), dtype=parse_dtype(dtype), tokenizer=tokenizer)
    result = score_text(backend, text).as_dict()
    result.update(random_weights=backend.random_weights, device=str(backend.device),
                  dtype=str(backend.dtype).removeprefix("torch."))
    return result


def register(app: typer.Typer) -> None:
    @app.command("score")
    def score(
        model: str = typer.Option(..., "--model", "-m", help="Model spec: preset, path or hub id."),
        input: Path = typer.Option(..., "--input", "-i", help="UTF-8 text file to score."),
        tokenizer: str = typer.Option(None, help="Tokenizer for models without one of their own "
                                                 "(default: GPT-NeoX-20B, shipped)."),
        device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
        dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ):
        """Log-probability (nats) and bits per UTF-8 byte of a text under a model."""
        r = score_file(model, input, tokenizer=tokenizer, device=device, dtype=dtype)
        if as_json:
            print(json.dumps(r))
            return
        warn = "  [random weights: says nothing about quality]" if r["random_weights"] else ""
        print(f"model           {r['model']}{warn}\nimplementation  {r['implementation']}\n"
              f"tokens          {r['tokens']}\nbytes           {r['bytes']}\n"
              f"logprob_nats    {r['logprob_nats']:.4f}\nbits_per_byte   {r['bits_per_byte']:.4f}")

    @app.command("kernels")
    def kernels(
        lengths: str = typer.Option("256,1024,4096", help="Comma-separated sequence lengths T."),
        channels: int = typer.Option(768, "--channels", "-C", help="Channels C."),
        batch: int = typer.Option(1, help="Batch size B."),
        device: str = typer.Option("cpu", help="cpu or cuda."),
        allow_reference: bool = typer.Option(False, "--allow-reference",
                                             help="Without the compiled kernel, time the others anyway "
                                                  "(default: stop with one line)."),
        as_json: bool = typer.Option(False, "--json", help="Print the rows as a JSON list."),
    ):
        """Time the WKV implementations (reference, CPU/CUDA kernels, transformers) and check they agree."""
        Ts = parse_int_list(lengths, "--lengths")
        positive(channels, "--channels")
        positive(batch, "--batch")
        device = parse_device(device)
        from .ops.kernel_bench import run_kernel_benchmark
        from .ops.wkv import require_kernel

        if not allow_reference:
            require_kernel(device)
        rows = run_kernel_benchmark(lengths=Ts, channels=channels, batch=batch, device=device)
        if as_json:
            print(json.dumps(rows))
            return
        import pandas as pd

        print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g"))
