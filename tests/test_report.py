"""`rwkv-bench report`: reproducible rebuilds of the committed runs, figures that agree with the CSVs,
the scipy bootstrap and regression behind the numbers, and the shared figure/table helpers."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from rwkv_bench.report.command import report_runs
from rwkv_bench.report.figures import pyplot, save_figure
from rwkv_bench.report.tables import fmt, markdown_table, pct_change
from rwkv_bench.scaling import figures as scaling_figures
from rwkv_bench.scaling import report as scaling_report
from rwkv_bench.scaling.table1 import fit_loglog
from rwkv_bench.uncheatable import report as uncheatable_report
from rwkv_bench.uncheatable import stats

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference"
REFERENCE_RUNS = sorted(p.name for p in REFERENCE.iterdir() if (p / "meta.json").is_file())


def files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("run", REFERENCE_RUNS)
def test_rebuilding_a_committed_run_changes_no_byte(tmp_path, run, capsys):
    """Every committed run rebuilds byte-identical. The cases run one after another in one process, so state
    one rebuild leaves (matplotlib's, pandas') would show in the next; serving-tiny (scaling's and serving's
    figures) is also rebuilt twice over itself."""
    committed = files(REFERENCE / run)
    copy = tmp_path / run
    shutil.copytree(REFERENCE / run, copy)
    for _ in range(2 if run == "serving-tiny" else 1):
        report_runs([copy])
        rebuilt = files(copy)
        assert sorted(rebuilt) == sorted(committed), "rebuild wrote files the run does not hold"
        changed = [name for name in committed if rebuilt[name] != committed[name]]
        assert not changed, f"rebuilding results/reference/{run} changed {changed}: run `rwkv-bench report` on it"


def test_saved_figures_are_byte_identical_and_undated(tmp_path):
    plt = pyplot()
    for attempt in ("a", "b"):
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], [3, 1, 2], label="x")
        ax.set_title("same figure")
        ax.legend()
        save_figure(fig, tmp_path / attempt)
    for ext in ("png", "svg"):
        assert (tmp_path / f"a.{ext}").read_bytes() == (tmp_path / f"b.{ext}").read_bytes(), ext
    svg = (tmp_path / "a.svg").read_text()
    assert "<dc:date>" not in svg and "Matplotlib v" not in svg


# ---- uncheatable: the paired scatter counts what pairwise.csv counts ----

def uncheatable_run(run_dir: Path, a_bpb: list[float], b_bpb: list[float]) -> Path:
    run_dir.mkdir()
    (run_dir / "meta.json").write_text(json.dumps({"kind": "uncheatable", "model_specs": ["a", "b"],
                                                   "device": "cpu", "dtype": "float32",
                                                   "bootstrap": {"resamples": 200, "seed": 0, "level": 0.95}}))
    rows = []
    for model, values in (("a", a_bpb), ("b", b_bpb)):
        for i, v in enumerate(values):
            rows.append({"model": model, "paper_id": f"2501.0{i}", "tokens": 100, "bytes": 1000, "chars": 1000,
                         "logprob_nats": -v * 1000 * math.log(2), "bits_per_byte": v, "bits_per_char": v,
                         "seconds": 1.0, "random_weights": False})
    pd.DataFrame(rows).to_csv(run_dir / "per_paper.csv", index=False)
    return run_dir


def capture_titles(monkeypatch, module) -> dict[str, str]:
    """Titles of the figures `module` saves, by file stem."""
    titles = {}

    def save(fig, path):
        titles[Path(path).name] = fig.axes[0].get_title()
        return save_figure(fig, path)

    monkeypatch.setattr(module, "save_figure", save)
    return titles


def test_paired_scatter_counts_wins_and_ties_as_pairwise_csv(tmp_path, monkeypatch):
    # paper 0 differs by 1e-8 bits/byte: a tie (a strict `<` would count it as a win for a)
    a = [1.0, 2.0, 3.0, 0.5]
    b = [1.0 + 1e-8, 2.5, 2.0, 0.7]
    titles = capture_titles(monkeypatch, uncheatable_report)
    run_dir = uncheatable_run(tmp_path / "run", a, b)
    uncheatable_report.render(run_dir)
    pair = pd.read_csv(run_dir / "pairwise.csv").iloc[0]
    counts = [round(pair[c] * pair.papers) for c in ("a_win_share", "b_win_share", "tie_share")]
    assert counts == [2, 1, 1] and sum(x < y for x, y in zip(a, b)) == 3
    assert "4 papers: a lower on 2, b lower on 1, ties 1" in titles["paired_scatter"]
    assert "| a | b | 4 |" in (run_dir / "summary.md").read_text()


# ---- scipy behind the numbers ----

def test_bootstrap_of_constant_data_is_a_point():
    ci = stats.mean_ci([0.7] * 15, n_boot=500)
    assert (ci.estimate, ci.low, ci.high) == (0.7, 0.7, 0.7)
    pair = stats.paired_difference([1.0, 2.0, 3.0], [0.5, 1.5, 2.5], n_boot=500)
    assert pair["mean_diff"] == pair["ci_low"] == pair["ci_high"] == pytest.approx(0.5)


def test_intervals_are_scipys_percentile_bootstrap():
    rng = np.random.default_rng(11)
    a = rng.normal(1.0, 0.3, 30)
    b = a + rng.normal(0.05, 0.02, 30)

    def scipy_ci(data, statistic, paired):
        res = scipy.stats.bootstrap(data, statistic, n_resamples=3000, paired=paired, vectorized=True,
                                    confidence_level=0.9, method="percentile", rng=np.random.default_rng(7))
        return res.confidence_interval.low, res.confidence_interval.high

    pair = stats.paired_difference(a, b, n_boot=3000, level=0.9, seed=7)
    low, high = scipy_ci((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), paired=True)
    assert (pair["ci_low"], pair["ci_high"]) == pytest.approx((low, high), rel=1e-12)
    assert high < 0   # a is better on every paper: the paired interval excludes 0
    ci = stats.mean_ci(a, n_boot=3000, level=0.9, seed=7)
    assert (ci.low, ci.high) == pytest.approx(scipy_ci((a,), np.mean, paired=False), rel=1e-12)
    ratio = stats.ratio_ci(a, b, n_boot=3000, level=0.9, seed=7)
    expected = scipy_ci((a, b), lambda x, y, axis: x.sum(axis=axis) / y.sum(axis=axis), paired=True)
    assert (ratio.low, ratio.high) == pytest.approx(expected, rel=1e-12)


def test_loglog_fit_is_linregress_on_the_logs():
    T = np.array([1265, 5429, 23300, 100000])
    y = 1e-5 * T ** 1.7 * np.array([1.0, 1.1, 0.95, 1.02])
    fit = fit_loglog(T, y)
    ref = scipy.stats.linregress(np.log(T), np.log(y))
    assert fit.slope == pytest.approx(ref.slope, rel=1e-12) and fit.r2 == pytest.approx(ref.rvalue ** 2)
    assert (fit.n, fit.x_min, fit.x_max) == (4, pytest.approx(1265), pytest.approx(100000))
    flat = fit_loglog(T, [5e6] * 4)       # memory that does not grow: exponent 0, fitted exactly
    assert flat.slope == pytest.approx(0, abs=1e-12) and flat.r2 == 1.0
    assert fit_loglog([16, None, 64], [1.0, 2.0, float("nan")]) is None


# ---- scaling: a timed-out length is marked where the run stopped ----

def scaling_points(run_dir: Path) -> Path:
    run_dir.mkdir()
    (run_dir / "meta.json").write_text(json.dumps({"kind": "scaling", "device": "cpu", "dtype": "float32"}))
    rows = []
    for model, family, per_token, last_ok in (("rwkv", "rwkv", 1e-4, 4096), ("tf", "transformer", 1e-3, 256)):
        for T in (64, 256, 1024, 4096):
            ok = T <= last_ok
            rows.append({"model": model, "family": family, "implementation": "x", "scenario": "prefill",
                         "seq_len": T, "status": "ok" if ok else ("timeout" if T == 1024 else "skipped"),
                         "latency_s": per_token * T if ok else None, "latency_min_s": per_token * T if ok else None,
                         "latency_max_s": per_token * T if ok else None, "cumulative_s": None,
                         "tokens_per_s": 1 / per_token if ok else None, "peak_mem_bytes": 1e6 * T if ok else None,
                         "peak_total_bytes": 2e9, "mem_method": "cpu:rss", "kv_cache": "n.a.",
                         "random_weights": True, "error": "" if ok else "not finished"})
    pd.DataFrame(rows).to_csv(run_dir / "points.csv", index=False)
    return run_dir


def test_timeout_marker_sits_at_the_length_that_timed_out_on_top_of_the_axes(tmp_path, monkeypatch):
    figures = {}

    def save(fig, path):
        figures[Path(path).name] = fig
        return save_figure(fig, path)

    monkeypatch.setattr(scaling_figures, "save_figure", save)
    scaling_report.render(scaling_points(tmp_path / "run"))
    for name in ("prefill_latency", "peak_memory"):
        ax = figures[name].axes[0]
        (marker,) = [line for line in ax.get_lines() if line.get_marker() == "x"]
        assert list(marker.get_xdata()) == [1024] and list(marker.get_ydata()) == [1.0], name
        assert marker.get_transform() is ax.get_xaxis_transform(), name   # y in axes fractions: the top edge
        assert ax.get_xlim()[1] >= 1024, name
        assert any("timeout at T=1024" in t.get_text() for t in ax.texts), name


# ---- the shared formatter and Markdown tables ----

def test_one_number_formatter_and_markdown_tables():
    assert fmt(0.0123456) == "0.01235" and fmt(2 ** 21, ".3g", 1 / 2 ** 20) == "2"
    assert fmt(None) == fmt(float("nan")) == "–"
    assert pct_change(1.083, 1.0) == "+8.3%" and pct_change(1.0, 0) == "–"
    table = markdown_table([{"model": "a|b", "papers": "10"}, {"model": "c", "papers": "9"}], right=("papers",))
    assert table.splitlines() == ["| model | papers |", "|---|---:|", "| a/b | 10 |", "| c | 9 |"]
