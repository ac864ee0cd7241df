"""`rwkv-bench nlp`: run lm-eval's `simple_evaluate` for each model on each task and keep everything.

Who runs what:
- RWKV-4 specs our loader takes (rwkv4-* presets, Hugging Face RWKV dirs, .pth/.safetensors, RWKV hub ids)
  run in our lm-eval model (lm.py: state reuse, shared prefixes, batched continuations);
- everything else runs in lm-eval's own `hf` model with `pretrained=<dir or hub id>`, so its numbers are
  lm-eval's numbers: hub ids and local dirs as they are, random-weight presets (gptneox-*, llama-*) saved
  to a temporary directory first, `transformers:<dir or hub id>` to force it (e.g. transformers' own
  RwkvForCausalLM on the same weights as ours), GGUF files through `gguf_file=`.

Each (model, task) is one `simple_evaluate` call on the same model object, so tokens and time are
counted per task. The run directory gets:
  results_<model>.json   lm-eval's own results dict per model (tasks merged), plus our token counts
  samples_<model>_<task>.jsonl   per-request records, with --log-samples
  table.csv              task, metric, filter, model, value, stderr, ... (one row per number)
  tokens.csv             tokens processed vs re-encode-everything, time, per model x task x request type
  table.md, nlp_scores.{png,svg}, nlp_tokens.{png,svg}   built by report.render from the CSVs
  meta.json              kind "nlp" + environment + options
"""
from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..recording import append_row, new_run_dir, write_meta
from . import tasks as T

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["task", "metric", "filter", "model", "value", "stderr", "higher_is_better", "n_samples",
                 "num_fewshot", "random_weights", "runner", "implementation"]
TOKEN_COLUMNS = ["model", "task", "request_type", "requests", "tokens_processed", "tokens_padding",
                 "tokens_reencode", "reencode_over_processed", "model_time_s", "wall_s", "runner",
                 "random_weights"]
OURS = "rwkv-bench"          # our lm-eval model (lm.py)
HF = "lm-eval hf"            # lm-eval's own HFLM


@dataclass
class ModelPlan:
    spec: str
    label: str
    runner: str                          # OURS or HF
    random_weights: bool
    hf_args: dict = field(default_factory=dict)
    save_preset: bool = False            # a random transformer preset, saved to a temp dir before HFLM
    implementation: str = ""


# ---- argument checks ----

def check_limit(limit):
    if limit is None:
        return None
    try:
        value = float(limit)
    except (TypeError, ValueError):
        raise UserError(f"--limit must be a number, got {limit!r}") from None
    if value <= 0:
        raise UserError(f"--limit must be positive (a count of examples per task, or a fraction below 1), "
                        f"got {value:g}")
    return int(value) if value >= 1 else value


def split_models(models: str | list[str]) -> list[str]:
    items = models.split(",") if isinstance(models, str) else list(models)
    specs: list[str] = []
    for spec in (s.strip() for s in items):
        if spec and spec not in specs:
            specs.append(spec)
    if not specs:
        raise UserError("--models is empty: give model specs, comma-separated")
    return specs


def short_name(spec: str) -> str:
    path = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) or path.exists():
        return path.name or spec
    return spec


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"


# ---- which harness model runs each spec ----

