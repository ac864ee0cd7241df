"""The serve scenario of `rwkv-bench scaling`: B sequences at context T decoded together, each with its own state
or KV cache; the capacity that fits a memory budget; the llama-batched-bench table; the bandwidth column.

The sweep runs through the installed console script on tiny presets (one child per (model, T, B), a few seconds
each) and is shared by the tests marked slow; the rest works on rows made by hand."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rwkv_bench.errors import UserError
from rwkv_bench.recording import append_rows
from rwkv_bench.scaling.capacity import capacity_batch, measured_bytes_per_sequence
from rwkv_bench.scaling.config import ScalingConfig
from rwkv_bench.scaling.report import render
from rwkv_bench.scaling.serving import analytic_state_bytes, serve_one
from rwkv_bench.scaling.serving_measure import percentile
from rwkv_bench.scaling.serving_report import BATCHED_COLUMNS, batched_rows, capacity_rows
from rwkv_bench.scaling.store import SERVING_COLUMNS, SERVING_CSV, read_serving
from rwkv_bench.specs import parse

CLI = str(Path(sys.executable).with_name("rwkv-bench"))
MODELS = "rwkv4-tiny,gptneox-tiny,mamba-tiny"


def cli(*args, timeout=300):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def serve_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serving") / "run"
    done = cli("scaling", "--out", str(out), "-m", MODELS, "--scenario", "serve", "--serve-lengths", "64",
               "--batch-sizes", "1,4", "--recurrent-max-batch", "4", "--prefill-token-budget", "128",
               "--decode-steps", "4", "--threads", "1", "--warmup", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.slow
def test_every_model_context_and_batch_is_a_row_with_its_own_prefill(serve_run):
    rows = read_serving(serve_run)
    assert list(pd.read_csv(serve_run / SERVING_CSV, nrows=0).columns) == SERVING_COLUMNS
    assert len(rows) == 6 and set(rows["status"]) == {"ok"}, rows[["model", "seq_len", "batch", "status", "error"]]
    # B x T within the prefill budget (128 tokens): B different prompts; past it, copies of one
    assert {(r.batch, r.prefill) for r in rows.itertuples()} == {(1, "distinct"), (4, "copies")}
    assert rows[rows["prefill"] == "copies"]["prefill_tokens_per_s"].isna().all()
    assert (rows["step_p90_s"] >= rows["step_median_s"]).all() and (rows["decode_tokens_per_s"] > 0).all()
    state = rows.set_index(["model", "seq_len", "batch"])["state_bytes"]
    assert state[("rwkv4-tiny", 64, 4)] == 5 * 4 * 256 * 4                 # 5 x layers x C x 4
    assert state[("gptneox-tiny", 64, 4)] == 2 * 4 * 64 * 256 * 4          # 2 x layers x T x d x 4
    assert state[("mamba-tiny", 64, 1)] == 4 * 512 * (4 + 16) * 4          # layers x d_inner x (conv + SSM)
    mamba = rows[rows["model"] == "mamba-tiny"]
    assert set(mamba["implementation"]) == {"transformers.MambaForCausalLM[torch-reference-scan]"}
    assert (rows["step_read_bytes"] > 0).all() and (rows["bandwidth_fraction"] > 0).all()
    meta = json.loads((serve_run / "meta.json").read_text())
    assert meta["machine"]["memory_bandwidth"]["copy_gbs"] > 0 and meta["machine"]["memory_budget_bytes"] > 0
    assert meta["model_info"]["gptneox-tiny"]["state_bytes"]["per_sequence"] == 2 * 4 * 64 * 256 * 4


@pytest.mark.slow
def test_the_run_has_batched_bench_and_capacity_tables_and_figures(serve_run):
    batched = pd.read_csv(serve_run / "batched.csv")
    assert list(batched.columns) == BATCHED_COLUMNS and len(batched) == 6
    assert (batched["N_KV"] == batched["B"] * (batched["PP"] + batched["TG"])).all()
    assert batched[batched["prefill"] == "copies"]["S_PP t/s"].isna().all()
    capacity = (serve_run / "capacity.md").read_text()
    assert "Sequences that fit in" in capacity and "predicted: beyond the largest B run (4)" in capacity
    summary = (serve_run / "summary.md").read_text()
    assert "## Serving many sequences" in summary and "of copy bandwidth" in summary
    assert (serve_run / "serving_throughput.png").is_file() and (serve_run / "serving_capacity.png").is_file()


@pytest.mark.slow
def test_resume_runs_only_the_serve_points_missing(serve_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(serve_run, run)
    lines = (run / SERVING_CSV).read_text().splitlines(keepends=True)
    (run / SERVING_CSV).write_text("".join(lines[:-1]))  # the last point never committed
    done = cli("scaling", "--out", str(run), "--resume", "--no-report")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count(" serve ") == 1  # one child: the missing (model, T, B)
    rows = read_serving(run)
    assert len(rows) == 6 and set(rows["status"]) == {"ok"}
    machine = json.loads((run / "meta.json").read_text())["machine"]  # the rows' fractions were computed against it
    assert machine == json.loads((serve_run / "meta.json").read_text())["machine"]


@pytest.mark.slow
@pytest.mark.parametrize("args,needle", [
    (["--batch-sizes", "1,0"], "--batch-sizes takes a comma-separated list of positive integers, got '1,0'"),
    (["--serve-lengths", "16;64"], "--serve-lengths takes a comma-separated list of positive integers"),
])
def test_a_bad_grid_is_one_line_and_exit_2(tmp_path, args, needle):
    done = cli("scaling", "--out", str(tmp_path / "run"), "--scenario", "serve", *args, timeout=60)
    err = done.stderr.strip()
    assert done.returncode == 2 and err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["", "a", "4,-1", "1,,4", "0"])
def test_batch_grids_must_be_positive_integers(text):
    with pytest.raises(UserError, match="--batch-sizes"):
        ScalingConfig(batch_sizes=text)


def test_recurrent_models_go_on_to_the_recurrent_maximum():
    c = ScalingConfig(batch_sizes="4,1,16,64", recurrent_max_batch=1024, serve_lengths="1024,8192")
    assert c.batch_grid(False) == [1, 4, 16, 64] and c.batch_grid(True) == [1, 4, 16, 64, 256, 1024]
    assert c.lengths["serve"] == [1024, 8192]
    assert ScalingConfig(recurrent_max_batch=0).batch_grid(True) == [1, 4, 16, 64]


def test_a_point_predicted_past_the_memory_limit_is_skipped_with_its_size(tmp_path):
    c = ScalingConfig(models="gptneox-tiny", memory_limit="64M")
    spec = parse("gptneox-tiny")
    assert analytic_state_bytes(spec, 32768, "float32") == 2 * 4 * 32768 * 256 * 4
    assert analytic_state_bytes(parse("rwkv4-169m"), 32768, "float32") == 5 * 12 * 768 * 4
    row = serve_one(spec, 32768, 16, "grid", c, tmp_path, None, None, None)  # 16 x 32 MiB of KV cache
    assert row["status"] == "skipped" and "exceeds --memory-limit" in row["error"]
    assert row["predicted_mem_bytes"] > 16 * row["state_bytes"] - 1
    after = serve_one(spec, 16, 64, "grid", c, tmp_path, None, None, failed_at=16)
    assert after["status"] == "skipped" and after["error"] == "not run: failed at B=16"


def serve_rows(model, family, T, state, held):
    """ok serving rows at B = 1, 4, 64 (held: B -> held bytes)."""
    return [{"model": model, "family": family, "seq_len": T, "batch": B, "role": "grid", "status": "ok",
             "prefill": "distinct" if B * T <= 16384 else "copies", "prefill_s": 0.5 * B, "steps": 8,
             "step_median_s": 0.01 * B ** 0.5, "decode_tokens_per_s": 100.0 * B ** 0.5, "held_mem_bytes": h,
             "state_bytes": state} for B, h in held.items()]


def test_capacity_from_the_held_memory_per_sequence(tmp_path):
    rows = pd.DataFrame(serve_rows("r", "rwkv", 1024, 1000, {1: 5000, 4: 8000, 64: 68000}))
    assert measured_bytes_per_sequence(rows) == (1000.0, "(held at B=64 - held at B=1) / 63")
    assert capacity_batch(10_000_000, 1000.0) == 10_000 and capacity_batch(10, None) is None
    t = pd.DataFrame(serve_rows("t", "transformer", 1024, 10 ** 6, {1: 2 * 10 ** 6, 4: 5 * 10 ** 6,
                                                                       64: 65 * 10 ** 6}))
    cap = {r["model"]: r for r in capacity_rows(pd.concat([rows, t]), budget=32 * 10 ** 6)}
    assert cap["r"]["largest B"] == 32_000 and cap["r"]["status"].startswith("predicted: beyond")
    assert cap["t"]["largest B"] == 32 and cap["t"]["status"].startswith("within the grid")
    assert cap["t"]["decode tok/s"] == "200 at B=4"  # the largest B run that fits


def test_the_report_of_a_serve_only_run(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({
        "kind": "scaling", "device": "cpu", "dtype": "float32",
        "machine": {"memory_budget_bytes": 8 * 2 ** 30, "memory_budget_source": "--memory-limit",
                    "memory_bandwidth": {"copy_gbs": 10.0, "threads": 1}}}))
    rows = serve_rows("r", "rwkv", 32768, 184320, {1: 200000, 4: 760000, 64: 11_800_000})
    rows += serve_rows("t", "transformer", 32768, 2 ** 30, {1: 2 ** 30, 4: 4 * 2 ** 30})
    for r in rows:
        r.update(step_read_bytes=1e8, bandwidth_gbs=5.0, bandwidth_fraction=0.5)
    append_rows(tmp_path / SERVING_CSV, rows, SERVING_COLUMNS)
    written = {p.name for p in render(tmp_path)}
    assert {"batched.md", "batched.csv", "capacity.md", "summary.md", "serving_throughput.png"} <= written
    summary = (tmp_path / "summary.md").read_text()
    assert "Sequences that fit in 8 GiB" in (tmp_path / "capacity.md").read_text()
    assert "**r** fits" in summary and "as many sequences as **t**" in summary
    # neither largest B ran (r: tens of thousands, t: 8 at 1 GiB each): each at the largest B it ran, said so
    assert ("aggregate decode tokens/s 4x (800 at B=64, the largest B run (not B=46,6" in summary
            and "against 200 at B=4, the largest B run (not B=8))" in summary), summary
    assert "aggregate decode tokens/s at B=64 is 8x that at B=1" in summary
    assert [r["S_PP t/s"] for r in batched_rows(read_serving(tmp_path)) if r["model"] == "t"] == [None, None]


def test_percentile_is_linear_between_ranks():
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == pytest.approx(9.1)
    assert percentile([3.0], 90) == 3.0


BLAS_POOL_PROBE = """
import sys, psutil, torch
from rwkv_bench import allocator
allocator.keep_freed_memory()
torch.set_num_threads(1)
w = torch.randn(3072, 768)
torch.nn.functional.linear(torch.randn(16, 768), w)
allocator.trim()
rss = lambda: psutil.Process().memory_info().rss
before = rss()
x = torch.randn(1024, 768)  # a batched step's GEMM: 1,024 rows
for _ in range(3):
    y = torch.nn.functional.linear(x, w)
