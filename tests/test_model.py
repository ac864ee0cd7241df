"""Our RWKV-4: its two modes agree with each other and with transformers' RwkvForCausalLM."""
import torch

from rwkv_bench.models.loaders import load_checkpoint, load_hf_dir, save_blinkdl_pth
from rwkv_bench.models.rwkv4 import RWKV4, RWKVConfig, init_paper_, init_random_

from helpers import random_hf_rwkv


def small_model(seed=0, vocab=97, layers=3, C=32):
    return init_random_(RWKV4(RWKVConfig(vocab_size=vocab, n_layer=layers, n_embd=C)), seed=seed).eval()


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_parallel_equals_recurrent():
    model = small_model()
    tokens = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(1))
    par, s_par = model(tokens)
    rec, s_rec = model(tokens, mode="recurrent")
    # same fp32 arithmetic in a different order: agreement to ~1e-6 relative
    assert rel_err(rec, par) < 1e-5
    assert torch.allclose(s_rec, s_par, rtol=1e-5, atol=1e-6)


def test_chunked_equals_unchunked_and_state_carries():
    model = small_model(seed=2)
    tokens = torch.randint(0, 97, (1, 50), generator=torch.Generator().manual_seed(3))
    full, s_full = model(tokens, chunk_size=1000)
    chunked, s_chunked = model(tokens, chunk_size=7)
    assert rel_err(chunked, full) < 1e-5
    # a state returned by one call continues in the next
    first, state = model(tokens[:, :23])
    second, s_two = model(tokens[:, 23:], state)
    assert rel_err(torch.cat([first, second], 1), full) < 1e-5
    assert torch.allclose(s_two, s_full, rtol=1e-5, atol=1e-6)
    # last_only gives the last position's logits and the same state
    last, s_last = model(tokens, chunk_size=16, last_only=True)
    assert last.shape == (1, 1, 97) and rel_err(last[:, 0], full[:, -1]) < 1e-5
    assert torch.allclose(s_last, s_chunked, rtol=1e-5, atol=1e-6)


def test_input_state_is_not_modified():
    model = small_model(seed=4)
    tokens = torch.randint(0, 97, (1, 10))
    _, state = model(tokens)
    before = state.clone()
    model(tokens, state)
    model(tokens[:, :1], state, mode="recurrent")
    assert torch.equal(state, before)


def test_paper_init_is_deterministic_and_finite():
    m1 = init_paper_(RWKV4(RWKVConfig(vocab_size=97, n_layer=2, n_embd=16)), torch.Generator().manual_seed(0))
    m2 = init_paper_(RWKV4(RWKVConfig(vocab_size=97, n_layer=2, n_embd=16)), torch.Generator().manual_seed(0))
    for (n, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), n
    logits, _ = m1(torch.randint(0, 97, (1, 8)))
    assert torch.isfinite(logits).all()
    # decay curves as in the paper: w from -5 at channel 0 to +3 at the last channel
    td = m1.blocks[0].att.time_decay
    assert abs(td[0].item() + 5) < 1e-6 and abs(td[-1].item() - 3) < 1e-5


def test_matches_transformers_rwkv_in_both_modes(tmp_path):
    """The peer check: same saved weights, same tokens -> same logits as transformers' implementation.

    Both run fp32 with the same operations in a different order (our kernel vs its Python loop, fused
    addcmul token shift vs two products), so differences are rounding: ~1e-6 relative to the largest logit.
    We allow 1e-5, far below what any real bug (a wrong mix, a missing bonus u, a shifted token) produces.
    """
    hf = random_hf_rwkv(tmp_path / "hf", vocab=301, hidden=48, layers=3)
    tokens = torch.randint(0, 301, (2, 33), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = hf(input_ids=tokens).logits
    ours = load_hf_dir(tmp_path / "hf")
    par, _ = ours(tokens, chunk_size=8)
    rec, _ = ours(tokens, mode="recurrent")
    assert rel_err(par, expected) < 1e-5
    assert rel_err(rec, expected) < 1e-5

    # the same weights written in BlinkDL's .pth naming load to the same model
    pth = tmp_path / "model.pth"
    save_blinkdl_pth(ours, pth)
    raw = torch.load(pth, weights_only=True)
    assert "blocks.0.ln0.weight" in raw and raw["blocks.1.att.time_mix_k"].shape == (1, 1, 48)
    from_pth = load_checkpoint(pth)
    assert rel_err(from_pth(tokens)[0], expected) < 1e-5


def test_hf_state_continues_like_ours(tmp_path):
    """transformers' RWKV state, carried over a split, agrees with our carried state."""
    hf = random_hf_rwkv(tmp_path / "hf", vocab=101, hidden=32, layers=2, seed=3)
    ours = load_hf_dir(tmp_path / "hf")
    tokens = torch.randint(0, 101, (1, 20), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        out1 = hf(input_ids=tokens[:, :12], use_cache=True)
        out2 = hf(input_ids=tokens[:, 12:], state=out1.state, use_cache=True)
    _, state = ours(tokens[:, :12])
    logits, _ = ours(tokens[:, 12:], state)
    assert rel_err(logits, out2.logits) < 1e-5


def test_a_cleared_state_reads_as_empty_in_both_modes():
    """bb = 0 holds no past whatever pp says (the WKV contract of the kernels and the reference): a state with
    bb = 0 and a finite pp gives the empty state's logits, in parallel and in recurrent mode, never NaN."""
    from rwkv_bench.models.rwkv4 import PP

    model = small_model()
    tokens = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(3))
    cleared = model.init_state(2)
    cleared[:, PP] = 120.0
    expected, _ = model(tokens)
    for mode in ("parallel", "recurrent"):
        logits, _ = model(tokens, cleared, mode=mode)
        assert not torch.isnan(logits).any()
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
