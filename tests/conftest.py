import os
from pathlib import Path

import pytest

from rwkv_bench.tokenizer import NEOX_TOKENIZER_FILE as NEOX_TOKENIZER  # shipped in the package

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def pytest_configure(config):
    # pytest-xdist starts one worker per core; at torch's default of one thread per core each, workers x cores
    # threads share the cores and wait on each other's time slices (two workers' model tests ran 2.5x slower
    # on 2 cores). So each worker, and every process it starts, gets its share of the cores; a test that
    # needs more threads sets them itself.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        from rwkv_bench.distributed import usable_cores

        share = max(1, usable_cores() // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


@pytest.fixture(scope="session")
def neox_tokenizer_path():
    return NEOX_TOKENIZER


def pytest_collection_modifyitems(config, items):
    # a CUDA compile takes tens of seconds: the quick loop (-m "not slow") leaves it out with the end-to-end runs
    for item in items:
        if item.get_closest_marker("needs_nvcc"):
            item.add_marker(pytest.mark.slow)
    # modules with slow tests first (a stable sort keeps the order within a module): pytest-xdist (loadscope)
    # hands modules out in this order, and a long module handed out last keeps one worker busy alone
    heavy = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in heavy)


# CI (.ci/run sets RWKV_BENCH_FORBID_SKIPS=1) fails on any skip except those of tests marked needs_gpu or
# needs_nvcc: a check that silently skips itself on a user's machine is a check that never runs.
ALLOWED_SKIP_MARKERS = ("needs_gpu", "needs_nvcc")
_forbidden_skips: list[str] = []


def pytest_runtest_logreport(report):
    # called where results are gathered: in the one process, or in pytest-xdist's controller
    if report.skipped and not any(m in report.keywords for m in ALLOWED_SKIP_MARKERS):
        _forbidden_skips.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _forbidden_skips and os.environ.get("RWKV_BENCH_FORBID_SKIPS"):
        print(f"\nerror: {len(_forbidden_skips)} test(s) skipped without a needs_gpu / needs_nvcc marker: "
              + ", ".join(_forbidden_skips))
        session.exitstatus = 1
