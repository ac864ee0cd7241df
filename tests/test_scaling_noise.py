"""Table 1 and summary.md report a fitted exponent only where the fitted values rise above the run's noise."""
import pandas as pd

from rwkv_bench.scaling.summary import findings
from rwkv_bench.scaling.facts import model_facts
from rwkv_bench.scaling.table1 import exponent_rows, render_table1

MIB = 2 ** 20
T = [13305, 26000, 52000, 100000]


def rows(model, family, peaks_mib, latencies_ms, spread_ms, baselines_mib):
    return [{"model": model, "family": family, "implementation": "x", "scenario": "decode", "seq_len": t,
             "status": "ok", "latency_s": lat / 1000, "latency_mean_s": lat / 1000,
             "latency_min_s": (lat - spread_ms / 2) / 1000, "latency_max_s": (lat + spread_ms / 2) / 1000,
             "peak_mem_bytes": peak * MIB, "baseline_bytes": base * MIB, "kv_cache": "n.a.",
             "cumulative_s": None, "random_weights": True}
            for t, peak, lat, base in zip(T, peaks_mib, latencies_ms, baselines_mib)]


def test_a_few_mib_of_allocator_noise_is_flat_and_real_growth_is_an_exponent():
    # rwkv4-tiny decode in the 100k reference run: 0.9-5.6 MiB above the loaded model, which a log-log fit
    # calls exponent 0.66 (R² 0.47); the transformer's KV cache doubles with T
    points = pd.DataFrame(
        rows("rwkv", "rwkv", [0.89, 5.59, 4.04, 4.34], [4.7, 4.9, 4.6, 5.4], 2.7, [300, 300.7, 300.2, 300.5])
        + rows("tf", "transformer", [104, 204, 399, 782], [10, 20, 40, 80], 1.0, [400, 401, 400, 400.5]))
    by_model = {(r["model"], r["scenario"]): r for r in exponent_rows(points)}
    rwkv, tf = by_model[("rwkv", "decode")], by_model[("tf", "decode")]
    assert rwkv["mem_fit"].slope > 0.5 and rwkv["mem_flat"] == "flat within ±2.4 MiB"
    assert rwkv["time_flat"] == "flat within ±0.4 ms"        # R² low, change within the samples' spread
    assert tf["mem_flat"] is None and tf["time_flat"] is None and abs(tf["mem_fit"].slope - 1) < 0.05
    table = render_table1(points, {"device": "cpu", "dtype": "float32"})
    (rwkv_line,) = [line for line in table.splitlines() if line.startswith("| rwkv | ") and "decode per token" in line]
    assert "flat within ±2.4 MiB" in rwkv_line and "0.6" not in rwkv_line.split("|")[9]
    (tf_line,) = [line for line in table.splitlines() if line.startswith("| tf | ") and "decode per token" in line]
    assert "flat" not in tf_line
    text = "\n".join(findings(points, pd.DataFrame(), model_facts(points)))
    assert "memory flat within ±2.4 MiB" in text and "memory exponent 0.66" not in text


def test_a_memory_change_above_the_baselines_spread_but_off_a_line_is_flat():
    # 40 MiB of scatter with no trend, baselines that moved by 30 MiB between processes: not a finding
    points = pd.DataFrame(rows("rwkv", "rwkv", [100, 140, 100, 135], [5, 5, 5, 5], 1, [300, 330, 310, 320]))
    (row,) = exponent_rows(points)[:1]
    assert row["mem_flat"] == "flat within ±20 MiB"


def test_a_change_between_two_generate_lengths_is_judged_against_the_noise_too():
    def generate(model, peaks_mib, latencies_ms, spread_ms):
        return [{"model": model, "family": "rwkv", "implementation": "x", "scenario": "generate", "seq_len": t,
                 "status": "ok", "latency_s": lat / 1000, "latency_min_s": (lat - spread_ms / 2) / 1000,
                 "latency_max_s": (lat + spread_ms / 2) / 1000, "cumulative_s": t * lat / 1000,
                 "peak_mem_bytes": peak * MIB, "peak_total_bytes": (400 + peak) * MIB, "baseline_bytes": 400 * MIB,
                 "kv_cache": "n.a.", "random_weights": True}
                for t, peak, lat in zip((16, 904), peaks_mib, latencies_ms)]

    points = pd.DataFrame(generate("quiet", [0.99, 1.93], [5.8, 6.1], 2.0) + generate("grows", [1, 30], [5, 9], 1.0))
    lines = {line.split("**")[1]: line for line in findings(points, pd.DataFrame(), model_facts(points))
             if "generation: per-token" in line}
    assert "0.99 → 1.93 MiB: flat within the noise floor (1 MiB)" in lines["quiet"]
    assert "(+5.2%, within the spread of their samples)" in lines["quiet"]
    assert "flat" not in lines["grows"] and "within the spread" not in lines["grows"]
