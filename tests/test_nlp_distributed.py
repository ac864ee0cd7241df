"""`rwkv-bench nlp` and our lm-eval model sharded over 2 CPU processes (gloo): torchrun and accelerate launch.

Sharded runs give the same accuracies as one process. What may differ, and why:
- perplexity-type values, in the 7th digit: each rank batches its own contexts, so float32 sums run in another
  order (the same happens in one process with another batch size);
- bootstrap standard errors (perplexity): lm-eval resamples the gathered per-document list, which comes back
  rank by rank instead of in document order, so the seeded draws pick other documents;
- tokens_processed: each rank shares prefixes only among its own documents and pads its own batches.
  requests and tokens_reencode are exactly the single-process counts (lm-eval's padding copies are not run).
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO
from test_nlp_cli import LIMIT, RUN_ARGS, single_process_run

VENV_BIN = Path(sys.executable).parent
TASKS = "rwkv_bench_mc,rwkv_bench_lambada"
# the single-process run's arguments (test_nlp_cli.py); 15 documents: rank 0 gets 8, rank 1 gets 7 and
# lm-eval pads it with copies of its last request
ARGS = RUN_ARGS
assert LIMIT == 15 and TASKS in ARGS
BOOTSTRAPPED = {"perplexity"}  # metrics whose stderr lm-eval bootstraps (see the module doc)


def launcher_env(**extra) -> dict:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


def torchrun(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    cmd = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "--no-python",
           str(VENV_BIN / "rwkv-bench"), "nlp", *args]
    return subprocess.run(cmd, cwd=REPO, env=env or launcher_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return single_process_run(tmp_path_factory)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    out = tmp_path_factory.mktemp("nlp2") / "run"
    done = torchrun(*ARGS, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def tables(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(run / "table.csv"), pd.read_csv(run / "tokens.csv")


def assert_same_results(run: Path, reference: Path) -> None:
    table, ref = tables(run)[0], tables(reference)[0]
    key = ["run_task", "task", "metric", "filter", "model"]
    both = table.merge(ref, on=key, suffixes=("", "_ref"), validate="one_to_one")
    assert len(both) == len(ref) == len(table) and len(table) > 0
    for _, r in both.iterrows():
        if r["metric"] in BOOTSTRAPPED:
            assert r["value"] == pytest.approx(r["value_ref"], rel=1e-5), r.to_dict()
        else:  # accuracies: exactly the single-process numbers, and their (closed-form) standard errors
            assert r["value"] == r["value_ref"], r.to_dict()
            assert r["stderr"] == pytest.approx(r["stderr_ref"], rel=1e-12), r.to_dict()
        assert r["n_samples"] == r["n_samples_ref"] == LIMIT


@pytest.mark.slow
def test_torchrun_shards_and_matches_one_process(sharded, single):
    run, done = sharded
    assert_same_results(run, single)
    # rank 0 alone reports and writes: one table on stdout, one results file per model
    assert done.stdout.count("results in ") == 1 and done.stdout.count("| rwkv_bench_mc |") >= 1
    assert sorted(p.name for p in run.glob("results_*.json")) == ["results_rwkv4-tiny.json"]
    assert not list(run.glob("*.tmp"))
    meta = json.loads((run / "meta.json").read_text())
    assert meta["completed"] and meta["distributed"]["world_size"] == 2 and meta["models"][0]["ranks"] == 2
    # token counters summed over both ranks: every request counted once, padding copies not at all
    tokens, ref = tables(run)[1], tables(single)[1]
    both = tokens.merge(ref, on=["model", "task", "request_type"], suffixes=("", "_ref"), validate="one_to_one")
    assert len(both) == len(ref) == 2
    assert (both["requests"] == both["requests_ref"]).all()
    assert (both["tokens_reencode"] == both["tokens_reencode_ref"]).all()
    real, real_ref = (both["tokens_processed"] - both["tokens_padding"],
                      both["tokens_processed_ref"] - both["tokens_padding_ref"])
    # shards share prefixes only within themselves: at least the single process's real positions, never more
    # than re-encoding everything; state reuse still saves most of the work on the multiple-choice task
    assert (real >= real_ref).all() and (real <= both["tokens_reencode"]).all()
    mc = both[both.task == "rwkv_bench_mc"].iloc[0]
    assert mc["tokens_processed"] < mc["tokens_reencode"] / 2


@pytest.mark.slow
def test_a_rank_dying_fails_the_launch_and_resume_completes_it(tmp_path, single):
    out = tmp_path / "run"
    died = torchrun(*ARGS, "--out", str(out), env=launcher_env(RWKV_BENCH_TEST_DIE_AFTER="1"))
    assert died.returncode != 0
    assert "killed by RWKV_BENCH_TEST_DIE_AFTER=1" in died.stderr
    tokens = pd.read_csv(out / "tokens.csv") if (out / "tokens.csv").is_file() else pd.DataFrame(columns=["task"])
    assert set(tokens["task"]) <= {"rwkv_bench_mc"}  # the second task never committed
    again = torchrun("--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_results(out, single)
    table, tokens = tables(out)
    assert not tokens.duplicated(["model", "task", "request_type"]).any()
    assert set(tokens["task"]) == set(TASKS.split(","))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["completed"] and len(meta["resumes"]) == 1


@pytest.mark.slow
def test_bad_input_under_torchrun_is_one_line_from_rank_0(tmp_path):
    # an option refused before any task is indexed or model loaded: the launch is what this checks
    done = torchrun("--models", "rwkv4-tiny", "--tasks", "rwkv_bench_mc", "--limit", "0",
                    "--out", str(tmp_path / "run"))
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "--limit" in errors[0], done.stderr[-3000:]
    # the other rank leaves with exit status 2, not an abort from a process group left alive
    assert "terminate called" not in done.stderr and "exitcode: -6" not in done.stderr
    assert not (tmp_path / "run").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_accelerate_launch_on_lm_evals_cli_matches_one_process(tmp_path):
    """The README's `accelerate launch` one-liner, 2 CPU processes. `--cpu --num_processes 2` would start ONE
    process (accelerate's multi-CPU launcher is mpirun); `--multi_gpu` starts torchrun's, which needs no GPU."""
    import lm_eval

    import rwkv_bench.nlp  # noqa: F401
    from rwkv_bench.nlp.lm_eval_model import RWKVBenchLM

    cmd = [str(VENV_BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "rwkv_bench.nlp.lm_eval_cli", "--model", "rwkv-bench", "--model_args", "pretrained=rwkv4-tiny",
           "--tasks", "rwkv_bench_mc", "--include_path", "tasks", "--limit", "8", "--output_path", str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, env=launcher_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Building contexts for rwkv_bench_mc on rank 1" in done.stderr   # two ranks, each with its shard
    files = list(tmp_path.rglob("results_*.json"))
    assert len(files) == 1 and done.stdout.count("|rwkv_bench_mc|") == 1  # rank 0 alone writes and prints
    sharded = json.loads(files[0].read_text())["results"]["rwkv_bench_mc"]

    from rwkv_bench.nlp.tasks import include_paths, task_manager

    lm = RWKVBenchLM(pretrained="rwkv4-tiny", device="cpu")
    one = lm_eval.simple_evaluate(model=lm, tasks=["rwkv_bench_mc"], limit=8,
                                  task_manager=task_manager(["rwkv_bench_mc"], include_paths([])))
    alone = one["results"]["rwkv_bench_mc"]
    for metric in ("acc,none", "acc_norm,none", "acc_stderr,none"):
        assert sharded[metric] == pytest.approx(alone[metric], rel=1e-12), metric


# ---- the pieces, in one process ----

def test_token_counts_sum_over_ranks():
    from rwkv_bench.nlp.evaluate import sum_counts

    rank0 = [{"request_type": "loglikelihood", "requests": 3, "tokens_processed": 10, "model_time_s": 0.5}]
    rank1 = [{"request_type": "loglikelihood", "requests": 2, "tokens_processed": 7, "model_time_s": 0.25},
             {"request_type": "generate_until", "requests": 1, "tokens_processed": 4, "model_time_s": 0.1}]
    rows, wall = sum_counts([(rank0, 1.5), (rank1, 2.0)])
    assert wall == 2.0 and [r["request_type"] for r in rows] == ["loglikelihood", "generate_until"]
    assert rows[0] == {"request_type": "loglikelihood", "requests": 5, "tokens_processed": 17, "model_time_s": 0.75}


def test_hf_model_runs_on_rank_zero_alone_on_cpu():
    """lm-eval's hf model shards only with >1 GPU; on CPU every rank would run every request."""
    from rwkv_bench.distributed import Dist
    from rwkv_bench.nlp.evaluate import hf_shards

    assert not hf_shards("cpu", Dist(rank=0, world_size=2))
    assert not hf_shards("cuda", Dist())


def test_a_limit_below_the_ranks_is_refused(tmp_path):
    from rwkv_bench.distributed import Dist
    from rwkv_bench.errors import UserError
    from rwkv_bench.nlp.evaluate import prepare

    with pytest.raises(UserError, match="below the 2 ranks"):
        prepare({"models": "rwkv4-tiny", "tasks": "rwkv_bench_mc", "limit": 1}, tmp_path / "run", False,
                Dist(rank=0, world_size=2))
    assert not (tmp_path / "run").exists()
