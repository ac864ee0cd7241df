"""rwkv-bench's lm-eval model: state reuse is exact and cheaper, rolling = `rwkv-bench score`, greedy generation,
and any RecurrentLM runs in it unchanged (a toy one whose state has another layout than RWKV-4's).

The model is a tiny dense-random RWKV-4 (2 layers x 64 channels, GPT-NeoX vocabulary), so the slow reference
WKV keeps these tests fast. Log-likelihoods are float32 sums of a few to ~20 tokens of ~11 nats each; two
evaluation orders of the same float32 arithmetic differ by ~1e-7 relative per token, so 1e-5 relative
(with 1e-4 nats absolute) leaves a wide margin while catching any real difference (a wrong state or an
off-by-one position changes a log-likelihood by whole nats).
"""
import json

import pytest
import torch
from lm_eval.api.instance import Instance
from torch import nn

from rwkv_bench.cli import main
from rwkv_bench.errors import UserError
from rwkv_bench.models.recurrent import RecurrentLM

REL, ABS = 1e-5, 1e-4


@pytest.fixture(scope="module")
def backend(neox_tokenizer_path):
    from rwkv_bench.backends.rwkv import RWKVBackend
    from rwkv_bench.models.rwkv4 import RWKV4, RWKVConfig, init_random_
    from rwkv_bench.tokenizer import neox_tokenizer

    model = init_random_(RWKV4(RWKVConfig(vocab_size=50277, n_layer=2, n_embd=64)), seed=3)
    return RWKVBackend(model, neox_tokenizer(str(neox_tokenizer_path)), "tiny-test", random_weights=True)