def plan_model(spec: str) -> ModelPlan:
    """Decide, without loading weights, whether our RWKV or lm-eval's hf model runs `spec`."""
    from ..models import loaders, presets
    from ..specs import SMOLLM2_PRESET, TRANSFORMERS_PREFIX, looks_like_hub_id, resolve, smollm2_path

    if spec.startswith(TRANSFORMERS_PREFIX):
        target = spec[len(TRANSFORMERS_PREFIX):].strip()
        path = Path(target).expanduser()
        if not path.exists() and not looks_like_hub_id(target):
            raise UserError(f"no such model directory or hub id: {target!r} (in {spec!r})")
        args = {"pretrained": str(path) if path.exists() else target}
        if path.is_file() and path.suffix == ".gguf":
            args = {"pretrained": str(path.parent), "gguf_file": path.name}
        label = TRANSFORMERS_PREFIX + short_name(target)
        return ModelPlan(spec, label, HF, random_weights=loaders.saved_from_random_preset(path),
                         hf_args=args)
    if (preset := presets.split_preset(spec)) is not None:
        family, _ = preset
        if family == "rwkv4":
            return ModelPlan(spec, spec, OURS, random_weights=True)
        return ModelPlan(spec, spec, HF, random_weights=True, save_preset=True)
    if spec == SMOLLM2_PRESET:
        path = smollm2_path()
        return ModelPlan(spec, spec, HF, random_weights=False,
                         hf_args={"pretrained": str(path.parent), "gguf_file": path.name})
    path = Path(spec).expanduser()
    if path.is_dir():
        if loaders.is_hf_rwkv_dir(path):
            return ModelPlan(spec, short_name(spec), OURS, random_weights=loaders.saved_from_random_preset(path))
        if (path / "config.json").is_file():
            return ModelPlan(spec, short_name(spec), HF, random_weights=False, hf_args={"pretrained": str(path)})
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return ModelPlan(spec, short_name(spec), HF, random_weights=False,
                             hf_args={"pretrained": str(path), "gguf_file": ggufs[0].name})
    elif path.is_file():
        if path.suffix in (".pth", ".pt", ".safetensors"):
            return ModelPlan(spec, short_name(spec), OURS, random_weights=False)
        if path.suffix == ".gguf":
            return ModelPlan(spec, short_name(spec), HF, random_weights=False,
                             hf_args={"pretrained": str(path.parent), "gguf_file": path.name})
    elif looks_like_hub_id(spec) and not spec.startswith((".", "/", "~")):
        model_type = hub_model_type(spec)
        if model_type == "rwkv":
            return ModelPlan(spec, spec, OURS, random_weights=False)
        return ModelPlan(spec, spec, HF, random_weights=False, hf_args={"pretrained": spec})
    resolve(spec)  # raises the loader's own one-line error for anything else
    raise UserError(f"cannot evaluate model spec {spec!r}")


def hub_model_type(hub_id: str) -> str:
    from transformers import AutoConfig

    from ..specs import first_line

    try:
        return AutoConfig.from_pretrained(hub_id).model_type
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"unknown model {hub_id!r}: cannot read its config from the hub or the local cache "
                        f"({first_line(exc)})") from None


def plan_models(specs: list[str]) -> list[ModelPlan]:
    plans = [plan_model(s) for s in specs]
    seen: dict[str, int] = {}
    for plan in plans:  # two specs with the same short name get distinct labels
        seen[plan.label] = seen.get(plan.label, 0) + 1
        if seen[plan.label] > 1:
            plan.label = f"{plan.label}#{seen[plan.label]}"
    return plans


# ---- building the lm-eval model objects ----

def save_hf_tokenizer(tokenizer, path: Path) -> None:
    """Our Tokenizer (a `tokenizers` file or a transformers tokenizer) as a transformers tokenizer dir."""
    impl = tokenizer.impl
    if hasattr(impl, "save_pretrained"):
        impl.save_pretrained(path)
        return
    from transformers import PreTrainedTokenizerFast

    eot = impl.id_to_token(0) or "<|endoftext|>"
    pad = "<|padding|>" if impl.token_to_id("<|padding|>") is not None else eot
    PreTrainedTokenizerFast(tokenizer_object=impl, bos_token=eot, eos_token=eot, unk_token=eot,
                            pad_token=pad).save_pretrained(path)


def has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json"))


