"""Loss by token position: the per-token file, the bins and their intervals, the figure with each transformer's
context marked, and --chars 0 (whole texts).

The models are made to make the window visible: on a text cycling through 15 letters, both predict the next
letter with a confidence that grows with the context they see. "toy-state" (no context limit, like RWKV)
sees the whole text; "toy-window" is a real TransformersBackend (its sliding-window code) over a module with
a 64-token context, so past position 63 it sees only its window and its loss jumps back up."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from rwkv_bench.backends.base import Backend
from rwkv_bench.errors import UserError
from rwkv_bench.recording import read_meta
from rwkv_bench.uncheatable import evaluate, report, stats, store

from helpers import ScoringOnlyBackend, install_toy_models

VOCAB, CONTEXT = 16, 64          # token 0 is BOS; letters a..o are tokens 1..15


class Letters:
    impl = None

    def encode(self, text):
        return [ord(c) - ord("a") + 1 for c in text]


def confidence_logprobs(seen: torch.Tensor) -> torch.Tensor:
    """log p(the right next letter) when the model has seen `seen` tokens (BOS included): logit log(seen) for
    it, 0 for the 15 others."""
    logit = torch.log(seen.double())
    return logit - torch.logsumexp(torch.stack([logit, torch.full_like(logit, math.log(VOCAB - 1))]), 0)


class Predictor(torch.nn.Module):
    """A 'transformer' with a context of CONTEXT tokens: at window position j it predicts the letter after
    its input with logit log(j + 1)."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(model_type="llama", max_position_embeddings=CONTEXT, bos_token_id=0,
                                      eos_token_id=0)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, input_ids):
        n = input_ids.shape[1]
        assert n <= CONTEXT, "the backend must never pass more than the context"
        logits = torch.zeros(1, n, VOCAB)
        nxt = input_ids[0] % (VOCAB - 1) + 1
        logits[0, torch.arange(n), nxt] = torch.log(torch.arange(1, n + 1).float()) * self.scale
        return SimpleNamespace(logits=logits)


def window_backend(spec):
    from rwkv_bench.backends.hf import TransformersBackend

    return TransformersBackend(Predictor(), Letters(), spec, random_weights=False, bos_token_id=0)


class StateBackend(ScoringOnlyBackend, Backend):
    """No context limit (as RWKV): the token at position p has seen p tokens."""
    family, implementation, max_context = "rwkv", "toy-state", None

    def __init__(self, spec):
        self.spec, self.random_weights = spec, False
        self.device, self.dtype, self.bos_token_id = torch.device("cpu"), torch.float32, 0
        self.tokenizer = Letters()

    def encode(self, text):
        return self.tokenizer.encode(text)

    def token_logprobs(self, ids, stride=None):
        return confidence_logprobs(torch.arange(1, len(ids) + 1))


@pytest.fixture
def toy_models(monkeypatch):
    install_toy_models(monkeypatch, lambda spec: window_backend(spec.text) if spec.text == "toy-window"
                       else StateBackend(spec.text))


def letters(n: int, start: int = 0) -> str:
    return "".join(chr(ord("a") + (start + i) % (VOCAB - 1)) for i in range(n))


def run(tmp_path, texts, **kw):
    path = tmp_path / "texts.json"
    path.write_text(json.dumps(texts))
    given = dict(models="toy-state,toy-window", papers_file=path, min_chars=1, bootstrap=200, progress=False, **kw)
    return evaluate.run(given, out=tmp_path / "run")


