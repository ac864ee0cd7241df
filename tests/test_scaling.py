"""`rwkv-bench scaling` on tiny configs: the CSV contract, resume after a kill, oom and time-budget cut-offs,
the exponent fit, and `report` rebuilding the tables from the stored CSVs.

Every point runs in a fresh child process (a few seconds each: interpreter, torch, model), so the sweeps
here are kept to a handful of children (one per (model, length)) and shared through a module fixture; tests
that run a sweep are marked slow. The options' checks, the plan, the noise rule and the kernel check have
files of their own (test_scaling_*.py).
"""
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from rwkv_bench.cli import main
from rwkv_bench.recording import read_meta
from rwkv_bench.scaling.points import geometric_grid
from rwkv_bench.scaling.store import COLUMNS
from rwkv_bench.scaling.sweep import run_sweep
from rwkv_bench.scaling.table1 import exponent_rows, fit_loglog

REQUIRED = ["model", "family", "scenario", "seq_len", "status", "latency_s", "cumulative_s", "tokens_per_s",
            "peak_mem_bytes", "kv_cache"]
FIGURES = ["prefill_latency", "peak_memory", "decode_context", "generate_cumulative", "generate_per_token"]


def sweep(out: Path, **options) -> Path:
    given = dict(repeats=1, warmup=1, prompt_len=4, **options)
    return run_sweep(given, out=str(out))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scaling") / "run"
    return sweep(out, models="rwkv4-tiny,gptneox-tiny", scenario="prefill,decode,generate", min_len=8, max_len=128,
                 points=2, gen_max_len=128, decode_steps=24, decode_ref_len=32, threads=1)
    # one thread: on a shared 2-core machine two threads wait on each other's time slices, so a step costs
    # whatever the neighbours leave, which would make the Figure 7 cross-check below a test of the neighbours


@pytest.mark.slow
def test_points_csv_follows_the_contract(tiny_run):
    points = pd.read_csv(tiny_run / "points.csv")
    assert set(REQUIRED) <= set(points.columns) and list(points.columns) == COLUMNS
    assert len(points) == 2 * 3 * 2 and (points["status"] == "ok").all(), points[["model", "status", "error"]]
    assert set(points["family"]) == {"rwkv", "transformer"}
    by_model = points.groupby("model")["kv_cache"].agg(set)
    assert by_model["rwkv4-tiny"] == {"n.a."} and by_model["gptneox-tiny"] <= {"true", True}
    prefill = points[points["scenario"] == "prefill"]
    assert (prefill["latency_s"] > 0).all() and prefill["cumulative_s"].isna().all()
    assert (prefill["tokens_per_s"] - prefill["seq_len"] / prefill["latency_s"]).abs().max() < 1e-6 * prefill["tokens_per_s"].max()
    generate = points[points["scenario"] == "generate"]
    assert (generate["cumulative_s"] > 0).all()
    decode = points[points["scenario"] == "decode"]
    assert (decode["repeats"] == 24).all() and (decode["prompt_len"] == decode["seq_len"]).all()
    assert (decode["latency_min_s"] <= decode["latency_s"]).all() and (decode["latency_s"] <= decode["latency_max_s"]).all()
    assert (decode["latency_mean_s"] > 0).all() and (decode["prompt_s"] > 0).all()
    assert (decode["ref_seq_len"] == 32).all() and (decode["ref_steps"] >= 1).all() and (decode["ref_latency_s"] > 0).all()
    tf = points[points["family"] == "transformer"]
    assert (tf["predicted_mem_bytes"] > 0).all() and points[points["family"] == "rwkv"]["predicted_mem_bytes"].isna().all()
    assert (generate["peak_mem_bytes"] >= 0).all() and points["mem_method"].str.startswith("cpu:").all()
    assert points["random_weights"].astype(str).str.lower().eq("true").all()


@pytest.mark.slow
def test_generation_has_one_row_per_position(tiny_run):
    tokens = pd.read_csv(tiny_run / "generate_tokens.csv")
    for (model, T), group in tokens.groupby(["model", "seq_len"]):
        # position = tokens generated so far (1..T), so cumulative_s at position p is the time for p tokens
        assert sorted(group["position"]) == list(range(1, T + 1)), (model, T)
        assert (group["latency_s"] > 0).all()
        points = pd.read_csv(tiny_run / "points.csv")
        cumulative = points[(points.model == model) & (points.seq_len == T) & (points.scenario == "generate")]
        assert math.isclose(group["latency_s"].sum(), float(cumulative["cumulative_s"].iloc[0]), rel_tol=1e-6)