def build_lm(plan: ModelPlan, *, device: str, dtype: str, batch_size: int, tokenizer: str | None,
             tmp: Path):
    """-> (lm-eval LM, TokenMeter, implementation string)."""
    from ..commands import parse_dtype
    from ..specs import first_line, resolve
    from .lm import RWKVBenchLM, attach_meter

    if plan.runner == OURS:
        backend = resolve(plan.spec, device=device, dtype=parse_dtype(dtype), tokenizer=tokenizer)
        lm = RWKVBenchLM(backend=backend, batch_size=batch_size)
        return lm, lm.meter, backend.implementation + " + state reuse"
    args = dict(plan.hf_args)
    if plan.save_preset:  # random-weight transformer preset: lm-eval's hf model loads it from a directory
        backend = resolve(plan.spec, device="cpu", dtype=parse_dtype(dtype), tokenizer=tokenizer)
        backend.model.save_pretrained(tmp)
        save_hf_tokenizer(backend.tokenizer, tmp)
        del backend
        args = {"pretrained": str(tmp)}
    pretrained = Path(args["pretrained"])
    if "gguf_file" not in args and "tokenizer" not in args and pretrained.is_dir() and not has_tokenizer(pretrained):
        from ..tokenizer import neox_tokenizer  # e.g. an RWKV dir without tokenizer files: GPT-NeoX's

        tok_dir = tmp / "tokenizer"
        tok_dir.mkdir(parents=True, exist_ok=True)
        save_hf_tokenizer(neox_tokenizer(tokenizer), tok_dir)
        args["tokenizer"] = str(tok_dir)
    elif tokenizer and "tokenizer" not in args:
        args["tokenizer"] = tokenizer
    try:
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(**args, device=device, dtype=dtype, batch_size=batch_size)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - missing files, offline hub, unsupported architecture
        raise UserError(f"cannot load {plan.spec!r} with lm-eval's hf model: {first_line(exc)}") from None
    meter = attach_meter(lm)
    return lm, meter, f"lm_eval.hf[transformers.{type(lm.model).__name__}]"


# ---- results -> rows ----

def metric_rows(results: dict, *, model: str, plan: ModelPlan, implementation: str, num_fewshot: int) -> list[dict]:
    rows = []
    n_samples = results.get("n-samples", {})
    higher = results.get("higher_is_better", {})
    for task, values in results.get("results", {}).items():
        for key, value in values.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            if not isinstance(value, (int, float)):
                continue
            stderr = values.get(f"{metric}_stderr,{filt}")
            rows.append({
                "task": task, "metric": metric, "filter": filt, "model": model, "value": value,
                "stderr": stderr if isinstance(stderr, (int, float)) else None,
                "higher_is_better": higher.get(task, {}).get(metric),
                "n_samples": (n_samples.get(task) or {}).get("effective"),
                "num_fewshot": (results.get("n-shot") or {}).get(task, num_fewshot),
                "random_weights": plan.random_weights, "runner": plan.runner, "implementation": implementation,
            })
    return rows


def merge_results(merged: dict | None, new: dict) -> dict:
    """lm-eval results of one task merged into the model's results dict (same layout as lm-eval's)."""
    new = {k: v for k, v in new.items() if k != "samples"}
    if merged is None:
        return new
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "config":
            merged[key].update(value)
        elif key not in merged:
            merged[key] = value
    return merged


def dump_json(path: Path, data: dict) -> None:
    from lm_eval.utils import handle_non_serializable

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=handle_non_serializable, ensure_ascii=False) + "\n")
    tmp.replace(path)


def write_samples(path: Path, samples: dict) -> None:
    from lm_eval.utils import handle_non_serializable

    with open(path, "w", encoding="utf-8") as f:
        for task, records in samples.items():
            for record in records:
                f.write(json.dumps({"task": task, **record}, default=handle_non_serializable,
                                   ensure_ascii=False) + "\n")


# ---- the run ----

