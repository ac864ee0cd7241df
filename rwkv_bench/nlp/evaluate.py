"""`rwkv-bench nlp`: run lm-eval's `simple_evaluate` for each model on each task and keep everything.

Who runs what:
- specs rwkv-bench runs itself (specs.OURS: rwkv4-*/rwkv7-* presets, Hugging Face RWKV dirs, .pth and
  .safetensors checkpoints, RWKV hub ids), whose backends hold a RecurrentLM, run in our lm-eval model
  (lm_eval_model.py: state reuse, shared prefixes, batched continuations);
- everything else runs in lm-eval's own `hf` model with `pretrained=<dir or hub id>`, so its numbers are
  lm-eval's numbers: hub ids and local dirs as they are, random-weight presets (gptneox-*, llama-*) saved
  to a temporary directory first, `transformers:<dir or hub id>` to force it (e.g. transformers' own
  RwkvForCausalLM on the same weights as ours), GGUF files through `gguf_file=`.

Each (model, task) is one `simple_evaluate` call on the same model object, so tokens and time are
counted per task. What the run directory holds, and the only code that reads and writes it: store.py.

Under torchrun (`torchrun --nproc-per-node N --no-python rwkv-bench nlp ...`, see rwkv_bench.distributed)
every rank runs this. Rank 0 alone checks the options and inputs, opens (or resumes) the run directory and
finds the (model, task) pairs already committed, and hands all that to the others. Our model runs on every
rank: lm-eval gives each rank every N-th document of a task (lm_eval_model.py), gathers the per-document
metrics on rank 0 and computes the results there; the ranks' token counters are gathered and summed, and
rank 0 alone writes every file. lm-eval's `hf` model shards itself only when accelerate sees more than one
GPU (it reads the same RANK/WORLD_SIZE variables torchrun sets); otherwise (CPU, one GPU) it would run every
request on every rank, so it runs on rank 0 alone, with all of that node's cores, while the others wait.
"""
from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import distributed
from ..console import progress_bar
from ..errors import UserError
from ..options import as_dict
from ..specs import OURS, ModelSpec
from . import store
from .config import NlpConfig, resolve
from ..library_internals import go_offline
from .store import HF_LM, RWKV_BENCH_LM
from .tasks import PAPER_METRICS, check_tasks, expand_tags, include_paths, prepare_network, task_manager

log = logging.getLogger(__name__)


@dataclass
class ModelPlan:
    spec: ModelSpec
    label: str
    runner: str                          # RWKV_BENCH_LM or HF_LM
    hf_args: dict = field(default_factory=dict)
    implementation: str = ""
    ranks: int = 1                       # processes that share its requests (torchrun)

    @property
    def random_weights(self) -> bool:
        return self.spec.random_weights


def short_name(spec: ModelSpec) -> str:
    if spec.kind in ("hf-dir", "checkpoint", "gguf") and spec.text != "smollm2-135m":
        name = Path(spec.text.removeprefix("transformers:")).expanduser().name or spec.text
        return ("transformers:" + name) if spec.text.startswith("transformers:") else name
    return spec.text


# ---- which harness model runs each spec ----

def plan_model(spec: ModelSpec) -> ModelPlan:
    """Our lm-eval model for a spec rwkv-bench runs itself (its backend holds a RecurrentLM), else lm-eval's
    hf model with the arguments that find the weights."""
    from ..backends import with_runner

    spec = with_runner(spec)  # a hub id not in the cache: its config decides (fails fast offline)
    if spec.runner == OURS:
        return ModelPlan(spec, short_name(spec), RWKV_BENCH_LM)
    args = {} if spec.kind == "preset" else {"pretrained": spec.location}
    if spec.gguf_file:
        args["gguf_file"] = spec.gguf_file
    return ModelPlan(spec, short_name(spec), HF_LM, hf_args=args)


def plan_models(specs: list[ModelSpec]) -> list[ModelPlan]:
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


