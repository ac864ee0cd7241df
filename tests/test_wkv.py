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

from rwkv_bench.errors import UserError
from rwkv_bench.ops import wkv as wkv_ops
from rwkv_bench.ops.wkv_reference import EMPTY_PP, empty_state, wkv_reference


@pytest.fixture(scope="module")
def ext():
    module = wkv_ops.KERNELS.extension("cpu", strict=True)
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


# B x C = 600 and 1: neither a multiple of the CPU kernel's 64-channel block nor of the CUDA block (128)
@pytest.mark.parametrize("B,T,C", [(1, 1, 7), (3, 1, 64), (2, 37, 64), (2, 50, 130), (4, 9, 768), (3, 40, 200),
                                   (1, 30, 1)])
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


def extreme(case, B, T, C):
    w, u, k, v = inputs(B, T, C, seed=5)
    if case == "k_large":
        k = torch.rand(B, T, C) * 60.0                   # e^60 overflows float32 without the running max
    elif case == "k_very_negative":
        k = -torch.rand(B, T, C) * 60.0
    elif case == "w_near_zero":
        w = torch.full((C,), -1e-8)                       # almost no decay: a plain running average
    elif case == "w_huge":
        w = torch.full((C,), -1e4)                        # forgets everything at once
    return w, u, k, v


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("case", ["k_large", "k_very_negative", "w_near_zero", "w_huge"])
def test_extreme_values_stay_finite_and_correct(case, with_state):
    B, T, C = 3, 200, 200
    w, u, k, v = extreme(case, B, T, C)
    state0 = wkv_reference(w, u, *extreme(case, B, 9, C)[2:])[1] if with_state else None
    y, state = wkv_ops.wkv(w, u, k, v, state0)
    assert torch.isfinite(y).all() and torch.isfinite(state).all()
    # k up to 60: the exponents' float32 spacing is 3.8e-6, and aa, bb carry it (see gpu_check.EXTREME_BOUNDS)
    assert_close_to_reference(y, state, w, u, k, v, state0, rtol=1e-4, atol=1e-4 if case != "k_large" else 5e-4)