@pytest.mark.slow
def test_run_directory_has_metadata_table1_and_figures(tiny_run):
    meta = read_meta(tiny_run)
    assert meta["kind"] == "scaling" and meta["completed"] is True
    for key in ("command", "versions", "device", "dtype", "git_revision", "date_utc"):
        assert meta.get(key), key
    table1 = (tiny_run / "table1.md").read_text()
    assert "| RWKV (ours) | O(T d) | O(d) |" in table1 and "| Transformer | O(T^2 d) | O(T^2 + T d) |" in table1
    assert "rwkv4-tiny" in table1 and "gptneox-tiny" in table1
    for name in FIGURES:
        for ext in (".png", ".svg"):
            assert (tiny_run / f"{name}{ext}").stat().st_size > 1000, name + ext
    assert "random" in (tiny_run / "summary.md").read_text().lower()
    index = (tiny_run / "index.md").read_text()  # the sweep writes it, as `rwkv-bench report` does
    assert "table1.md" in index and "generate_cumulative.png" in index


@pytest.mark.slow
def test_report_rebuilds_the_same_tables_from_the_csvs(tiny_run, capsys):
    before = {name: (tiny_run / name).read_text() for name in ("table1.md", "summary.md")}
    for path in tiny_run.iterdir():
        if path.suffix in (".md", ".png", ".svg"):
            path.unlink()
    assert main(["report", str(tiny_run)]) == 0
    for name, text in before.items():
        assert (tiny_run / name).read_text() == text, name
    index = (tiny_run / "index.md").read_text()
    assert "table1.md" in index and "prefill_latency.png" in index
    assert all((tiny_run / f"{name}.png").is_file() for name in FIGURES)


def test_report_without_arguments_leaves_the_committed_reference_runs_alone(tmp_path):
    from rwkv_bench.report.build import find_run_dirs

    for run in ("scaling/run1", "reference/scaling-100k", "nlp/run2", "scratch"):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "meta.json").write_text('{"kind": "scaling"}' if run != "scratch" else "{}")
    assert find_run_dirs(tmp_path) == [tmp_path / "nlp/run2", tmp_path / "scaling/run1"]