def hf_shards(device: str, dist: distributed.Dist) -> bool:
    """Whether lm-eval's hf model splits the requests between the ranks by itself: only when accelerate's
    Accelerator sees several processes AND more than one GPU (lm_eval/models/huggingface.py, `gpus > 1`).
    On CPU it keeps rank 0 of 1 on every rank, i.e. every rank would run every request."""
    if not dist.enabled or not device.startswith("cuda"):
        return False
    import torch

    return torch.cuda.device_count() > 1


def build_lm(plan: ModelPlan, c: NlpConfig, tmp: Path, device: str | None = None):
    """-> (lm-eval LM, TokenMeter, implementation string). `device`: this rank's (default c.device)."""
    from ..backends import load
    from ..hub import first_line
    from ..options import parse_dtype
    from .lm_eval_model import RWKVBenchLM
    from .meter import attach_meter

    spec = plan.spec
    if plan.runner == RWKV_BENCH_LM:
        backend = load(spec, device=device or c.device, dtype=parse_dtype(c.dtype), tokenizer=c.tokenizer)
        lm = RWKVBenchLM(backend=backend, batch_size=c.batch_size)
        return lm, lm.meter, backend.implementation + " + state reuse"
    args = dict(plan.hf_args)
    if spec.kind == "preset" and spec.family == "transformer":  # lm-eval's hf model loads from a directory
        backend = load(spec, device="cpu", dtype=parse_dtype(c.dtype))
        backend.model.save_pretrained(tmp)
        del backend
        args["pretrained"] = str(tmp)
    elif spec.kind == "preset":  # transformers:rwkv4-<size>: the peer directory
        from ..models.peer import peer_cache_dir, save_peer

        args["pretrained"] = str(save_peer(spec.location, peer_cache_dir(spec.location, 0)))
    if not spec.has_tokenizer:  # e.g. an RWKV dir without tokenizer files: GPT-NeoX's (or --tokenizer)
        from ..tokenizer import neox_tokenizer

        tok_dir = tmp / "tokenizer"
        tok_dir.mkdir(parents=True, exist_ok=True)
        save_hf_tokenizer(neox_tokenizer(c.tokenizer), tok_dir)
        args["tokenizer"] = str(tok_dir)
    try:
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(**args, device=c.device, dtype=c.dtype, batch_size=c.batch_size)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - missing files, offline hub, unsupported architecture
        raise UserError(f"cannot load {spec.text!r} with lm-eval's hf model: {first_line(exc)}") from None
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


# ---- the run ----

@dataclass
class Setup:
    """What rank 0 decides before any model loads, handed to every rank."""
    run_dir: Path
    config: NlpConfig
    names: list[str]
    paths: list[Path]
    offline: bool
    plans: list[ModelPlan]
    done: set


def prepare(given: dict, out, resume: bool, dist: distributed.Dist):
    """Rank 0 (or the only process): options, inputs, run directory, meta.json, committed pairs.
    -> (Setup, lm-eval task manager)."""
    from ..backends import check_reachable

    run_dir, old_meta = store.open_run(out, resume)
    c = resolve(given, (old_meta or {}).get("options"))
    if dist.enabled and isinstance(c.limit, int) and c.limit < dist.world_size:
        # a rank without documents would skip lm-eval's collectives and leave the others waiting
        raise UserError(f"--limit {c.limit} is below the {dist.world_size} ranks: every rank needs a document")
    check_reachable(c.specs, hint="pass local models instead, e.g. --models rwkv4-tiny,rwkv7-tiny,smollm2-135m")
    paths = include_paths(c.include_path)
    manager = task_manager(c.task_names, paths)
    names = expand_tags(manager, c.task_names)
    plans = plan_models(c.specs)
    offline = prepare_network(manager, names, paths)
    check_tasks(manager, names, offline=offline)  # every dataset present, or one line, before any model loads

    shards = hf_shards(c.device, dist)
    for plan in plans:
        plan.ranks = dist.world_size if plan.runner == RWKV_BENCH_LM or shards else 1
    fields = dict(tasks=names, offline=offline, include_paths=[str(p) for p in paths], paper_metrics=PAPER_METRICS,
                  models=[model_meta(p) for p in plans], protocol=PROTOCOL)
    if dist.enabled:
        fields["distributed"] = {"world_size": dist.world_size, "backend": distributed.process_group_backend(),
                                 "hf_model": "sharded by accelerate" if shards else "rank 0 alone"}
    store.start(run_dir, as_dict(c), old_meta, **fields)
    return Setup(run_dir, c, names, paths, offline, plans, store.committed_tasks(run_dir)), manager


