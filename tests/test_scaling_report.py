"""`render(run_dir)` of a scaling run from its stored files alone, where there is little to draw."""
import json

from rwkv_bench.recording import append_rows
from rwkv_bench.scaling.report import render
from rwkv_bench.scaling.store import COLUMNS, POINTS_CSV


def test_a_run_whose_every_point_failed_gets_its_tables_and_no_figures(tmp_path):
    # every child crashed (a broken install, a bad checkpoint): the report says so instead of failing to
    # put nothing on a log axis
    (tmp_path / "meta.json").write_text(json.dumps({"kind": "scaling", "device": "cpu", "dtype": "float32"}))
    rows = [{"model": "m", "family": "rwkv", "scenario": s, "seq_len": 8, "status": "error", "error": "boom"}
            for s in ("prefill", "decode", "generate")]
    append_rows(tmp_path / POINTS_CSV, rows + [{"model": "m", "family": "rwkv", "scenario": "prefill", "seq_len": 16,
                                                "status": "skipped", "error": "not run: error at seq_len 8"}], COLUMNS)
    written = render(tmp_path)
    assert sorted(p.name for p in written) == ["summary.md", "table1.md"]
    summary = (tmp_path / "summary.md").read_text()
    assert "points: 4 (error 3, skipped 1)" in summary and "| m | prefill | 8 | error |" in summary


def test_table1_and_the_summary_give_each_models_state_or_kv_cache_per_sequence(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"kind": "scaling", "device": "cpu", "dtype": "float32"}))
    rows = [{"model": m, "family": f, "scenario": "decode", "seq_len": T, "status": "ok", "latency_s": 0.01,
             "peak_mem_bytes": 1000, "state_bytes": b, "random_weights": True}
            for m, f, per_token, fixed in (("rwkv", "rwkv", 0, 184320), ("tf", "transformer", 73728, 0))
            for T in (1024, 8192) for b in [fixed + per_token * T]]
    append_rows(tmp_path / POINTS_CSV, rows, COLUMNS)
    render(tmp_path)
    for name in ("table1.md", "summary.md"):
        text = (tmp_path / name).read_text()
        assert "| rwkv | rwkv | 180 KiB at T=8,192 | 0 (fixed size) | 184320 |" in text, name
        assert "| tf | transformer | 576 MiB at T=8,192 | 72 KiB | 603979776 |" in text, name
