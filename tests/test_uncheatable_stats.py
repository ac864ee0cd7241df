"""Bootstrap intervals over papers on synthetic data with known answers."""
import math

import numpy as np
import pandas as pd
import pytest

from rwkv_bench.uncheatable import stats


def test_constant_and_single_values_give_point_intervals():
    ci = stats.mean_ci([0.9] * 20)
    assert (ci.estimate, ci.low, ci.high, ci.n) == (0.9, 0.9, 0.9, 20)
    ci = stats.mean_ci([1.2])
    assert (ci.low, ci.high, ci.n) == (1.2, 1.2, 1)
    ci = stats.mean_ci([])
    assert ci.n == 0 and math.isnan(ci.estimate) and math.isnan(ci.low)


def test_interval_brackets_the_mean_and_is_reproducible():
    x = np.random.default_rng(1).normal(1.0, 0.2, size=40)
    a = stats.mean_ci(x, n_boot=2000, seed=3)
    b = stats.mean_ci(x, n_boot=2000, seed=3)
    c = stats.mean_ci(x, n_boot=2000, seed=4)
    assert a == b and a != c
    assert a.low < x.mean() < a.high and a.estimate == pytest.approx(x.mean())
    # close to the normal-theory interval mean +- 1.96 s / sqrt(n)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert (a.high - a.low) / 2 == pytest.approx(half, rel=0.15)


def test_coverage_is_near_nominal():
    rng = np.random.default_rng(0)
    hits = 0
    trials = 200
    for t in range(trials):
        x = rng.normal(0.8, 0.1, size=60)
        ci = stats.mean_ci(x, n_boot=500, seed=t)
        hits += ci.low <= 0.8 <= ci.high
    assert 0.88 <= hits / trials <= 0.99


def test_width_shrinks_like_one_over_sqrt_n():
    rng = np.random.default_rng(2)
    small = stats.mean_ci(rng.normal(1, 0.3, 100), n_boot=2000)
    large = stats.mean_ci(rng.normal(1, 0.3, 1600), n_boot=2000)
    ratio = (small.high - small.low) / (large.high - large.low)
    assert 3.0 < ratio < 5.3   # sqrt(16) = 4


def test_level_changes_width():
    x = np.random.default_rng(3).normal(0, 1, 50)
    assert (stats.mean_ci(x, level=0.99).high - stats.mean_ci(x, level=0.99).low) > \
        (stats.mean_ci(x, level=0.8).high - stats.mean_ci(x, level=0.8).low)


def test_ratio_interval():
    bits = np.array([100.0, 300.0, 200.0, 400.0])
    nbytes = np.array([100.0, 200.0, 200.0, 400.0])
    ci = stats.ratio_ci(bits, nbytes, n_boot=2000)
    assert ci.estimate == pytest.approx(1000 / 900)
    assert ci.low <= ci.estimate <= ci.high


def test_paired_difference_sees_what_overlapping_intervals_hide():
    rng = np.random.default_rng(5)
    difficulty = rng.normal(1.0, 0.3, 200)              # papers vary a lot, the same for both models
    a = difficulty + 0.02 + rng.normal(0, 0.005, 200)   # model a is slightly worse on every paper
    b = difficulty
    ci_a, ci_b = stats.mean_ci(a, n_boot=2000), stats.mean_ci(b, n_boot=2000)
    assert ci_a.low < ci_b.high                          # the per-model intervals overlap...
    pair = stats.paired_difference(a, b, n_boot=2000)
    assert 0 < pair["ci_low"] < 0.02 < pair["ci_high"]   # ...the paired one excludes 0
    assert pair["b_wins"] == 1.0 and pair["a_wins"] == 0.0 and pair["ties"] == 0.0
    assert pair["papers"] == 200


def test_paired_ties_and_shares():
    pair = stats.paired_difference([1.0, 2.0, 3.0, 4.0], [1.0, 2.5, 2.0, 5.0], n_boot=500)
    assert (pair["a_wins"], pair["b_wins"], pair["ties"]) == (0.5, 0.25, 0.25)
    with pytest.raises(ValueError):
        stats.paired_difference([1.0], [1.0, 2.0])
    # float noise between two implementations of the same weights is a tie, not a win
    noise = stats.paired_difference([1.0 + 1e-8, 2.0 - 1e-8], [1.0, 2.0], n_boot=200)
    assert noise["ties"] == 1.0 and noise["a_wins"] == noise["b_wins"] == 0.0


def rows(models, bpb, random=()):
    out = []
    for m, values in zip(models, bpb):
        for i, v in enumerate(values):
            nbytes = 5000
            bits = v * nbytes
            out.append({"model": m, "paper_id": str(i), "tokens": 1000, "bytes": nbytes, "chars": 4990,
                        "logprob_nats": -bits * math.log(2), "bits_per_byte": v, "bits_per_char": bits / 4990,
                        "seconds": 2.0, "random_weights": m in random})
    return pd.DataFrame(out)


def test_summarize_and_pairwise_tables():
    df = rows(["a", "b", "c"], [[1.0, 1.2, 0.8], [1.1, 1.3, 0.9], [3.0, 3.0, 3.0]], random={"c"})
    s = stats.summarize(df, n_boot=1000)
    assert list(s["model"]) == ["a", "b", "c"]
    a = s.iloc[0]
    assert a.papers == 3 and a.tokens == 3000 and a.bytes == 15000
    assert a.mean_bits_per_byte == pytest.approx(1.0) and a.ci_low <= 1.0 <= a.ci_high
    assert a.pooled_bits_per_byte == pytest.approx(1.0)
    assert a.compression_rate_pct == pytest.approx(12.5)
    assert a.tokens_per_s == pytest.approx(500.0)
    assert list(s["random_weights"]) == [False, False, True]
    p = stats.pairwise(df, n_boot=1000)
    assert list(zip(p["model_a"], p["model_b"])) == [("a", "b"), ("a", "c"), ("b", "c")]
    ab = p.iloc[0]
    assert ab.mean_diff_bits_per_byte == pytest.approx(-0.1) and ab.ci_low == pytest.approx(-0.1)
    assert ab.a_win_share == 1.0 and ab.b_win_share == 0.0 and ab.tie_share == 0.0
    assert list(p.columns) == stats.PAIRWISE_COLUMNS


def test_pairwise_uses_papers_both_scored():
    df = rows(["a", "b"], [[1.0, 1.2, 0.8, 0.5], [1.1, 1.3]])
    p = stats.pairwise(df, n_boot=500)
    assert p.iloc[0].papers == 2 and p.iloc[0].mean_diff_bits_per_byte == pytest.approx(-0.1)