def test_loss_by_position_shows_the_window(tmp_path, toy_models):
    texts = [letters(n, start=n) for n in (150, 200, 250, 300)]      # all longer than the 64-token context
    run_dir = run(tmp_path, texts, chars=0, stride=32)
    # the per-token file: every text's values in per_paper.csv's order, as the backends compute them
    rows = store.read_per_paper(run_dir / "per_paper.csv")
    logprobs = store.read_token_logprobs(run_dir)
    assert list(logprobs) == ["toy-state", "toy-window"]
    for model, items in logprobs.items():
        assert [pid for pid, _ in items] == list(rows.loc[rows.model == model, "paper_id"])
        for (pid, values), text in zip(items, texts):
            assert values.dtype == np.float32 and len(values) == len(text)
            expected = (window_backend("w") if model == "toy-window" else StateBackend("s")).token_logprobs(
                Letters().encode(text), stride=32)
            assert np.allclose(values, expected.numpy(), atol=1e-5)
        sums = [float(v.astype(float).sum()) for _, v in items]
        assert np.allclose(sums, rows.loc[rows.model == model, "logprob_nats"], atol=1e-3)
    assert not (run_dir / "token_logprobs").exists()
    # the table: log-spaced bins over positions 1..300; the state model keeps improving, the window's loss
    # jumps back up past its context
    table = pd.read_csv(run_dir / "loss_by_position.csv")
    assert list(table.columns) == stats.POSITION_COLUMNS
    state, window = (table[table.model == m].reset_index(drop=True) for m in ("toy-state", "toy-window"))
    assert state.position_from.iloc[0] == 1 and state.position_to.iloc[-1] == 300
    assert (np.diff(state.mean_bits_per_token) < 0).all()
    assert (state.texts[state.position_to <= 150] == 4).all() and state.texts.iloc[-1] < 4   # fewer reach far
    assert (np.diff(state.texts) <= 0).all()
    past = window.position_from >= CONTEXT           # past the context the window stops improving: a plateau
    assert (window.mean_bits_per_token[past] > state.mean_bits_per_token[past] + 0.1).all()
    assert window.mean_bits_per_token[past].min() > 0.9 * window[window.position_to < CONTEXT].mean_bits_per_token.iloc[-1]
    before = window[window.position_to < CONTEXT]
    assert np.allclose(before.mean_bits_per_token, state[state.position_to < CONTEXT].mean_bits_per_token)
    assert (table.ci_low <= table.mean_bits_per_token + 1e-12).all()
    assert (table.mean_bits_per_token <= table.ci_high + 1e-12).all()
    # the figure marks the transformer's context; meta.json recorded it
    meta = read_meta(run_dir)
    assert meta["models"]["toy-window"]["max_context"] == CONTEXT and meta["models"]["toy-state"]["max_context"] is None
    svg = (run_dir / "loss_by_position.svg").read_text()
    assert "toy-window: context 64 tokens" in svg and "token position" in svg and "bits per token" in svg
    assert "toy-state: context" not in svg
    assert (run_dir / "loss_by_position.png").stat().st_size > 10_000
    md = (run_dir / "summary.md").read_text()
    assert "## Loss by token position" in md and "`toy-window` 64 tokens" in md and "4 whole texts (at least 1)" in md
    assert "| model | tokens 1-9 | tokens 10-99 | tokens 100-999 |" in md
    # the report rebuilds the same table from the run directory alone
    (run_dir / "loss_by_position.csv").unlink()
    report.render(run_dir)
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "loss_by_position.csv"), table)


def test_chars_0_keeps_whole_texts(tmp_path, toy_models):
    texts = [letters(6000), letters(7000, start=3)]                      # longer than the default 5000
    run_dir = run(tmp_path, texts, chars=0)
    papers = pd.read_csv(run_dir / "papers.csv")
    assert list(papers.chars) == [6000, 7000]
    assert read_meta(run_dir)["chars"] == 0
    assert list(store.read_per_paper(run_dir / "per_paper.csv").tokens) == [6000, 7000] * 2
    with pytest.raises(UserError, match="--chars must be positive, or 0 to keep whole texts"):
        evaluate.run(dict(models="toy-state", papers_file=tmp_path / "texts.json", chars=-5, progress=False),
                     out=tmp_path / "neg")
    # and a resume of a --chars 0 run finds the same texts
    evaluate.run({"progress": False}, out=run_dir, resume=True)


def test_position_bins():
    edges = stats.position_edges(1200)
    assert edges[0] == 1 and edges[-1] == 1201 and (np.diff(edges) > 0).all()
    assert list(edges[:4]) == [1, 2, 3, 4]                       # one position each where the loss falls fastest
    assert 20 <= len(edges) <= 30                               # about 8 per decade
    assert list(stats.decade_edges(1200)) == [1, 10, 100, 1000, 10000]
    assert list(stats.position_edges(1)) == [1, 2]


def test_loss_by_position_means_texts_then_bins():
    texts = [np.array([4.0, 2.0, 2.0, 2.0]), np.array([6.0, 4.0])]
    table = stats.loss_by_position(texts, np.array([1, 2, 5]), n_boot=200)
    assert list(table.texts) == [2, 2] and list(table.tokens) == [2, 4]
    assert table.mean_bits_per_token.tolist() == pytest.approx([5.0, 3.0])   # (4+6)/2; (mean(2,2,2) + 4)/2
    assert table.ci_low[0] == pytest.approx(4.0) and table.ci_high[0] == pytest.approx(6.0)
    one = stats.loss_by_position([np.ones(3)], np.array([1, 2, 4, 8]), n_boot=200)
    assert list(one.position_to) == [1, 3]                       # the bin past the text is left out
    assert (one.ci_low == one.ci_high).all()
