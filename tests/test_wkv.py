"""The compiled WKV kernel against the PyTorch reference: values, extremes, gradients, state, dispatch.

The CPU kernel runs the arithmetic of kernels/wkv_step.h, the header the CUDA kernel includes too, so these
tests check the step functions the GPU runs. Tolerances: the kernel's exp is a polynomial accurate to
~1.5 float32 ulp (checked below) and its state update rounds differently from torch's, so float32 results
agree with a float64 reference to a few 1e-6 relative per step; errors do not grow along the sequence
because the recurrence is a decaying average (the output is a convex combination of past v's).
"""
import warnings

import pytest
import torch

from rwkv_bench.ops import wkv as wkv_ops
from rwkv_bench.ops.wkv_reference import EMPTY_PP, empty_state, wkv_reference


@pytest.fixture(scope="module")
def ext():
    module = wkv_ops._extension("cpu", strict=True)
    assert module.backend == "cpu"
    return module


def inputs(B, T, C, seed=0, k_scale=1.0, decay_scale=2.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = -torch.exp(torch.randn(C, generator=g) * decay_scale)
    u = torch.randn(C, generator=g)
    k = torch.randn(B, T, C, generator=g) * k_scale
    v = torch.randn(B, T, C, generator=g)
    return w.to(dtype), u.to(dtype), k.to(dtype), v.to(dtype)


def random_state(B, C, seed=1):
    """A state as a real prefix leaves it: aa, bb of a running average (bb > 0), pp a log scale."""
    w, u, k, v = inputs(B, 7, C, seed=seed)
    return wkv_reference(w, u, k, v)[1]


def reference64(w, u, k, v, state=None):
    y, s = wkv_reference(w.double(), u.double(), k.double(), v.double(), None if state is None else state.double())
    return y, s


def assert_close_to_reference(y, state, w, u, k, v, state0=None, rtol=2e-5, atol=2e-5):
    y_ref, s_ref = reference64(w, u, k, v, state0)
    torch.testing.assert_close(y.double(), y_ref, rtol=rtol, atol=atol)
    # aa, bb relative to their scale; pp (a max of sums of exponents) to float32 rounding of its size
    torch.testing.assert_close(state.double(), s_ref, rtol=rtol, atol=atol)


def test_polynomial_exp_is_accurate_to_two_ulp(ext):
    x = torch.linspace(-87.0, 88.0, 1_000_001)
    exact = torch.exp(x.double())
    rel = ((ext.exp_poly(x).double() - exact) / exact).abs().max().item()
    assert rel < 2 * 2.0 ** -24, rel
    special = ext.exp_poly(torch.tensor([0.0, EMPTY_PP, float("-inf"), -100.0, 200.0]))
    assert special[0].item() == 1.0                      # exp(0) is exact: max-stabilised pairs rely on it
    assert special[1].item() == special[2].item() == special[3].item() == 0.0
    assert torch.isfinite(special[4])                    # saturates instead of overflowing


@pytest.mark.parametrize("B,T,C", [(1, 1, 7), (3, 1, 64), (2, 37, 64), (2, 50, 130), (4, 9, 768)])
@pytest.mark.parametrize("with_state", [False, True])
def test_forward_matches_reference(B, T, C, with_state):
    w, u, k, v = inputs(B, T, C)
    state0 = random_state(B, C) if with_state else None
    y, state = wkv_ops.wkv(w, u, k, v, state0)
    assert y.shape == (B, T, C) and y.dtype == torch.float32 and state.shape == (B, 3, C)
    assert_close_to_reference(y, state, w, u, k, v, state0)


def test_long_sequence_matches_reference():
    w, u, k, v = inputs(2, 3000, 80, seed=3)
    y, state = wkv_ops.wkv(w, u, k, v)
    assert_close_to_reference(y, state, w, u, k, v)


def test_state_carries_across_calls():
    w, u, k, v = inputs(2, 40, 96, seed=4)
    y_full, s_full = wkv_ops.wkv(w, u, k, v)
    y1, s1 = wkv_ops.wkv(w, u, k[:, :17], v[:, :17])
    y2, s2 = wkv_ops.wkv(w, u, k[:, 17:], v[:, 17:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_full, rtol=0, atol=0)
    torch.testing.assert_close(s2, s_full, rtol=0, atol=0)


@pytest.mark.parametrize("case", ["k_large", "k_very_negative", "w_near_zero", "w_huge"])
def test_extreme_values_stay_finite_and_correct(case):
    B, T, C = 2, 200, 64
    w, u, k, v = inputs(B, T, C, seed=5)
    if case == "k_large":
        k = torch.rand(B, T, C) * 60.0                   # e^60 overflows float32 without the running max
    elif case == "k_very_negative":
        k = -torch.rand(B, T, C) * 60.0
    elif case == "w_near_zero":
        w = torch.full((C,), -1e-8)                       # almost no decay: a plain running average
    else:
        w = torch.full((C,), -1e4)                        # forgets everything at once
    y, state = wkv_ops.wkv(w, u, k, v)
    assert torch.isfinite(y).all() and torch.isfinite(state).all()
    assert_close_to_reference(y, state, w, u, k, v, rtol=1e-4, atol=1e-4)


def test_reference_gradcheck_float64():
    w, u, k, v = inputs(2, 6, 5, dtype=torch.float64)
    state = random_state(2, 5).double()
    args = [t.clone().requires_grad_() for t in (w, u, k, v, state)]

    def fn(w, u, k, v, s):
        y, s1 = wkv_reference(w, u, k, v, s)
        return y, s1[:, :2]   # pp's gradient is piecewise constant (a max): checked in the kernel test below

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("B,T,C,with_state", [(1, 1, 8, False), (3, 25, 70, True), (2, 60, 64, False)])
def test_kernel_gradients_match_autograd_through_reference(B, T, C, with_state):
    w, u, k, v = inputs(B, T, C, seed=6, k_scale=3.0)
    state0 = random_state(B, C) if with_state else empty_state(B, C)
    g = torch.Generator().manual_seed(7)
    gy = torch.randn(B, T, C, generator=g)
    gs = torch.randn(B, 3, C, generator=g)

    def grads(fn, dtype):
        leaves = [t.to(dtype).clone().requires_grad_() for t in (w, u, k, v, state0)]
        y, s1 = fn(*leaves)
        # the loss reaches the outputs and every row of the returned state, pp included
        loss = (y * gy.to(dtype)).sum() + (s1 * gs.to(dtype)).sum()
        loss.backward()
        return [t.grad.double() for t in leaves]

    kernel = grads(wkv_ops.wkv, torch.float32)
    exact = grads(wkv_reference, torch.float64)
    for name, got, want in zip(["w", "u", "k", "v", "state"], kernel, exact):
        if name == "state" and not with_state:
            want = want.clone()
            got = got.clone()
            # empty state: pp = -1e38 loses to every token, so only aa, bb's gradients are meaningful
            got[:, 2], want[:, 2] = 0, 0
        scale = want.abs().max().clamp_min(1.0)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale.item(), msg=f"gradient of {name}")


def test_gradient_of_w_and_u_is_summed_over_the_batch():
    w, u, k, v = inputs(3, 10, 16, seed=8)
    leaves = [t.clone().requires_grad_() for t in (w, u)]
    wkv_ops.wkv(*leaves, k, v)[0].sum().backward()
    per_sequence = []
    for b in range(3):
        ws = [t.clone().requires_grad_() for t in (w, u)]
        wkv_ops.wkv(*ws, k[b:b + 1], v[b:b + 1])[0].sum().backward()
        per_sequence.append([t.grad for t in ws])
    for i in range(2):
        torch.testing.assert_close(leaves[i].grad, sum(p[i] for p in per_sequence), rtol=1e-5, atol=1e-6)


def test_other_dtypes_are_cast_around_the_float32_kernel():
    w, u, k, v = inputs(2, 12, 32)
    y, state = wkv_ops.wkv(w, u, k.bfloat16(), v.bfloat16())
    assert y.dtype == torch.bfloat16 and state.dtype == torch.float32
    y_ref, _ = wkv_reference(w, u, k.bfloat16().float(), v.bfloat16().float())
    torch.testing.assert_close(y.float(), y_ref, rtol=1e-2, atol=1e-2)   # bf16 has 8 bits of mantissa


def test_environment_variable_forces_the_reference(monkeypatch):
    assert wkv_ops.implementation_name("cpu") == "cpu-kernel"
    monkeypatch.setenv(wkv_ops.ENV_VAR, "reference")
    assert wkv_ops.implementation_name("cpu") == "reference"
    monkeypatch.setenv(wkv_ops.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="RWKV_BENCH_WKV"):
        wkv_ops.implementation_name("cpu")


def test_failed_build_warns_once_in_one_line_and_falls_back(monkeypatch):
    def broken_build(kind):
        raise RuntimeError("Error building extension 'wkv'\n[1/2] c++ ...\nwkv_cpu.cpp:3: error: boom\nmore")

    monkeypatch.setattr(wkv_ops, "_extensions", {})
    monkeypatch.setattr(wkv_ops, "_failures", {})
    monkeypatch.setattr(wkv_ops, "_build", broken_build)
    w, u, k, v = inputs(1, 5, 8)
    with pytest.warns(RuntimeWarning) as caught:
        y, _ = wkv_ops.wkv(w, u, k, v)
    message = str(caught[0].message)
    assert "\n" not in message and "using the PyTorch reference" in message and "error: boom" in message
    torch.testing.assert_close(y, wkv_reference(w, u, k, v)[0], rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # a second call does not warn again
        wkv_ops.wkv(w, u, k, v)
    monkeypatch.setenv(wkv_ops.ENV_VAR, "kernel")
    with pytest.raises(RuntimeError, match="unavailable"):
        wkv_ops.wkv(w, u, k, v)


def test_small_work_stays_on_one_thread_and_threads_never_exceed_torchs(ext):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        threads = torch.get_num_threads()
        assert ext.chunks_for(1, 1, 768) == 1                # a decode step: no parallel region at all
        assert ext.chunks_for(8, 1, 768) == 1
        assert ext.chunks_for(1, 256, 768) == 1              # ~0.2 ms of work: not worth waking a thread
        assert ext.chunks_for(1, 4096, 768) == min(2, threads)
        assert ext.chunks_for(64, 4096, 768) <= threads
        torch.set_num_threads(1)
        assert ext.chunks_for(64, 4096, 768) == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.timeout(180)
def test_reference_backward_is_linear_in_T():
    # autograd through k[:, t] slices would cost O(T^2); unbind keeps a 20,000-step backward quick
    w, u, k, v = (t.requires_grad_() for t in inputs(1, 20_000, 4))
    y, state = wkv_reference(w, u, k, v)
    (y.sum() + state[:, :2].sum()).backward()
    assert torch.isfinite(k.grad).all() and k.grad.abs().sum() > 0