def run_nlp(given: dict, *, out=None, resume: bool = False, progress: bool = True) -> Path:
    """The plain function behind `rwkv-bench nlp`; returns the run directory.
    `given`: NlpConfig fields set by the user (None or absent: the default, or the resumed run's).
    Under torchrun every rank calls this (module doc)."""
    dist = distributed.init()
    try:
        held = {}

        def first() -> Setup:
            setup, held["manager"] = prepare(given, out, resume, dist)
            return setup

        setup = distributed.rank_zero_first(first, dist)
        run_dir, c, names, plans = setup.run_dir, setup.config, setup.names, setup.plans
        if not dist.is_main and setup.offline:  # the other ranks: offline if rank 0 found no network
            go_offline()
        manager = held["manager"] if dist.is_main else task_manager(names, setup.paths)
        device = distributed.device_for(c.device, dist)

        with progress_bar(progress and dist.is_main) as bar:
            job = bar.add_task("nlp", total=len(plans) * len(names))
            evaluated, die = 0, distributed.die_after()
            for plan in plans:
                todo = [n for n in names if (plan.label, n) not in setup.done]
                bar.advance(job, len(names) - len(todo))
                if not todo or (plan.ranks == 1 and not dist.is_main):
                    continue  # lm-eval's hf model that does not shard: rank 0 runs it alone
                with (tempfile.TemporaryDirectory(prefix="rwkv-bench-nlp-") as tmp,
                      alone_gets_the_cores(plan, dist)):
                    bar.update(job, description=f"loading {plan.label}")
                    lm, meter, plan.implementation = build_on_ranks(plan, c, Path(tmp), device, dist)
                    merged = store.read_results(run_dir, plan.label) if dist.is_main else None
                    for name in todo:
                        bar.update(job, description=f"{plan.label} · {name}")
                        merged = evaluate_one(lm, meter, plan, name, manager, c, run_dir=run_dir, merged=merged,
                                              dist=dist)
                        bar.advance(job)
                        evaluated += 1
                        distributed.die_if_asked(die, dist, evaluated)
                    del lm
        if dist.is_main:
            store.finish(run_dir, models=[model_meta(p) for p in plans])
            from ..report.build import render_run  # the kind's tables and figures, then index.md

            render_run(run_dir)
        distributed.barrier(dist)  # the report is written before any rank returns
    finally:  # also on errors: a process group left alive aborts the process at exit
        distributed.shutdown()
    return run_dir


@contextmanager
def alone_gets_the_cores(plan: ModelPlan, dist: distributed.Dist):
    """A model rank 0 runs alone (the others wait) gets all of this node's cores, not a rank's share."""
    if not dist.enabled or plan.ranks > 1:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(distributed.usable_cores())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_on_ranks(plan: ModelPlan, c: NlpConfig, tmp: Path, device: str, dist: distributed.Dist):
    """build_lm on every rank that runs `plan`: rank 0 first (a hub download happens once; if it fails, the
    others stop with it), then the others."""
    if plan.ranks == 1:
        return build_lm(plan, c, tmp, device=device)  # hf ignores it; ours alone means one process: c.device
    built = []
    distributed.rank_zero_first(lambda: built.append(build_lm(plan, c, tmp, device=device)), dist)
    lm, meter, implementation = built[0] if built else build_lm(plan, c, tmp, device=device)
    if plan.runner == HF_LM and (lm.world_size, lm.rank) != (dist.world_size, dist.rank):
        raise UserError(f"lm-eval's hf model took rank {lm.rank} of {lm.world_size} for torchrun's rank {dist.rank} "
                        f"of {dist.world_size} (it shards by local rank, one node only): run {plan.spec.text} "
                        "without torchrun, or on one node")
    return lm, meter, implementation


