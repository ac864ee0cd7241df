"""Task names, the paper's metric for each, our local tasks, and loading tasks with one-line errors.

The RWKV paper (Peng et al., 2023) reports zero-shot results on twelve tasks, here in lm-eval 0.4 names
with the metric its tables use: acc_norm (length-normalised accuracy) for ARC-Challenge, HeadQA,
HellaSwag and OpenBookQA, exact match for ReCoRD, perplexity and accuracy for LAMBADA, accuracy elsewhere.

Standard tasks download their Hugging Face dataset on first use. Offline, a task whose dataset is not in
the cache fails with one line naming the task and how to fill the cache, never with a `datasets` stack
trace; when the hub cannot be reached, offline mode is switched on so cached datasets load at once
instead of after minutes of retries.
"""
from __future__ import annotations

import difflib
import functools
import logging
import os
import re
from pathlib import Path

from ..errors import UserError
from ..library_internals import go_offline

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

PAPER_TASKS = ["arc_easy", "arc_challenge", "boolq", "copa", "headqa_en", "hellaswag", "lambada_openai",
               "openbookqa", "piqa", "record", "sciq", "winogrande"]

# task -> the metrics the paper reports for it (lm-eval metric names, in table order)
PAPER_METRICS = {
    "arc_easy": ["acc"],
    "arc_challenge": ["acc_norm"],
    "boolq": ["acc"],
    "copa": ["acc"],
    "headqa_en": ["acc_norm"],
    "hellaswag": ["acc_norm"],
    "lambada_openai": ["perplexity", "acc"],
    "openbookqa": ["acc_norm"],
    "piqa": ["acc"],
    "record": ["em"],
    "sciq": ["acc"],
    "winogrande": ["acc"],
    # our local tasks, reported the same way as their standard counterparts
    "rwkv_bench_mc": ["acc", "acc_norm"],
    "rwkv_bench_hellaswag": ["acc", "acc_norm"],
    "rwkv_bench_lambada": ["perplexity", "acc"],
    "rwkv_bench_rolling": ["bits_per_byte", "word_perplexity"],
}
LOWER_IS_BETTER = {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"}

# our YAMLs + JSONL, found by default: <repo>/tasks in a checkout, rwkv_bench/_tasks in a wheel (setup.py)
LOCAL_TASKS_DIR = next((d for d in (REPO_ROOT / "tasks", Path(__file__).resolve().parent.parent / "_tasks")
                        if d.is_dir()), REPO_ROOT / "tasks")
LOCAL_TAG = "rwkv_bench_local"

log = logging.getLogger(__name__)


def expand_task_names(spec: str | list[str]) -> list[str]:
    """'paper' -> the paper's twelve tasks; anything else is an lm-eval task, group or tag name."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (x.strip() for x in items):
        for name in (PAPER_TASKS if item == "paper" else [item] if item else []):
            if name not in names:
                names.append(name)
    if not names:
        raise UserError("--tasks is empty: give task names (comma-separated) or 'paper'")
    return names


def include_paths(extra: list[str] | None = None) -> list[Path]:
    """Our tasks/ folder (when this is a source checkout) plus the user's --include-path folders."""
    paths = [LOCAL_TASKS_DIR] if LOCAL_TASKS_DIR.is_dir() else []
    for item in extra or []:
        for part in (p.strip() for p in str(item).split(",")):
            if not part:
                continue
            path = Path(part).expanduser().resolve()
            if not path.is_dir():
                raise UserError(f"--include-path {part}: no such directory")
            if path not in paths:
                paths.append(path)
    return paths


def _quiet_lm_eval() -> None:
    """lm-eval logs every task it indexes at WARNING; keep real warnings, drop that noise."""
    for name in ("lm_eval.tasks", "lm_eval.tasks._index", "lm_eval.tasks._factory", "lm_eval.api.task"):
        logging.getLogger(name).setLevel(logging.ERROR)


@functools.lru_cache(maxsize=4)
def indexed_tasks(folders: tuple[str, ...], include_defaults: bool):
    """lm-eval's TaskManager over `folders` (and its ~15k built-in YAMLs with `include_defaults`). Indexing
    the built-in ones takes seconds: a process builds each index once (tasks are built anew on every load)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(folders) or None, include_defaults=include_defaults)


def task_manager(names: list[str], paths: list[Path]):
    """A TaskManager that knows every name in `names`, or UserError naming the unknown ones. Our include
    paths are tried alone first: they index in a fraction of a second."""
    from .squad_compat import install

    install()  # lm-eval's record (a paper task) imports a module transformers 5 removed
    _quiet_lm_eval()
    folders = tuple(str(p) for p in paths)
    if paths:
        local = indexed_tasks(folders, include_defaults=False)
        if all(n in local.all_tasks for n in names):
            return local
    manager = indexed_tasks(folders, include_defaults=True)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        hints = sorted({m for n in unknown for m in difflib.get_close_matches(n, manager.all_tasks, n=3)})
        from ..recording import package_versions

        version = package_versions().get("lm_eval")
        raise UserError(f"unknown task{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: not in "
                        f"lm-eval {version}'s registry nor in {', '.join(map(str, paths)) or 'any --include-path'}"
                        + (f" (did you mean {', '.join(hints)}?)" if hints else "")
                        + "; 'paper' expands to the paper's twelve tasks, `lm-eval ls tasks` lists all")
    return manager


def expand_tags(manager, names: list[str]) -> list[str]:
    """A tag (e.g. rwkv_bench_local) becomes its member tasks, so tokens and time are counted per task.
    Groups stay whole: lm-eval aggregates their subtasks into the group's own score."""
    index = manager.task_index
    out: list[str] = []
    for name in names:
        entry = index.get(name)
        members = [name]
        if entry is not None and getattr(entry.kind, "name", "") == "TAG":
            members = sorted(k for k, e in index.items()
                             if name in (e.tags or ()) and getattr(e.kind, "name", "") in ("TASK", "PY_TASK")) or [name]
        out += [m for m in members if m not in out]
    return out


def is_local(manager, name: str, paths: list[Path]) -> bool:
    """True when the task's YAML lives in one of our include paths (its data is local files)."""
    index = manager.task_index
    entry = index.get(name)
    if entry is None:
        return False
    members = [e for e in index.values() if name in (e.tags or ())]   # a tag: all its tasks must be local
    yamls = [e.yaml_path for e in members] if members else [entry.yaml_path]
    if not yamls or any(y is None for y in yamls):
        return False
    return all(any(Path(y).resolve().is_relative_to(p) for p in paths) for y in yamls)


def offline_mode() -> bool:
    return os.environ.get("HF_DATASETS_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def prepare_network(manager, names: list[str], paths: list[Path]) -> bool:
    """Returns True when running offline. Probes the hub only when some task needs a download."""
    if offline_mode():
        return True
    if all(is_local(manager, n, paths) for n in names):
        return False
    from ..hub import hub_offline

    if not hub_offline():
        return False
    log.info("the Hugging Face hub is unreachable: running offline, from the local dataset cache")
    go_offline()
    return True


MISSING_DATA_ERRORS = ("DatasetNotFoundError", "LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectError",
                       "ConnectTimeout", "HfHubHTTPError", "EntryNotFoundError", "RepositoryNotFoundError")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_missing_dataset(exc: BaseException) -> bool:
    for e in _chain(exc):
        text = str(e).lower()
        if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in MISSING_DATA_ERRORS:
            return True
        if "offline" in text or "couldn't reach" in text or "name or service not known" in text:
            return True
    return False


def dataset_of(manager, name: str, exc: BaseException) -> str | None:
    entry = manager.task_index.get(name)
    cfg = getattr(entry, "cfg", None) or {}
    path = cfg.get("dataset_path")
    if path:
        return path + (f" {cfg['dataset_name']}" if cfg.get("dataset_name") else "")
    for e in _chain(exc):
        if m := re.search(r"(?:reach|dataset|Dataset) '([^']+)'", str(e)):
            return m.group(1)
    return None


def cache_dir() -> str:
    try:
        import datasets.config

        return str(datasets.config.HF_DATASETS_CACHE)
    except Exception:  # noqa: BLE001
        return "~/.cache/huggingface/datasets"


class MissingDataset(UserError):
    """A standard task whose Hugging Face dataset is neither cached nor downloadable."""

    def __init__(self, task: str, dataset: str | None):
        self.task, self.dataset = task, dataset
        super().__init__(missing_message([self]))


def missing_message(missing: list[MissingDataset], offline: bool = False) -> str:
    what = ", ".join(f"{m.task!r}" + (f" ({m.dataset})" if m.dataset else "") for m in missing)
    many = len(missing) > 1
    return (f"task{'s' if many else ''} {what} need{'' if many else 's'} {'their' if many else 'its'} Hugging Face "
            f"dataset{'s' if many else ''}, not in the local cache ({cache_dir()}) and not downloadable"
            f"{' (offline)' if offline else ''}: run the same command once with network access to fill the cache "
            "(or copy a filled cache and set HF_HOME / HF_DATASETS_CACHE); after that it runs offline, also with "
            "HF_DATASETS_OFFLINE=1. Offline now: --tasks rwkv_bench_local")


def load_task(manager, name: str):
    """Build one task (or group/tag) with its dataset; a missing dataset becomes MissingDataset."""
    try:
        return manager.load([name])
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets, hub and task-config errors alike become one line
        if is_missing_dataset(exc):
            raise MissingDataset(name, dataset_of(manager, name, exc)) from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"cannot load task {name!r}: {type(exc).__name__}: {first}") from None


def check_tasks(manager, names: list[str], *, offline: bool = False) -> None:
    """Load every task once (datasets land in the cache); all missing datasets reported in one line."""
    missing = []
    for name in names:
        try:
            load_task(manager, name)
        except MissingDataset as exc:
            missing.append(exc)
    if missing:
        raise UserError(missing_message(missing, offline))


def report_metrics(task: str, available: list[str]) -> list[str]:
    """The metrics a paper-style table shows for `task`: the paper's where known, else all of them."""
    wanted = PAPER_METRICS.get(task)
    if wanted:
        chosen = [m for m in wanted if m in available]
        if chosen:
            return chosen
    return list(available)