@pytest.mark.slow
def test_resume_after_the_sweep_is_killed(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rwkv_bench", "scaling", "--models", "rwkv4-tiny", "--scenario", "prefill",
           "--min-len", "8", "--max-len", "64", "--points", "3", "--repeats", "1", "--out", str(out), "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    csv = out / "points.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if csv.is_file() and len(csv.read_text().splitlines()) >= 2:   # header + one point
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = pd.read_csv(csv)
    assert 1 <= len(first) < 3
    with csv.open("a") as f:                       # a row cut in half by the kill
        f.write("rwkv4-tiny,rwkv,rwkv_bench")
    run_sweep({"repeats": 2}, out=str(out), resume=True, report=False)
    points = pd.read_csv(csv)
    assert sorted(points["seq_len"]) == [8, 23, 64] and (points["status"] == "ok").all()
    pd.testing.assert_frame_equal(points.iloc[:len(first)], first)   # finished points were kept, not re-run
    meta = read_meta(out)
    (resumed,) = meta["resumes"]                   # the resume is on record, with what it changed
    assert resumed["changed_options"] == {"repeats": 2} and meta["options"]["repeats"] == 2
    assert {"date_utc", "command", "git_revision"} <= set(resumed)


@pytest.mark.slow
def test_a_point_over_the_memory_limit_is_oom_and_the_sweep_goes_on(tmp_path):
    # T = 16, 16,384 and 16,777,216: a prefill over 16,384 tokens needs tens of MiB above the loaded model (the
    # chunk's activations), far over 8 MiB; the longest is then skipped without running
    run = sweep(tmp_path / "run", models="rwkv4-tiny", scenario="prefill,generate", min_len=16,
                max_len=16 * 1024 ** 2, points=3, gen_max_len=16, memory_limit="8M")
    points = pd.read_csv(run / "points.csv").set_index(["scenario", "seq_len"])
    assert points.loc[("prefill", 16), "status"] == "ok"
    assert points.loc[("prefill", 16384), "status"] == "oom", points.loc[("prefill", 16384), "error"]
    assert (points["status"] == "oom").sum() == 1
    longest = points.loc[("prefill", 16 * 1024 ** 2)]
    assert longest["status"] == "skipped" and longest["error"] == "not run: oom at seq_len 16384"
    assert points.loc[("generate", 16), "status"] == "ok"           # the other scenario still ran


@pytest.mark.slow
def test_the_time_budget_cuts_a_model_off(tmp_path):
    # 2 tokens fit any budget; 2,000,000 recurrent steps (milliseconds each) never fit in 3 s. The 2,000 in
    # between hardly do, so the longest is most likely skipped without running; on a fast machine it runs and
    # times out itself. What is checked is the cut-off rule.
    run = sweep(tmp_path / "run", models="rwkv4-tiny", scenario="generate", min_len=2, max_len=2000000, points=3,
                gen_max_len=2000000, time_budget=3.0)
    points = pd.read_csv(run / "points.csv").sort_values("seq_len")
    status = list(points["status"])
    assert status[0] == "ok" and "timeout" in status, status
    first_timeout = status.index("timeout")
    assert all(s == "skipped" for s in status[first_timeout + 1:]), status
    last = points.iloc[-1]   # the longest timed out itself, or was skipped after the one between did
    assert last["status"] == "timeout" or last["error"].startswith("not run: timeout"), last["error"]


def test_loglog_fit_recovers_known_exponents():
    T = [1000, 2000, 4000, 8000, 16000]
    for k in (0.0, 1.0, 2.0, 1.5):
        fit = fit_loglog(T, [3e-4 * t ** k for t in T])
        assert abs(fit.slope - k) < 1e-9 and (k == 0 or fit.r2 > 1 - 1e-12)
    noisy = fit_loglog(T, [2e-6 * t ** 2 * (1 + 0.03 * (-1) ** i) for i, t in enumerate(T)])
    assert abs(noisy.slope - 2) < 0.05 and noisy.r2 > 0.99
    assert fit_loglog([100], [1.0]) is None and fit_loglog([100, 100], [1.0, 2.0]) is None
    rows = [dict(model="m", family="rwkv", scenario="prefill", seq_len=t, status="ok", latency_s=1e-4 * t,
                 cumulative_s=None, peak_mem_bytes=5e6, implementation="x", kv_cache="n.a.", random_weights=True)
            for t in [16, *T]]
    (row,) = exponent_rows(pd.DataFrame(rows))
    assert abs(row["time_fit"].slope - 1) < 1e-9 and abs(row["mem_fit"].slope) < 1e-9
    assert row["time_fit"].n == 4 and math.isclose(row["time_fit"].x_min, 2000)   # only the longest lengths


def test_geometric_grid_ends_on_both_limits():
    grid = geometric_grid(16, 100000)
    assert grid[0] == 16 and grid[-1] == 100000 and grid == sorted(set(grid))
    assert all(1.5 < b / a < 2.5 for a, b in zip(grid, grid[1:]))


@pytest.mark.parametrize("args,needle", [
    (["--min-len", "100", "--max-len", "10"], "larger than --max-len"),
    (["--min-len", "0"], "positive"),
    (["--max-len", "0"], "positive"),
    (["--models", "no-such-model"], "unknown model spec"),
    (["--models", "./missing/dir"], "no such file"),
    (["--scenario", "decoding"], "unknown scenario"),
    (["--decode-steps", "0"], "--decode-steps"),
    (["--memory-limit", "lots"], "--memory-limit"),
])
def test_bad_flags_give_one_line_and_exit_2(tmp_path, capsys, args, needle):
    assert main(["scaling", "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not (tmp_path / "run" / "points.csv").exists()


def test_first_and_last_tenth_of_a_generation_run():
    import pandas as pd

    from rwkv_bench.scaling.summary import first_and_last_tenth

    rows = pd.DataFrame({"position": range(1, 101), "n_positions": 1,
                         "latency_s": [1.0] * 10 + [5.0] * 80 + [2.0] * 10})
    assert first_and_last_tenth(rows) == (1.0, 2.0, 100)
    # binned rows (position = a bin's last position) are weighted by the positions they hold
    binned = pd.DataFrame({"position": [10, 90, 100], "n_positions": [10, 80, 10], "latency_s": [1.0, 5.0, 3.0]})
    assert first_and_last_tenth(binned) == (1.0, 3.0, 100)
    assert first_and_last_tenth(binned.iloc[:0]) is None


@pytest.mark.slow
def test_integrated_figure7_agrees_with_tokens_generated_one_by_one(tiny_run):
    from rwkv_bench.scaling.store import load_run

    # The goal is 10%. Across child processes a shared 2-core machine moves ms/token by 10-30%, so the
    # method is checked where drift hits both alike: the child of the longest generate length (T = 128) took
    # decode samples at the grid contexts (8, 128) between its own generation steps. 15%, not 10: 48 samples
    # of a few ms each on a machine whose steps jitter by 20%.
    points, _, _ = load_run(tiny_run)
    gen = points[points["scenario"] == "generate"].set_index(["model", "seq_len"])
    for model in ("rwkv4-tiny", "gptneox-tiny"):
        row = gen.loc[(model, 128)]
        assert row["check_samples"] == 2 * 24  # 24 decode steps at each of the 2 grid contexts
        ratio = row["check_integrated_s"] / row["check_direct_s"]
        assert abs(ratio - 1) < 0.15, (model, ratio, os.getloadavg())
    assert gen.loc[("rwkv4-tiny", 8), ["check_direct_s", "check_integrated_s"]].isna().all()  # longest only
    summary = (tiny_run / "summary.md").read_text()
    assert "## Figure 7: integrated vs generated one by one" in summary and "In one process (the method's check)" in summary
    # the decode grid ends where the direct generation does: Table 1 fits the direct runs, and adds the paper's
    # no-cache protocol integrated from the prefill samples
    table1 = (tiny_run / "table1.md").read_text()
    assert "integrated from prefill samples" in table1 and "integrated from decode samples" not in table1


def test_integration_of_per_token_latency():
    from rwkv_bench.scaling.integrate import cumulative, curve

    flat = pd.DataFrame({"seq_len": [16, 1000, 100000], "latency": [0.01, 0.01, 0.01]})
    assert cumulative(flat, [16, 500, 100000]) == pytest.approx([0.16, 5.0, 1000.0])
    # a power law c(t) = 1e-6 t between the samples integrates exactly: 1e-6 T^2 / 2 (plus the flat start)
    linear = pd.DataFrame({"seq_len": [10, 100, 1000, 10000], "latency": [1e-5, 1e-4, 1e-3, 1e-2]})
    (total,) = cumulative(linear, [10000])
    assert total == pytest.approx(1e-6 * (10000 ** 2 - 10 ** 2) / 2 + 10 * 1e-5, rel=1e-9)
    quadratic = pd.DataFrame({"seq_len": [100, 400, 1600], "latency": [1e-8 * t ** 2 for t in (100, 400, 1600)]})
    (total,) = cumulative(quadratic, [1600])
    assert total == pytest.approx(1e-8 * (1600 ** 3 - 100 ** 3) / 3 + 100 * 1e-4, rel=1e-9)
    dense = curve(linear)
    assert dense["seq_len"].iloc[-1] == 10000 and dense["cumulative_s"].is_monotonic_increasing


@pytest.mark.slow
def test_kv_cache_memory_matches_the_analytic_size_and_a_point_that_cannot_fit_is_not_run(tmp_path):
    # decode at T = 16,384: the KV cache (2 x 4 layers x T x 256 x 4 bytes = 128 MiB) is most of what a step
    # needs; at T = 131,072 the prediction (1 GiB of KV cache alone) is over --memory-limit: skipped, not run
    run = sweep(tmp_path / "run", models="gptneox-tiny", scenario="decode", min_len=16384, max_len=131072,
                points=2, decode_steps=4, decode_ref_len=0, memory_limit="1G")
    points = pd.read_csv(run / "points.csv").set_index("seq_len")
    ok = points.loc[16384]
    assert ok["status"] == "ok", ok["error"]
    assert ok["kv_cache_bytes"] == 2 * 4 * 16384 * 256 * 4
    # held between steps: the cache itself; the peak inside a step adds its transients
    assert abs(ok["held_mem_bytes"] / ok["kv_cache_bytes"] - 1) < 0.20, ok["held_mem_bytes"] / 2 ** 20
    assert ok["peak_mem_bytes"] >= ok["held_mem_bytes"]
    big = points.loc[131072]
    assert big["status"] == "skipped" and "predicted memory" in big["error"] and "--memory-limit" in big["error"]
    assert big["predicted_mem_bytes"] > 2 ** 30 and big["kv_cache_bytes"] == 2 ** 30
    assert pd.isna(big["latency_s"])
    assert "## KV-cache memory check" in (run / "summary.md").read_text()


def test_a_points_csv_begun_by_an_older_version_is_widened_before_appending(tmp_path):
    from rwkv_bench.recording import append_rows, read_rows

    # a run resumed after an upgrade that added columns: the old rows keep their values under the new header
    path = tmp_path / "points.csv"
    old = [c for c in COLUMNS if not c.startswith("check_")]
    append_rows(path, [{"model": "m", "scenario": "prefill", "seq_len": 8, "status": "ok", "latency_s": 0.5}], old)
    append_rows(path, [{"model": "m", "scenario": "generate", "seq_len": 16, "status": "ok",
                        "check_direct_s": 1.25}], COLUMNS)
    rows = read_rows(path)
    assert list(rows.columns) == COLUMNS and len(rows) == 2
    assert rows.loc[0, "latency_s"] == 0.5 and pd.isna(rows.loc[0, "check_direct_s"])
    assert rows.loc[1, "check_direct_s"] == 1.25


def test_the_plan_estimate_scales_with_the_model_and_leaves_out_points_that_will_not_run():
    from rwkv_bench.scaling.config import ScalingConfig
    from rwkv_bench.scaling.estimate import model_size, prefill_s
    from rwkv_bench.scaling.predict import transformer_dims
    from rwkv_bench.scaling.plan import point_cost_s

    c = ScalingConfig(models="rwkv4-tiny,rwkv4-169m,gptneox-169m", min_len=1000, max_len=1000000, ratio=10,
                      memory_limit="4G", time_budget=100000)
    dims = {s.text: transformer_dims(s) for s in c.specs}
    sizes = {s.text: model_size(s, dims[s.text]) for s in c.specs}

    def cost(scenario, T, model):
        return point_cost_s((scenario, T, model), c, sizes, dims)

    # 12 x 768 against 4 x 256: 27x the prefill arithmetic; a decode step reads 7.7x the parameters
    assert cost("prefill", 1000000, "rwkv4-169m") / cost("prefill", 1000000, "rwkv4-tiny") == pytest.approx(27, rel=0.05)
    assert cost("decode", 1000, "rwkv4-169m") / cost("decode", 1000, "rwkv4-tiny") == pytest.approx(7.7, rel=0.05)
    # attention: a transformer's prefill grows faster than linearly, an RWKV's does not
    assert prefill_s(sizes["gptneox-169m"], 100000) > 15 * prefill_s(sizes["gptneox-169m"], 10000)
    assert prefill_s(sizes["rwkv4-169m"], 100000) == pytest.approx(10 * prefill_s(sizes["rwkv4-169m"], 10000))
    # the KV cache at 100k (6.9 GiB) is over --memory-limit 4G: skipped, so it costs nothing
    assert cost("prefill", 100000, "gptneox-169m") == 0 and cost("prefill", 10000, "gptneox-169m") > 0
    # a point is cut off at its time budget
    short = dataclasses.replace(c, time_budget=60.0)
    assert point_cost_s(("prefill", 1000000, "rwkv4-169m"), short, sizes, dims) <= 60 + 4


@pytest.mark.slow
def test_the_papers_no_cache_protocol_gives_the_cached_logits_and_runs_in_a_sweep(tmp_path):
    import torch

    from rwkv_bench.scaling.measure import greedy, random_ids
    from rwkv_bench.backends import resolve

    # the same weights with and without transformers' KV cache: a step that re-runs the whole sequence must
    # predict what the cached step predicts (fp32, different summation order: 1e-4), from a tensor of ids
    cached, rerun = (resolve("gptneox-tiny", device="cpu", dtype=torch.float32, kv_cache=kv, seed=0)
                     for kv in (True, False))
    ids = random_ids(20, 1000, 0)
    (a, cache_a), (b, cache_b) = cached.start(ids), rerun.start(ids)
    for _ in range(3):
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
        token = greedy(a)
        (a, cache_a), (b, cache_b) = cached.step(token, cache_a), rerun.step(token, cache_b)
    assert cache_b[:20] == ids.tolist() and len(cache_b) == 23  # the no-cache "cache" is the sequence itself
    run = sweep(tmp_path / "run", models="gptneox-tiny", scenario="decode,generate", min_len=16, max_len=16,
                gen_max_len=16, decode_steps=4, decode_ref_len=0, kv_cache=False, threads=1)
    points = pd.read_csv(run / "points.csv")
    assert (points["status"] == "ok").all(), points["error"].tolist()
    assert set(points["kv_cache"].astype(str).str.lower()) == {"false"}
    assert pd.isna(points["kv_cache_bytes"]).all()  # no cache, no KV-cache prediction