del x, y
allocator.trim() if sys.argv[1] == "trim" else allocator._LIBC.malloc_trim(0)
print(rss() - before)
"""


def held_after_gemms(how: str) -> int:
    out = subprocess.run([sys.executable, "-c", BLAS_POOL_PROBE, how], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_trim_also_empties_the_blas_buffer_pool_a_batched_step_fills():
    """What a batched step leaves held must be the states alone: MKL keeps the buffers its GEMMs pack 1,024
    rows into (about 5 MiB here, bounded per process), which malloc_trim does not reach and would read as
    memory per sequence."""
    import torch

    assert held_after_gemms("trim") < 2 ** 20
    if torch.backends.mkl.is_available():
        assert held_after_gemms("malloc_trim") > 2 * 2 ** 20


def test_the_plan_estimates_the_serve_points_and_leaves_out_those_predicted_past_memory():
    from rwkv_bench.scaling.estimate import Size, batch_step_s, serve_cost_s
    from rwkv_bench.scaling.plan import plan_text, serve_cost_total_s

    rwkv, neox = Size(12, 768), Size(12, 768, transformer=True)
    # rwkv4-169m on 1 thread of the Xeon here: 65 ms a step at B = 1, 3.4 s at B = 1,024 (serving-169m)
    assert 0.04 < batch_step_s(rwkv, 1024, 1) < 0.1 and 2 < batch_step_s(rwkv, 1024, 1024) < 5
    assert batch_step_s(neox, 8192, 4) > 4 * batch_step_s(neox, 1024, 4) > 0  # each row reads its KV cache
    budgeted = serve_cost_s(32768, 1, neox, True, 8, time_budget_s=150)
    assert budgeted < serve_cost_s(32768, 1, neox, True, 8, time_budget_s=10 ** 6)  # a budget cuts a point off
    def config(memory_limit):
        return ScalingConfig(models="rwkv4-tiny,gptneox-tiny", scenario="serve", serve_lengths="32768",
                             batch_sizes="1,4", recurrent_max_batch=4, memory_limit=memory_limit)

    c = config("256M")
    sizes = {"rwkv4-tiny": Size(), "gptneox-tiny": Size(transformer=True)}
    tiny_rwkv = sum(serve_cost_s(32768, B, Size(), B == 1, c.decode_steps, c.time_budget) for B in (1, 4))
    neox_b1 = serve_cost_s(32768, 1, Size(transformer=True), True, c.decode_steps, c.time_budget)
    # gptneox-tiny at 32,768: 256 MiB of KV cache a sequence, and a prefill's 448 MiB of activations
    assert serve_cost_total_s(c, sizes) == pytest.approx(tiny_rwkv)
    assert serve_cost_total_s(config("900M"), sizes) == pytest.approx(tiny_rwkv + neox_b1)  # B = 4 needs 1 GiB
    assert "rough estimate" in plan_text(c, [], {}, sizes)