def cleared_state(B, C, pp=150.0, seed=9):
    """bb = 0 (no past) with a finite pp far above every token's exponent, and an aa that must be ignored."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(B, C, generator=g), torch.zeros(B, C), torch.full((B, C), pp)], dim=1)


@pytest.mark.parametrize("pp", [150.0, 1e30])
def test_a_state_with_bb_zero_is_the_empty_state(pp):
    # exp_poly flushes below e^-87: without the contract the first output would be 0/0 = NaN
    B, T, C = 3, 20, 200
    w, u, k, v = inputs(B, T, C, seed=10)
    y, state = wkv_ops.wkv(w, u, k, v, cleared_state(B, C, pp))
    y_empty, state_empty = wkv_ops.wkv(w, u, k, v)
    torch.testing.assert_close(y, y_empty, rtol=0, atol=0)
    torch.testing.assert_close(state, state_empty, rtol=0, atol=0)
    # exact arithmetic: b = 0 and a = 0, so y_0 = e^(u+k) v / e^(u+k) = v (float64 holds e^-150)
    torch.testing.assert_close(y[:, 0], v[:, 0], rtol=0, atol=0)
    # the reference keeps the same contract (float32 torch would give NaN beyond e^-104)
    y_ref, s_ref = wkv_reference(w, u, k, v, cleared_state(B, C, pp))
    assert torch.isfinite(y_ref).all()
    assert_close_to_reference(y, state, w, u, k, v, cleared_state(B, C, pp))
    # no steps: the state comes back as the empty one
    _, s0 = wkv_ops.wkv(w, u, k[:, :0], v[:, :0], cleared_state(B, C, pp))
    assert (s0[:, 1] == 0).all() and (s0[:, 2] == EMPTY_PP).all()


def test_a_cleared_state_gets_the_empty_states_gradients():
    B, T, C = 2, 15, 70
    w, u, k, v = inputs(B, T, C, seed=11)
    g = torch.Generator().manual_seed(12)
    gy, gs = torch.randn(B, T, C, generator=g), torch.randn(B, 3, C, generator=g)

    def grads(fn, dtype):
        leaves = [t.to(dtype).clone().requires_grad_() for t in (w, u, k, v, cleared_state(B, C))]
        y, s1 = fn(*leaves)
        ((y * gy.to(dtype)).sum() + (s1 * gs.to(dtype)).sum()).backward()
        return [t.grad.double() for t in leaves]

    kernel, exact = grads(wkv_ops.wkv, torch.float32), grads(wkv_reference, torch.float64)
    assert (kernel[4] == 0).all() and (exact[4] == 0).all()      # aa, bb and pp of an empty state: no gradient
    for name, got, want in zip(["w", "u", "k", "v"], kernel, exact):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item(), msg=name)


def strided(x):
    """A non-contiguous view of x's values: transposed storage for 3-D, every other element for 1-D."""
    if x.dim() == 3:
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    return torch.stack([x, torch.zeros_like(x)], dim=-1)[..., 0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_non_contiguous_inputs_forward_backward_and_no_grad(dtype):
    B, T, C = 3, 30, 200
    w, u, k, v = inputs(B, T, C, seed=13)
    k, v = k.to(dtype), v.to(dtype)
    state0 = random_state(B, C)
    g = torch.Generator().manual_seed(14)
    gy = torch.randn(B, T, C, generator=g).to(dtype)

    def run(layout):
        leaves = [layout(t).detach().requires_grad_() for t in (w, u, k, v, state0)]
        y, s1 = wkv_ops.wkv(*leaves)
        (y.float() * layout(gy).float()).sum().backward()
        with torch.no_grad():
            y_ng, s_ng = wkv_ops.wkv(*leaves)
        return [y, s1, y_ng, s_ng, *(t.grad for t in leaves)]

    views = [strided(t) for t in (w, u, k, v, state0)]
    assert not any(t.is_contiguous() for t in views)
    for got, want in zip(run(strided), run(lambda t: t)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    y, state = run(strided)[2:4]
    assert y.dtype == dtype
    tol = {torch.float32: 2e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    assert_close_to_reference(y.float(), state, w, u, k.float(), v.float(), state0, rtol=tol, atol=tol)


def test_reference_gradcheck_float64():
    w, u, k, v = inputs(2, 6, 5, dtype=torch.float64)
    state = random_state(2, 5).double()
    args = [t.clone().requires_grad_() for t in (w, u, k, v, state)]

    def fn(w, u, k, v, s):
        y, s1 = wkv_reference(w, u, k, v, s)
        return y, s1[:, :2]   # pp's gradient is piecewise constant (a max): checked in the kernel test below

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("B,T,C,with_state", [(1, 1, 8, False), (3, 25, 70, True), (2, 60, 64, False),
                                              (3, 20, 200, True), (1, 20, 1, True)])
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
    with pytest.raises(UserError, match="RWKV_BENCH_WKV"):
        wkv_ops.implementation_name("cpu")


def test_failed_build_says_so_once_in_one_plain_line_and_falls_back(monkeypatch, capsys):
    def broken_build(kind):
        raise RuntimeError("Error building extension 'wkv'\n[1/2] c++ ...\nwkv_cpu.cpp:3: error: boom\nmore")

    monkeypatch.setattr(wkv_ops.KERNELS, "_extensions", {})
    monkeypatch.setattr(wkv_ops.KERNELS, "_failures", {})
    monkeypatch.setattr(wkv_ops.KERNELS, "_announced", set())
    monkeypatch.setattr(wkv_ops.KERNELS, "build", broken_build)
    w, u, k, v = inputs(1, 5, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # a line on stderr, not a Python warning
        y, _ = wkv_ops.wkv(w, u, k, v)
        wkv_ops.wkv(w, u, k, v)                          # said once
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "using the PyTorch reference" in lines[0] and "error: boom" in lines[0], lines
    torch.testing.assert_close(y, wkv_reference(w, u, k, v)[0], rtol=0, atol=0)
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
