"""`rwkv-bench scaling` on tiny configs: the CSV contract, resume after a kill, oom and time-budget cut-offs,
the exponent fit, and `report` rebuilding the tables from the stored CSVs.

Every point runs in a fresh child process (a few seconds each: interpreter, torch, model), so the sweeps
here are kept to a handful of points and shared through module fixtures.
"""
import json
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
from rwkv_bench.scaling.points import COLUMNS, geometric_grid
from rwkv_bench.scaling.sweep import run_sweep
from rwkv_bench.scaling.table1 import exponent_rows, fit_loglog

REQUIRED = ["model", "family", "scenario", "seq_len", "status", "latency_s", "cumulative_s", "tokens_per_s",
            "peak_mem_bytes", "kv_cache"]
FIGURES = ["prefill_latency", "peak_memory", "generate_cumulative", "generate_per_token"]


def sweep(out: Path, **options) -> Path:
    given = dict(repeats=1, warmup=1, prompt_len=4, **options)
    return run_sweep(given, out=str(out))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scaling") / "run"
    return sweep(out, models="rwkv4-tiny,gptneox-tiny", scenario="prefill,generate", min_len=8, max_len=16,
                 points=2, gen_max_len=16)


def test_points_csv_follows_the_contract(tiny_run):
    points = pd.read_csv(tiny_run / "points.csv")
    assert set(REQUIRED) <= set(points.columns) and list(points.columns) == COLUMNS
    assert len(points) == 2 * 2 * 2 and (points["status"] == "ok").all(), points[["model", "status", "error"]]
    assert set(points["family"]) == {"rwkv", "transformer"}
    by_model = points.groupby("model")["kv_cache"].agg(set)
    assert by_model["rwkv4-tiny"] == {"n.a."} and by_model["gptneox-tiny"] <= {"true", True}
    prefill = points[points["scenario"] == "prefill"]
    assert (prefill["latency_s"] > 0).all() and prefill["cumulative_s"].isna().all()
    assert (prefill["tokens_per_s"] - prefill["seq_len"] / prefill["latency_s"]).abs().max() < 1e-6 * prefill["tokens_per_s"].max()
    generate = points[points["scenario"] == "generate"]
    assert (generate["cumulative_s"] > 0).all()
    assert (generate["peak_mem_bytes"] >= 0).all() and points["mem_method"].str.startswith("cpu:").all()
    assert points["random_weights"].astype(str).str.lower().eq("true").all()


def test_generation_has_one_row_per_position(tiny_run):
    tokens = pd.read_csv(tiny_run / "generate_tokens.csv")
    for (model, T), group in tokens.groupby(["model", "seq_len"]):
        # position = tokens generated so far (1..T), so cumulative_s at position p is the time for p tokens
        assert sorted(group["position"]) == list(range(1, T + 1)), (model, T)
        assert (group["latency_s"] > 0).all()
        points = pd.read_csv(tiny_run / "points.csv")
        cumulative = points[(points.model == model) & (points.seq_len == T) & (points.scenario == "generate")]
        assert math.isclose(group["latency_s"].sum(), float(cumulative["cumulative_s"].iloc[0]), rel_tol=1e-6)


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
    from rwkv_bench.report import find_run_dirs

    for run in ("scaling/run1", "reference/scaling-100k", "nlp/run2", "scratch"):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "meta.json").write_text('{"kind": "scaling"}' if run != "scratch" else "{}")
    assert find_run_dirs(tmp_path) == [tmp_path / "nlp/run2", tmp_path / "scaling/run1"]


def test_resume_after_the_sweep_is_killed(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rwkv_bench", "scaling", "--models", "rwkv4-tiny", "--scenario", "prefill",
           "--min-len", "8", "--max-len", "64", "--points", "4", "--repeats", "1", "--out", str(out), "--no-report"]
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
    assert 1 <= len(first) < 4
    with csv.open("a") as f:                       # a row cut in half by the kill
        f.write("rwkv4-tiny,rwkv,rwkv_bench")
    run_sweep({"repeats": 2}, out=str(out), resume=True, report=False)
    points = pd.read_csv(csv)
    assert sorted(points["seq_len"]) == [8, 16, 32, 64] and (points["status"] == "ok").all()
    pd.testing.assert_frame_equal(points.iloc[:len(first)], first)   # finished points were kept, not re-run
    meta = read_meta(out)
    (resumed,) = meta["resumes"]                   # the resume is on record, with what it changed
    assert resumed["changed_options"] == {"repeats": 2} and meta["options"]["repeats"] == 2
    assert {"date_utc", "command", "git_revision"} <= set(resumed)


def test_a_point_over_the_memory_limit_is_oom_and_the_sweep_goes_on(tmp_path):
    run = sweep(tmp_path / "run", models="rwkv4-tiny", scenario="prefill,generate", min_len=16, max_len=16384,
                points=3, gen_max_len=16, memory_limit="8M")
    points = pd.read_csv(run / "points.csv").set_index(["scenario", "seq_len"])
    assert points.loc[("prefill", 16), "status"] == "ok"
    assert points.loc[("prefill", 512), "status"] == "ok" or points.loc[("prefill", 512), "status"] == "oom"
    assert points.loc[("prefill", 16384), "status"] in ("oom", "skipped")
    assert (points["status"] == "oom").sum() == 1
    oom_len = points[points["status"] == "oom"].index[0][1]
    assert (points.loc["prefill"].loc[lambda df: df.index > oom_len, "status"] == "skipped").all()
    assert points.loc[("generate", 16), "status"] == "ok"           # the other scenario still ran


def test_the_time_budget_cuts_a_model_off(tmp_path):
    # 2 tokens fit any budget; 100,000 recurrent steps (milliseconds each) never fit in 3 s. The length in
    # between may go either way on a fast or a busy machine; what is checked is the cut-off rule.
    run = sweep(tmp_path / "run", models="rwkv4-tiny", scenario="generate", min_len=2, max_len=100000, points=3,
                gen_max_len=100000, time_budget=3.0)
    points = pd.read_csv(run / "points.csv").sort_values("seq_len")
    status = list(points["status"])
    assert status[0] == "ok" and "timeout" in status, status
    first_timeout = status.index("timeout")
    assert all(s == "skipped" for s in status[first_timeout + 1:]), status
    assert points["error"].iloc[-1].startswith("not run: timeout")


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
    (["--scenario", "decode"], "unknown scenario"),
    (["--memory-limit", "lots"], "--memory-limit"),
])
def test_bad_flags_give_one_line_and_exit_2(tmp_path, capsys, args, needle):
    assert main(["scaling", "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not (tmp_path / "run" / "points.csv").exists()


def test_first_and_last_tenth_of_a_generation_run():
    import pandas as pd

    from rwkv_bench.scaling.report import first_and_last_tenth

    rows = pd.DataFrame({"position": range(1, 101), "n_positions": 1,
                         "latency_s": [1.0] * 10 + [5.0] * 80 + [2.0] * 10})
    assert first_and_last_tenth(rows) == (1.0, 2.0, 100)
    # binned rows (position = a bin's last position) are weighted by the positions they hold
    binned = pd.DataFrame({"position": [10, 90, 100], "n_positions": [10, 80, 10], "latency_s": [1.0, 5.0, 3.0]})
    assert first_and_last_tenth(binned) == (1.0, 3.0, 100)
    assert first_and_last_tenth(binned.iloc[:0]) is None