class ToyRNN(RecurrentLM):
    """A tiny gated linear RNN with its state laid out batch first, (B, n_layer, 2, C), where RWKV-4 has
    (n_layer, 5, B, C); no `config` or `emb` either, so only the interface can reach it. Per layer: the
    previous input (a token shift) and a decaying sum."""
    version = "toy"
    state_batch_dim = 0

    def __init__(self, vocab: int, width: int = 16, layers: int = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.width, self.layers = width, layers
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.ModuleList(nn.Linear(2 * width, width) for _ in range(layers))
        self.decay_logit = nn.Parameter(torch.randn(layers, width))
        self.out = nn.Linear(width, vocab, bias=False)
        nn.init.normal_(self.out.weight, std=0.5)

    @property
    def d_model(self) -> int:
        return self.width

    @property
    def weight_dtype(self) -> torch.dtype:
        return self.out.weight.dtype

    def init_state(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.layers, 2, self.width)

    def hidden(self, tokens, state, recurrent, lengths=None):
        x = self.embed(tokens)
        for i in range(self.layers):
            decay = torch.sigmoid(self.decay_logit[i])
            prev, total = state[:, i, 0].clone(), state[:, i, 1].clone()
            outs = []
            for t in range(x.shape[1]):
                h = torch.tanh(self.mix[i](torch.cat([x[:, t], prev], dim=-1)))
                running = decay * total + h
                outs.append(x[:, t] + running)
                live = torch.ones(x.shape[0], 1, dtype=torch.bool) if lengths is None else (t < lengths)[:, None]
                prev, total = torch.where(live, x[:, t], prev), torch.where(live, running, total)
            state[:, i, 0], state[:, i, 1] = prev, total
            x = torch.stack(outs, dim=1)
        return x

    def logits(self, x):
        return self.out(x).float()


@pytest.fixture(scope="module")
def toy_backend(neox_tokenizer_path):
    from rwkv_bench.backends.rwkv import RWKVBackend
    from rwkv_bench.tokenizer import neox_tokenizer

    return RWKVBackend(ToyRNN(50277, seed=5), neox_tokenizer(str(neox_tokenizer_path)), "toy", random_weights=True)


@pytest.fixture(scope="module")
def rwkv7_backend(neox_tokenizer_path):
    from rwkv_bench.backends.rwkv import RWKVBackend
    from rwkv_bench.models.rwkv7 import RWKV7, RWKV7Config, init_random_
    from rwkv_bench.tokenizer import neox_tokenizer

    model = init_random_(RWKV7(RWKV7Config(vocab_size=50277, n_layer=2, n_embd=128)), seed=1)  # 2 heads of 64
    return RWKVBackend(model, neox_tokenizer(str(neox_tokenizer_path)), "rwkv7-test", random_weights=True)


@pytest.fixture
def models(backend, toy_backend, rwkv7_backend, monkeypatch):
    # the WKV-7 operator's PyTorch reference: these tests are about the interface, and a first kernel build
    # (tests/test_rwkv7*.py check the kernels) would cost them tens of seconds
    monkeypatch.setenv("RWKV_BENCH_WKV", "reference")
    return {"rwkv4": backend, "toy": toy_backend, "rwkv7": rwkv7_backend}


def make_lm(backend, **kwargs):
    from rwkv_bench.nlp.lm_eval_model import RWKVBenchLM

    return RWKVBenchLM(backend=backend, **kwargs)


def ll_instances(pairs):
    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


# Multiple-choice style requests: shared contexts, contexts that are prefixes of other contexts, a shared
# few-shot prefix, duplicates, an empty context (lm-eval conditions it on the end-of-text token),
# one-token and multi-token continuations.
SHOT = "Question: What is ice?\nAnswer: frozen water\n\n"
PAIRS = [
    ("Question: Which planet is closest to the Sun?\nAnswer:", " Mercury"),
    ("Question: Which planet is closest to the Sun?\nAnswer:", " Venus"),
    ("Question: Which planet is closest to the Sun?\nAnswer:", " the red planet Mars"),
    ("Question: Which planet is closest to the Sun?\nAnswer:", " Earth, our home"),
    (SHOT + "Question: What do bees make?\nAnswer:", " honey"),
    (SHOT + "Question: What do bees make?\nAnswer:", " silk and wax paper"),
    (SHOT + "Question: What do cows eat?\nAnswer:", " grass"),
    (SHOT + "Question: What do cows eat?\nAnswer:", " fish and meat"),
    ("The cat sat on the", " mat"),
    ("The cat sat on the mat and looked at the", " dog"),
    ("The cat sat on the", " mat"),                       # duplicate request
    ("", "Hello world, this is a whole sentence."),      # empty context
    ("A", " B"),
]


def test_state_reuse_equals_scratch_and_processes_fewer_tokens(backend):
    scratch = make_lm(backend, state_reuse=False)
    expected = scratch.loglikelihood(ll_instances(PAIRS), disable_tqdm=True)
    for batch_size in (1, 3, 16):
        reuse = make_lm(backend, batch_size=batch_size)
        got = reuse.loglikelihood(ll_instances(PAIRS), disable_tqdm=True)
        assert len(got) == len(PAIRS)
        for (ll, greedy), (ll_ref, greedy_ref) in zip(got, expected):
            assert ll == pytest.approx(ll_ref, rel=REL, abs=ABS)
            assert greedy == greedy_ref
        ours, ref = reuse.meter["loglikelihood"], scratch.meter["loglikelihood"]
        assert ours.requests == ref.requests == len(PAIRS)
        assert ours.tokens_reencode == ref.tokens_reencode == ref.tokens_processed  # scratch = re-encode all
        assert ours.tokens_processed - ours.tokens_padding < ref.tokens_processed / 2
        assert (ours.tokens_padding == 0) == (batch_size == 1)
    assert got[0][0] < 0 and got[8] == got[10]


def test_small_chunks_and_ragged_passes_equal_scratch(backend):
    """Chunk size 3: contexts and continuations longer than a chunk run chunk by chunk in ragged batches."""
    scratch = make_lm(backend, state_reuse=False)
    expected = scratch.loglikelihood(ll_instances(PAIRS), disable_tqdm=True)
    lm = make_lm(backend, batch_size=16)
    lm.chunk_size = 3
    got = lm.loglikelihood(ll_instances(PAIRS), disable_tqdm=True)
    assert [g for _, g in got] == [g for _, g in expected]
    assert [x for x, _ in got] == pytest.approx([x for x, _ in expected], rel=REL, abs=ABS)
    counts = lm.meter["loglikelihood"]
    assert counts.forward_passes > 0 and counts.tokens_padding > 0


@pytest.mark.parametrize("which", ["rwkv4", "rwkv7", "toy"])
def test_ragged_rows_each_get_their_own_state(which, models, backend):
    """Rows of different lengths, right-padded, one pass (`hidden(..., lengths=)`): each row's state is the
    one it reaches alone, whatever the model's state layout."""
    from rwkv_bench.nlp.prefix_batches import right_padded

    model = models[which].model
    seqs = [backend.encode(t) for t in ("One two three four five six", "Short", "A middle length text here")]
    assert len({len(s) for s in seqs}) == 3
    start = model.advance(torch.tensor([backend.encode("Some shared prefix")]))
    tokens, lengths, _ = right_padded(seqs, "cpu")
    state = model.select_rows(start, torch.zeros(len(seqs), dtype=torch.long))
    with torch.no_grad():  # as in shared_prefix.py: hidden updates the state in place
        model.hidden(tokens, state, recurrent=False, lengths=lengths)
    for b, seq in enumerate(seqs):
        alone = model.advance(torch.tensor([seq]), start)
        torch.testing.assert_close(model.select_rows(state, torch.tensor([b])), alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("which", ["toy", "rwkv7"])
def test_a_recurrent_lm_of_another_state_layout_runs_unchanged(which, models):
    """The shared-prefix path (prefix tree, ragged passes, rows selected, put back and concatenated, one
    head per continuation) on models whose states have their batch elsewhere than RWKV-4's (dim 0 for the
    toy, dim 1 for RWKV-7): the same log-likelihoods as scoring every request from scratch, in one pass or
    chunk by chunk; and greedy generation by hand."""
    chosen = models[which]
    expected = make_lm(chosen, state_reuse=False).loglikelihood(ll_instances(PAIRS), disable_tqdm=True)
    assert len({round(x, 3) for x, _ in expected}) > len(PAIRS) // 2   # real, distinct numbers
    for batch_size, chunk_size in ((1, 1024), (16, 1024), (3, 3)):
        lm = make_lm(chosen, batch_size=batch_size)
        lm.chunk_size = chunk_size
        got = lm.loglikelihood(ll_instances(PAIRS), disable_tqdm=True)
        assert [g for _, g in got] == [g for _, g in expected]
        assert [x for x, _ in got] == pytest.approx([x for x, _ in expected], rel=REL, abs=ABS)
        counts = lm.meter["loglikelihood"]
        assert counts.tokens_processed - counts.tokens_padding < counts.tokens_reencode / 2
    prompts = ["Once upon a time", "The capital of France is", "1, 2, 3,"]
    reqs = [Instance("generate_until", {}, (p, {"until": ["\u2603never"], "max_gen_toks": 5}), i)
            for i, p in enumerate(prompts)]
    got = make_lm(chosen, batch_size=3).generate_until(reqs, disable_tqdm=True)
    assert got == [chosen.tokenizer.decode(greedy_by_hand(chosen, p, 5)) for p in prompts]


def test_a_backend_without_a_recurrent_lm_is_refused():
    from types import SimpleNamespace

    from rwkv_bench.nlp.lm_eval_model import RWKVBenchLM

    other = SimpleNamespace(model=nn.Linear(2, 2), spec="gpt2", family="transformer", implementation="transformers")
    with pytest.raises(UserError, match="--model hf"):
        RWKVBenchLM(backend=other)


def test_one_token_choices_share_a_row(backend):
    """Continuations of one context with the same inputs (one-token choices) are one row, many targets."""
    ctx = "Question: Which planet is closest to the Sun?\nAnswer:"
    choices = [" Mercury", " Venus", " Mars", " Earth"]
    assert all(len(backend.encode(c)) == 1 for c in choices)
    lm = make_lm(backend, batch_size=8)
    got = lm.loglikelihood(ll_instances([(ctx, c) for c in choices]), disable_tqdm=True)
    counts = lm.meter["loglikelihood"]
    assert counts.tokens_processed == len(backend.encode(ctx))   # context minus last token, then 1 row of 1
    expected = make_lm(backend, state_reuse=False).loglikelihood(ll_instances([(ctx, c) for c in choices]),
                                                                 disable_tqdm=True)
    assert [x for x, _ in got] == pytest.approx([x for x, _ in expected], rel=REL, abs=ABS)
    assert len({x for x, _ in got}) == 4


def test_shared_prefixes_are_run_once(backend):
    """Contexts P+a, P+b, P+a+c and an unrelated Q: the model runs exactly the tokens of their trie."""
    lm = make_lm(backend, batch_size=4)
    enc = backend.encode
    P, a, b, c, Q = "The old lighthouse keeper", " climbed", " counted", " the stairs", "Something else entirely"
    pairs = [(P + a, " up"), (P + b, " ships"), (P + a + c, " slowly"), (Q, " here")]
    for ctx, cont in pairs:
        assert len(enc(cont)) == 1 and enc(ctx + cont) == enc(ctx) + enc(cont), "pick texts that tokenise apart"
    assert enc(P + a) == enc(P) + enc(a) and enc(P + a + c) == enc(P + a) + enc(c) and enc(P + b) == enc(P) + enc(b)
    lm.loglikelihood(ll_instances(pairs), disable_tqdm=True)
    trie = len(enc(P)) + len(enc(a)) + len(enc(b)) + len(enc(c)) + len(enc(Q))
    # a context's last token feeds its continuation batch, so it runs once more where the context is itself
    # a branch point of the trie (P+a, which P+a+c extends); everything else runs exactly once
    counts = lm.meter["loglikelihood"]
    assert counts.tokens_processed - counts.tokens_padding == trie + 1
    scratch = make_lm(backend, state_reuse=False)
    expected = scratch.loglikelihood(ll_instances(pairs), disable_tqdm=True)
    got = make_lm(backend, batch_size=4).loglikelihood(ll_instances(pairs), disable_tqdm=True)
    assert [g for _, g in got] == [g for _, g in expected]
    assert [x for x, _ in got] == pytest.approx([x for x, _ in expected], rel=REL, abs=ABS)


def test_continuation_logprob_by_hand(backend):
    """One request against an explicit forward pass: log p(cont | ctx) summed over the continuation."""
    ctx, cont = "RWKV is an RNN with", " transformer-level performance"
    c, x = backend.encode(ctx), backend.encode(cont)
    assert backend.encode(ctx + cont) == c + x
    logits, _ = backend.model(torch.tensor([c + x[:-1]]))
    logp = torch.log_softmax(logits[0, len(c) - 1:].double(), -1)
    expected = float(logp[torch.arange(len(x)), torch.tensor(x)].sum())
    (ll, greedy), = make_lm(backend).loglikelihood(ll_instances([(ctx, cont)]), disable_tqdm=True)
    assert ll == pytest.approx(expected, rel=REL, abs=ABS)
    assert greedy is False


def test_rolling_equals_score_text_and_the_score_command(backend, tmp_path, capsys):
    from rwkv_bench.models.loaders import save_blinkdl_pth
    from rwkv_bench.nlp.lm_eval_model import RWKVBenchLM
    from rwkv_bench.scoring import score_text

    text = "RWKV is an RNN with transformer-level performance.\nIt can be trained in parallel, like GPT."
    lm = make_lm(backend)
    (total,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
    score = score_text(backend, text)
    assert total == score.logprob_nats  # the same computation, to the bit
    counts = lm.meter["loglikelihood_rolling"]
    assert counts.tokens_processed == counts.tokens_reencode == score.tokens
    # and the command line: `rwkv-bench score` on the same weights and text
    pth, txt = tmp_path / "m.pth", tmp_path / "t.txt"
    save_blinkdl_pth(backend.model, pth)
    txt.write_text(text)
    assert main(["score", "-m", str(pth), "-i", str(txt), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    from_file = RWKVBenchLM(pretrained=str(pth))
    (total_file,) = from_file.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)],
                                                    disable_tqdm=True)
    assert total_file == cli["logprob_nats"] and cli["tokens"] == score.tokens
    assert total_file == pytest.approx(total, rel=1e-6)


def greedy_by_hand(backend, context: str, n: int) -> list[int]:
    logits, state = backend.start(backend.encode(context))
    out = []
    for _ in range(n):
        token = int(logits.argmax())
        out.append(token)
        logits, state = backend.step(token, state)
    return out


def test_generate_until_greedy_stops_and_max_tokens(backend):
    lm = make_lm(backend, batch_size=2)
    prompts = ["Once upon a time", "The capital of France is", "1, 2, 3,"]
    by_hand = {p: greedy_by_hand(backend, p, 6) for p in prompts}
    assert all(0 not in ids for ids in by_hand.values()), "end-of-text in the greedy path: pick other prompts"
    reqs = [Instance("generate_until", {}, (p, {"until": ["\u2603never"], "max_gen_toks": 6}), i)
            for i, p in enumerate(prompts)]
    got = lm.generate_until(reqs, disable_tqdm=True)
    assert got == [backend.tokenizer.decode(by_hand[p]) for p in prompts]
    counts = lm.meter["generate_until"]
    assert counts.requests == 3
    assert counts.tokens_processed == sum(len(backend.encode(p)) for p in prompts) + 3 * 5
    # a stop sequence taken from inside the greedy text: generation is cut right before it
    full = got[0]
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert stop and stop in full
    (cut,) = lm.generate_until([Instance("generate_until", {}, (prompts[0], {"until": [stop], "max_gen_toks": 6}), 0)],
                               disable_tqdm=True)
    assert cut == full.split(stop)[0]


def test_model_args_and_registration(backend):
    import rwkv_bench.nlp  # noqa: F401
    from lm_eval.api.registry import get_model

    from rwkv_bench.nlp.lm_eval_model import RWKVBenchLM

    assert get_model("rwkv-bench") is RWKVBenchLM
    assert get_model("hf").__name__ == "HFLM"  # lm-eval's own models still resolve
    with pytest.raises(UserError, match="pretrained"):
        RWKVBenchLM()
    with pytest.raises(UserError, match="unknown model spec"):
        RWKVBenchLM(pretrained="no-such-model-xyz")
    with pytest.raises(UserError, match="batch_size"):
        make_lm(backend, batch_size="zero")
    assert make_lm(backend, batch_size="auto").batch_size >= 1
    lm = make_lm(backend, state_reuse="false")
    assert lm.state_reuse is False and lm.eot_token_id == 0


def test_device_defaults_to_cuda_when_available_else_cpu(monkeypatch):
    from rwkv_bench.nlp.lm_eval_model import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device(None) == "cpu" and pick_device("cuda:0") == "cpu" and pick_device("cpu") == "cpu"
    assert pick_device("cuda:1") == "cuda:1"   # an explicit other GPU is not silently replaced
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device(None) == "cuda" and pick_device("cuda:0") == "cuda:0" and pick_device("cpu") == "cpu"


@pytest.mark.slow
def test_readme_one_liner_runs_without_cuda(tmp_path):
    """The README's lm-eval CLI one-liner (lm-eval's default device is cuda:0) on a CPU-only run."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "rwkv_bench.nlp.lm_eval_cli", "--model", "rwkv-bench", "--model_args",
           "pretrained=rwkv4-tiny", "--tasks", "rwkv_bench_mc", "--include_path", "tasks", "--limit", "4",
           "--output_path", str(tmp_path / "out")]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rwkv_bench_mc" in done.stdout and "acc" in done.stdout
    results = list((tmp_path / "out").rglob("results_*.json"))
    assert results and "rwkv_bench_mc" in json.loads(results[0].read_text())["results"]