def run_nlp(models, tasks, *, limit=None, num_fewshot: int = 0, batch_size: int = 8,
            include_path: list[str] | None = None, out=None, device: str = "cpu", dtype: str = "float32",
            tokenizer: str | None = None, bootstrap_iters: int = 100000, log_samples: bool = False,
            progress: bool = True) -> Path:
    """The plain function behind `rwkv-bench nlp`; returns the run directory."""
    from ..commands import parse_device, parse_dtype

    limit = check_limit(limit)
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if num_fewshot < 0:
        raise UserError(f"--num-fewshot must be 0 or more, got {num_fewshot}")
    if bootstrap_iters < 0:
        raise UserError(f"--bootstrap-iters must be 0 or more, got {bootstrap_iters}")
    device = parse_device(device)
    dtype = str(parse_dtype(dtype)).removeprefix("torch.")
    names = T.expand_task_names(tasks)
    specs = split_models(models)
    paths = T.include_paths(include_path)
    manager = T.task_manager(names, paths)
    names = T.expand_tags(manager, names)
    plans = plan_models(specs)
    offline = T.prepare_network(manager, names, paths)
    T.check_tasks(manager, names, offline=offline)  # every dataset present, or one line, before any model loads

    run_dir = new_run_dir("nlp", out)
    for stale in ("table.csv", "tokens.csv"):
        (run_dir / stale).unlink(missing_ok=True)
    meta = dict(kind="nlp", device=device, dtype=dtype, tasks=names, requested_tasks=tasks, limit=limit,
                num_fewshot=num_fewshot, batch_size=batch_size, bootstrap_iters=bootstrap_iters,
                include_paths=[str(p) for p in paths], offline=offline,
                models=[{"spec": p.spec, "label": p.label, "runner": p.runner, "random_weights": p.random_weights}
                        for p in plans],
                paper_metrics=T.PAPER_METRICS, status="running",
                protocol=("zero-shot unless --num-fewshot; RWKV-4 through rwkv-bench's lm-eval model (each distinct "
                          "context run once, its state reused for every continuation, shared prefixes shared); "
                          "other models through lm-eval's own hf model. tokens_processed = positions the model "
                          "ran (padding included); tokens_reencode = positions if every request ran alone from "
                          "scratch."))
    write_meta(run_dir, **meta)

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        job = bar.add_task("nlp", total=len(plans) * len(names))
        for plan in plans:
            with tempfile.TemporaryDirectory(prefix="rwkv-bench-nlp-") as tmp:
                bar.update(job, description=f"loading {plan.label}")
                lm, meter, implementation = build_lm(plan, device=device, dtype=dtype, batch_size=batch_size,
                                                     tokenizer=tokenizer, tmp=Path(tmp))
                plan.implementation = implementation
                merged = None
                for name in names:
                    bar.update(job, description=f"{plan.label} · {name}")
                    merged = evaluate_one(lm, meter, plan, name, manager, run_dir=run_dir, limit=limit,
                                          num_fewshot=num_fewshot, batch_size=batch_size, device=device,
                                          bootstrap_iters=bootstrap_iters, log_samples=log_samples,
                                          merged=merged)
                    bar.advance(job)
                del lm
    meta.update(status="done", models=[{"spec": p.spec, "label": p.label, "runner": p.runner,
                                        "random_weights": p.random_weights, "implementation": p.implementation}
                                       for p in plans])
    write_meta(run_dir, **meta)
    from .report import render

    render(run_dir)
    return run_dir


def evaluate_one(lm, meter, plan: ModelPlan, name: str, manager, *, run_dir: Path, limit, num_fewshot: int,
                 batch_size: int, device: str, bootstrap_iters: int, log_samples: bool, merged: dict | None):
    import lm_eval

    meter.reset()
    start = time.perf_counter()
    results = lm_eval.simple_evaluate(model=lm, tasks=[name], num_fewshot=num_fewshot, limit=limit,
                                      batch_size=batch_size, device=device, task_manager=manager,
                                      bootstrap_iters=bootstrap_iters, log_samples=log_samples)
    wall = time.perf_counter() - start
    if results is None:
        raise UserError(f"lm-eval returned no results for {name!r}")
    results["config"]["model"] = plan.label
    results["config"]["model_args"] = plan.hf_args.get("pretrained") if plan.runner == HF else plan.spec
    if log_samples and results.get("samples"):
        write_samples(run_dir / f"samples_{slug(plan.label)}_{slug(name)}.jsonl", results["samples"])
    for row in metric_rows(results, model=plan.label, plan=plan, implementation=plan.implementation,
                           num_fewshot=num_fewshot):
        append_row(run_dir / "table.csv", row, TABLE_COLUMNS)
    token_rows = []
    for counts in meter.rows():
        processed = counts["tokens_processed"]
        row = {"model": plan.label, "task": name, **counts, "wall_s": wall, "runner": plan.runner,
               "random_weights": plan.random_weights,
               "reencode_over_processed": counts["tokens_reencode"] / processed if processed else None}
        token_rows.append(row)
        append_row(run_dir / "tokens.csv", row, TOKEN_COLUMNS)
    merged = merge_results(merged, results)
    merged.setdefault("rwkv_bench", {"model": plan.label, "spec": plan.spec, "runner": plan.runner,
                                     "random_weights": plan.random_weights,
                                     "implementation": plan.implementation, "tokens": []})
    merged["rwkv_bench"]["tokens"].extend(token_rows)
    dump_json(run_dir / f"results_{slug(plan.label)}.json", merged)
    return merged