def model_meta(plan: ModelPlan) -> dict:
    from ..specs import identity

    meta = {"spec": plan.spec.text, "label": plan.label, "runner": plan.runner, "random_weights": plan.random_weights,
            "implementation": plan.implementation, "identity": identity(plan.spec)}
    if plan.ranks > 1:
        meta["ranks"] = plan.ranks
    return meta


def sum_counts(parts: list[tuple[list[dict], float]]) -> tuple[list[dict], float]:
    """The ranks' (meter rows, wall seconds) as one: counts and model time summed per request type (in the
    order first seen), wall = the slowest rank's."""
    total: dict[str, dict] = {}
    for rows, _ in parts:
        for row in rows:
            into = total.setdefault(row["request_type"], {"request_type": row["request_type"]})
            for key, value in row.items():
                if key != "request_type":
                    into[key] = into.get(key, 0) + value
    return list(total.values()), max(wall for _, wall in parts)


def evaluate_one(lm, meter, plan: ModelPlan, name: str, manager, c: NlpConfig, *, run_dir: Path,
                 merged: dict | None, dist: distributed.Dist | None = None):
    """One task for one model: table.csv rows, the model's results JSON, then tokens.csv rows (the commit).
    With several ranks on the model, every rank runs its shard; rank 0 gets lm-eval's results and the sum
    of the ranks' token counters and writes; the others return None."""
    import lm_eval

    from ..trackers import latency

    dist = dist or distributed.Dist()
    meter.reset()
    with latency(c.device) as wall:
        results = lm_eval.simple_evaluate(model=lm, tasks=[name], num_fewshot=c.num_fewshot, limit=c.limit,
                                          batch_size=c.batch_size, device=c.device, task_manager=manager,
                                          bootstrap_iters=c.bootstrap_iters, log_samples=c.log_samples)
    mine = (meter.rows(), wall.seconds)
    parts = distributed.gather_objects(mine, dist) if plan.ranks > 1 else [mine]
    if not dist.is_main:
        return None
    counted, wall_s = sum_counts(parts)
    if results is None:
        raise UserError(f"lm-eval returned no results for {name!r}")
    results["config"]["model"] = plan.label
    results["config"]["model_args"] = plan.hf_args.get("pretrained") if plan.runner == HF_LM else plan.spec.text
    if c.log_samples and results.get("samples"):
        store.write_samples(run_dir, plan.label, name, results["samples"])
    rows = metric_rows(results, model=plan.label, plan=plan, implementation=plan.implementation,
                       num_fewshot=c.num_fewshot)
    store.append_metrics(run_dir, [{**r, "run_task": name} for r in rows])
    token_rows = []
    for counts in counted or [{"request_type": "none", "requests": 0, "tokens_processed": 0}]:
        processed = counts.get("tokens_processed") or 0
        token_rows.append({"model": plan.label, "task": name, **counts, "wall_s": wall_s, "runner": plan.runner,
                           "random_weights": plan.random_weights,
                           "reencode_over_processed": counts["tokens_reencode"] / processed if processed else None})
    merged = merge_results(merged, results)
    merged.setdefault("rwkv_bench", {"model": plan.label, "spec": plan.spec.text, "runner": plan.runner,
                                     "random_weights": plan.random_weights,
                                     "implementation": plan.implementation, "tokens": []})
    merged["rwkv_bench"]["tokens"].extend(token_rows)
    store.write_results(run_dir, plan.label, merged)
    store.append_tokens(run_dir, token_rows)  # last: these rows commit the task
    return merged


PROTOCOL = ("zero-shot unless --num-fewshot; rwkv-bench's own recurrent models (RWKV) through its lm-eval model "
            "(each distinct context run once, its state reused for every continuation, shared prefixes shared); "
            "other models through lm-eval's own hf model. tokens_processed = positions the model ran (padding "
            "included); tokens_reencode = positions if every request ran alone from scratch. Under torchrun the "
            "counts and model_time_s are summed over the ranks that shared the requests, wall_s is the slowest "
            "rank's.")
