"""The fused CPU kernels (kernels/rwkv4_cpu.cpp) against the model's PyTorch ops and transformers."""
import torch

from rwkv_bench.models.loaders import load_hf_dir
from rwkv_bench.models.rwkv4 import PP, RWKV4, RWKVConfig, init_random_
from rwkv_bench.ops import rwkv4_fused

from helpers import random_hf_rwkv


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def run_both(model, tokens, state=None, mode="recurrent"):
    """Logits and states with the fused kernels and with PyTorch ops only; asserts that the fused kernel of
    the mode (the body step, or the forward's token shift and mixes) ran, and did not with ENABLED off."""
    name = "body_step" if mode == "recurrent" else "shift_mix"
    real, calls = getattr(rwkv4_fused, name), []

    def counting(*args):
        out = real(*args)
        calls.append(out is not None)
        return out

    setattr(rwkv4_fused, name, counting)
    try:
        fused = model(tokens, state, mode=mode, chunk_size=9)
        ran = list(calls)
        rwkv4_fused.ENABLED = False
        plain = model(tokens, state, mode=mode, chunk_size=9)
    finally:
        setattr(rwkv4_fused, name, real)
        rwkv4_fused.ENABLED = True
    assert ran and all(ran), f"the fused {name} did not run"
    assert not any(calls[len(ran):]), f"the fused {name} ran with ENABLED off"
    return fused, plain


def test_fused_step_equals_pytorch_ops_and_parallel_mode():
    model = init_random_(RWKV4(RWKVConfig(vocab_size=97, n_layer=3, n_embd=40)), seed=7).eval()
    tokens = torch.randint(0, 97, (3, 25), generator=torch.Generator().manual_seed(2))
    (fused, s_fused), (plain, s_plain) = run_both(model, tokens)
    assert rel_err(fused, plain) < 1e-5
    torch.testing.assert_close(s_fused, s_plain, rtol=1e-5, atol=1e-5)
    parallel, s_parallel = model(tokens)
    assert rel_err(fused, parallel) < 1e-5
    torch.testing.assert_close(s_fused, s_parallel, rtol=1e-5, atol=1e-5)


def test_fused_forward_equals_pytorch_ops():
    """The parallel forward's fused token shift and mixes, squared ReLU and gate, chunks carrying the state."""
    model = init_random_(RWKV4(RWKVConfig(vocab_size=97, n_layer=3, n_embd=40)), seed=8).eval()
    tokens = torch.randint(0, 97, (2, 30), generator=torch.Generator().manual_seed(6))
    _, state = model(tokens[:, :5])
    (fused, s_fused), (plain, s_plain) = run_both(model, tokens, state, mode="parallel")
    assert rel_err(fused, plain) < 1e-5
    torch.testing.assert_close(s_fused, s_plain, rtol=1e-5, atol=1e-5)


def test_fused_kernels_match_transformers(tmp_path):
    hf = random_hf_rwkv(tmp_path / "hf", vocab=301, hidden=48, layers=3)
    tokens = torch.randint(0, 301, (2, 17), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = hf(input_ids=tokens).logits
    ours = load_hf_dir(tmp_path / "hf")
    for mode in ("recurrent", "parallel"):
        (fused, _), _ = run_both(ours, tokens, mode=mode)
        assert rel_err(fused, expected) < 1e-5


def test_fused_step_continues_a_state_and_reads_a_cleared_one_as_empty():
    model = init_random_(RWKV4(RWKVConfig(vocab_size=97, n_layer=2, n_embd=32)), seed=1).eval()
    tokens = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(4))
    _, state = model(tokens[:, :7])
    before = state.clone()
    (fused, s_fused), (plain, s_plain) = run_both(model, tokens[:, 7:], state)
    assert torch.equal(state, before)  # the caller's state is not modified
    assert rel_err(fused, plain) < 1e-5 and torch.allclose(s_fused, s_plain, rtol=1e-5, atol=1e-5)
    cleared = model.init_state(2)
    cleared[:, PP] = 120.0
    (fused, _), (plain, _) = run_both(model, tokens, cleared)
    assert not torch.isnan(fused).any() and rel_err(fused, plain) < 1e-5


def test_fused_step_stands_aside_where_it_does_not_apply():
    model = init_random_(RWKV4(RWKVConfig(vocab_size=97, n_layer=2, n_embd=32)), seed=3).eval()
    x, state = torch.randn(1, 32), model.init_state(1)
    with torch.no_grad():
        assert rwkv4_fused.body_step(model.to(torch.bfloat16), x.bfloat16(), state) is None
    assert rwkv4_fused.relu_square_(torch.randn(3, 4, requires_grad=True)) is None  # autograd must see it
    tokens = torch.randint(0, 97, (1, 6))
    logits, _ = model(tokens, mode="recurrent")  # bfloat16 weights: the PyTorch path runs
    assert torch.isfinite(logits).all()
