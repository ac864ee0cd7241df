"""The uncheatable eval under torchrun (2 CPU ranks, gloo): the same files as one process, a killed rank
resumed, rank 0's errors in one line; and the pieces (sharding, part files, rank helpers) without torchrun."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rwkv_bench import distributed
from rwkv_bench.recording import read_meta
from rwkv_bench.uncheatable import evaluate, store
from rwkv_bench.uncheatable.store import read_token_logprobs
from rwkv_bench.uncheatable.texts import Paper

BIN = Path(sys.executable).parent
TORCHRUN, CLI = BIN / "torchrun", BIN / "rwkv-bench"
DEV = Path(__file__).resolve().parent / "fixtures" / "uncheatable" / "dev3.json"
MODELS = "rwkv4-tiny,llama-tiny"                   # our RWKV-4 and a transformers model, both tiny and random
EXACT = ["model", "paper_id", "text_source", "tokens", "bytes", "chars", "random_weights", "implementation"]
needs_torchrun = pytest.mark.skipif(not (TORCHRUN.exists() and CLI.exists()),
                                    reason="needs torchrun and the rwkv-bench console script beside python")


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory):
    """6 texts of 300..785 characters from 3 recent arXiv papers: unequal, so the deal by length matters."""
    papers = json.loads(DEV.read_text())
    texts = [papers[i % 3][(i // 3) * 300:(i // 3) * 300 + 300 + 97 * i] for i in range(6)]
    path = tmp_path_factory.mktemp("texts") / "tiny6.json"
    path.write_text(json.dumps(texts))
    return path


def options(texts_file) -> list[str]:
    return ["--papers-file", str(texts_file), "--models", MODELS, "--min-chars", "100", "--chars", "0",
            "--bootstrap", "200", "--no-progress"]


@pytest.fixture(scope="module")
def single(texts_file, tmp_path_factory):
    """The reference: one process, no torchrun (in this process, to save a start-up)."""
    out = tmp_path_factory.mktemp("single") / "run"
    return evaluate.run(dict(papers_file=texts_file, models=MODELS, min_chars=100, chars=0, bootstrap=200,
                             progress=False), out=out)


def launch(args: list[str], nproc: int = 2, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BENCH_TEST_")}
    environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **env)
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", str(nproc), "--no-python", str(CLI), "uncheatable",
           *args]
    return subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=900)


def our_lines(stderr: str) -> list[str]:
    """stderr without torchrun's own log lines (they start with a level letter and a date: W1130 08:25:12...)."""
    import re

    return [line for line in stderr.splitlines() if line.strip() and not re.match(r"[IWEF]\d{4} ", line)]


def assert_same_results(a: Path, b: Path) -> None:
    """The same per_paper.csv rows in the same order (bits per byte within 1e-6: thread counts differ) and
    the same per-token log-probabilities."""
    ra, rb = (store.read_per_paper(d / "per_paper.csv") for d in (a, b))
    pd.testing.assert_frame_equal(ra[EXACT], rb[EXACT])
    np.testing.assert_allclose(ra["bits_per_byte"], rb["bits_per_byte"], rtol=0, atol=1e-6)
    ta, tb = read_token_logprobs(a), read_token_logprobs(b)
    assert list(ta) == list(tb) == MODELS.split(",")
    for model in ta:
        assert [pid for pid, _ in ta[model]] == [pid for pid, _ in tb[model]]
        for (_, x), (_, y) in zip(ta[model], tb[model]):
            assert x.dtype == np.float32 and np.allclose(x, y, rtol=0, atol=1e-4)


# ---- torchrun, 2 processes ----

