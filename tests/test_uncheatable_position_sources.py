"""Loss by token position in a run of several sources: the overall rows, then each source's."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from rwkv_bench.uncheatable import report
from rwkv_bench.uncheatable.store import save_token_logprobs

BITS = {("a", "wikipedia"): 1.0, ("a", "github"): 3.0, ("b", "wikipedia"): 2.0, ("b", "github"): 0.5}


def two_source_run(run_dir):
    """Two models, three texts of 12 tokens per source; every token of a (model, source) costs BITS bits."""
    ids = [f"{source}:{i}" for source in ("wikipedia", "github") for i in range(3)]
    (run_dir / "meta.json").write_text(json.dumps({
        "kind": "uncheatable", "model_specs": ["a", "b"], "ids": ids, "device": "cpu", "dtype": "float32",
        "bootstrap": {"resamples": 100, "seed": 0, "level": 0.95}, "source": "wikipedia,github",
        "sources": {"wikipedia": {"window": {"since": "2025-01-01", "until": "2025-01-14"}, "lang": "en"},
                    "github": {"window": {"since": "2025-01-01", "until": "2025-01-14"}}}}))
    rows = []
    for i, model in enumerate(("a", "b")):
        for j, pid in enumerate(ids):
            source = pid.split(":")[0]
            bits = BITS[(model, source)]
            save_token_logprobs(run_dir, i, j, np.full(12, -bits * math.log(2), dtype=np.float32))
            rows.append({"model": model, "paper_id": pid, "source": source, "tokens": 12, "bytes": 48,
                         "chars": 48, "logprob_nats": -bits * 12 * math.log(2), "bits_per_byte": bits / 4,
                         "bits_per_char": bits / 4, "compression_rate_pct": bits / 32 * 100, "seconds": 1.0,
                         "random_weights": False})
    pd.DataFrame(rows).to_csv(run_dir / "per_paper.csv", index=False)


def test_loss_by_position_per_source(tmp_path):
    two_source_run(tmp_path)
    written = {p.name for p in report.render(tmp_path)}
    assert {"loss_by_position.csv", "loss_by_position.png", "loss_by_position.svg"} <= written
    assert (tmp_path / "loss_by_position.png").stat().st_size > 0
    table = pd.read_csv(tmp_path / "loss_by_position.csv")
    assert list(table.columns[:2]) == ["source", "model"]
    assert list(dict.fromkeys(zip(table.source, table.model))) == [
        ("all", "a"), ("all", "b"), ("wikipedia", "a"), ("wikipedia", "b"), ("github", "a"), ("github", "b")]
    means = table.groupby(["source", "model"]).mean_bits_per_token
    for (model, source), bits in BITS.items():
        assert np.allclose(means.min()[(source, model)], bits) and np.allclose(means.max()[(source, model)], bits)
    for model in ("a", "b"):
        overall = table[(table.source == "all") & (table.model == model)]
        expected = (BITS[(model, "wikipedia")] + BITS[(model, "github")]) / 2
        assert np.allclose(overall.mean_bits_per_token, expected)
        assert set(overall.texts) == {6}
    assert set(table[table.source != "all"].texts) == {3}
    assert table.groupby(["source", "model"]).tokens.sum().to_dict() == {
        (s, m): 72 if s == "all" else 36 for s in ("all", "wikipedia", "github") for m in ("a", "b")}
    md = (tmp_path / "summary.md").read_text().replace("  ", " ")
    section = md[md.index("## Loss by token position"):md.index("## Protocol")]
    assert "| source | model |" in section
    assert "| github | a | 3.000 [3.000, 3.000] | 3.000 [3.000, 3.000] |" in section


def test_one_source_keeps_the_table_without_a_source_column(tmp_path):
    two_source_run(tmp_path)
    rows = pd.read_csv(tmp_path / "per_paper.csv")
    rows["source"] = "wikipedia"
    rows.to_csv(tmp_path / "per_paper.csv", index=False)
    report.render(tmp_path)
    table = pd.read_csv(tmp_path / "loss_by_position.csv")
    assert "source" not in table and list(dict.fromkeys(table.model)) == ["a", "b"]
    assert "| source |" not in (tmp_path / "summary.md").read_text()