@needs_torchrun
@pytest.mark.slow
def test_two_ranks_write_what_one_process_writes(single, texts_file, tmp_path):
    out = tmp_path / "run"
    done = launch([*options(texts_file), "--out", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {p.name for p in single.iterdir()}    # no part files left
    assert_same_results(single, out)
    assert pd.read_csv(out / "summary.csv")["papers"].tolist() == [6, 6]
    meta = read_meta(out)
    assert meta["completed"] is True and meta["distributed"]["world_size"] == 2
    assert meta["distributed"]["backend"] == "gloo"
    share = max(1, distributed.usable_cores() // 2)
    for model in MODELS.split(","):
        ranks = meta["models"][model]["ranks"]
        assert [r["rank"] for r in ranks] == [0, 1] and [r["papers"] for r in ranks] == [3, 3]
        assert all(r["torch_threads"] == share for r in ranks)
    assert "results: " in done.stdout


@needs_torchrun
@pytest.mark.slow
def test_a_killed_rank_fails_the_launch_and_resume_completes_it(single, texts_file, tmp_path):
    out = tmp_path / "run"
    killed = launch([*options(texts_file), "--out", str(out)], RWKV_BENCH_TEST_DIE_AFTER="2")
    assert killed.returncode != 0
    ours = [line for line in our_lines(killed.stderr) if "rwkv4-tiny has random weights" not in line]
    assert ours[0] == "rank 1: killed by RWKV_BENCH_TEST_DIE_AFTER=2 (a test of --resume)", killed.stderr
    assert "rwkv_bench/" not in killed.stderr            # no traceback from our code: torchrun reports the rest
    assert (out / "per_paper.rank1.csv").is_file() and not (out / "per_paper.csv").exists()
    assert len(store.read_per_paper(out / "per_paper.rank1.csv")) == 2
    assert not read_meta(out).get("completed")
    resumed = launch(["--resume", "--out", str(out), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list(out.glob("per_paper.rank*.csv")) and not (out / "token_logprobs").exists()
    assert_same_results(single, out)
    meta = read_meta(out)
    assert meta["completed"] is True and len(meta["resumes"]) == 1


@needs_torchrun
@pytest.mark.slow
def test_an_error_on_rank_0_fails_the_launch_in_one_line(texts_file, tmp_path):
    done = launch([*options(texts_file), "--chars", "-1", "--out", str(tmp_path / "run")])
    assert done.returncode != 0
    errors = [line for line in our_lines(done.stderr) if line.startswith("error:")]
    assert errors == ["error: --chars must be positive, or 0 to keep whole texts, got -1"], done.stderr
    assert "rwkv_bench/" not in done.stderr and not (tmp_path / "run").exists()


# ---- the pieces, in this process ----

def test_rank_from_torchrun_environment():
    d = distributed.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (d.rank, d.world_size, d.local_rank, d.local_world_size, d.enabled, d.is_main) == (3, 4, 1, 2, True, False)
    alone = distributed.from_env({})
    assert (alone.rank, alone.world_size, alone.enabled, alone.is_main) == (0, 1, False, True)
    assert distributed.cpu_thread_share(d) == max(1, distributed.usable_cores() // 2)
    assert distributed.cpu_thread_share(distributed.Dist(local_world_size=10 ** 6)) == 1
    assert distributed.device_for("cpu", d) == "cpu"
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        distributed.from_env({"WORLD_SIZE": "two"})


def test_single_process_helpers_are_no_ops():
    alone = distributed.init()
    assert not alone.enabled
    assert distributed.gather_objects({"a": 1}, alone) == [{"a": 1}]
    assert distributed.all_gather_objects(2, alone) == [2]
    assert distributed.broadcast_object("x", alone) == "x"
    assert distributed.rank_zero_first(lambda: 42, alone) == 42
    with distributed.rank_zero_only(alone) as me:
        assert me
    distributed.barrier(alone)


def test_deal_balances_characters_and_keeps_text_order():
    papers = [Paper(str(i), "x" * n) for i, n in enumerate([100, 900, 300, 300, 500, 400, 200])]
    shares = evaluate.deal(papers, 3)
    assert sorted(p.paper_id for s in shares for p in s) == sorted(p.paper_id for p in papers)
    for share in shares:
        assert [int(p.paper_id) for p in share] == sorted(int(p.paper_id) for p in share)
    loads = [sum(len(p.text) for p in s) for s in shares]
    assert max(loads) - min(loads) <= 100
    assert evaluate.deal(papers, 3) == shares                          # the same on every rank
    assert evaluate.deal(papers[:1], 2)[1] == []                       # fewer papers than ranks
    assert evaluate.deal(papers, 1) == [papers]


def test_parts_merge_in_single_process_order_and_a_single_process_resumes_them(single, tmp_path):
    """A run left as part files of two ranks (one row cut short by a kill) is resumed without torchrun."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(single, run)
    lines = (run / "per_paper.csv").read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    (run / "per_paper.csv").unlink()
    (run / "token_logprobs.npz").unlink()
    (run / "per_paper.rank0.csv").write_text(header + rows[7] + rows[0] + rows[2][:15])    # cut last line
    (run / "per_paper.rank1.csv").write_text(header + rows[3] + rows[1])
    meta = read_meta(run)
    assert store.done_pairs(run) == {tuple(r.split(",")[:2]) for r in (rows[7], rows[0], rows[3], rows[1])}
    evaluate.run({"progress": False}, out=run, resume=True)
    assert not list(run.glob("per_paper.rank*.csv"))
    merged = (run / "per_paper.csv").read_text().splitlines(keepends=True)
    assert merged[0] == header and [r.split(",")[:2] for r in merged[1:]] == [r.split(",")[:2] for r in rows]
    for i in (0, 1, 3, 7):                                            # rows kept exactly as written
        assert rows[i] in merged
    assert read_meta(run)["date_utc"] == meta["date_utc"]
    # the 4 rows kept had no per-token file (deleted above): the npz holds the 8 scored again
    assert sum(len(v) for v in read_token_logprobs(run).values()) == 8
