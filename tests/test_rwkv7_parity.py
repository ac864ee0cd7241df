"""Our RWKV-7 against an implementation we did not write: BlinkDL's `rwkv` pip package (0.8.32, its x070 path,
cpu fp32), on random x070 checkpoints saved in BlinkDL's naming and loaded by both. Logits over 1,000+ tokens,
in sequence and in recurrent mode, with the state carried across calls."""
import os

# the rwkv package reads these at import time; nothing else in the test suite imports it
os.environ["RWKV_V7_ON"] = "1"
os.environ["RWKV_JIT_ON"] = "0"
os.environ["RWKV_CUDA_ON"] = "0"

import pytest  # noqa: E402
import torch  # noqa: E402

from rwkv_bench.models.rwkv7 import RWKV7, RWKV7Config, init_random_  # noqa: E402
from rwkv_bench.models.rwkv7_loaders import model_from_state_dict, save_blinkdl_pth  # noqa: E402
from rwkv_bench.ops import wkv7 as wkv7_ops  # noqa: E402

TOKENS = 1030
SPLIT = 517          # the sequence is fed in two calls, the state carried between them
RTOL = 1e-5          # relative to the largest logit

# one head and several; differing LoRA widths and feed-forward width; layer 0 has no v-LoRA in either
SHAPES = {
    "one-head": RWKV7Config(vocab_size=97, n_layer=3, n_embd=64, decay_lora=8, a_lora=12, v_lora=4, gate_lora=16),
    "three-heads": RWKV7Config(vocab_size=211, n_layer=2, n_embd=192, ffn_dim=320, decay_lora=16, a_lora=8,
                               v_lora=12, gate_lora=24),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: on a shared 2-core machine a second thread only waits for a time slice."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(SHAPES))
def pair(request, tmp_path_factory):
    """(our model loaded from the .pth, the rwkv package's model on the same file, token ids)."""
    from rwkv.model import RWKV, RWKV_x070

    assert RWKV is RWKV_x070, "the rwkv package was imported before RWKV_V7_ON=1 was set"
    config = SHAPES[request.param]
    source = init_random_(RWKV7(config), seed=3)
    path = tmp_path_factory.mktemp(request.param) / "x070.pth"
    save_blinkdl_pth(source, path)
    sd = torch.load(path, weights_only=True)
    assert not any(k.startswith("blocks.0.att.v") and k[-1] in "012" for k in sd)   # BlinkDL's layer 0
    ours = model_from_state_dict(sd)
    theirs = RWKV(model=str(path.with_suffix("")), strategy="cpu fp32")
    tokens = torch.randint(0, config.vocab_size, (TOKENS,), generator=torch.Generator().manual_seed(1))
    return ours, theirs, tokens.tolist()


def assert_logits_close(ours: torch.Tensor, ref: torch.Tensor):
    scale = ref.abs().max().item()
    err = (ours - ref).abs().max().item()
    assert err <= RTOL * scale, f"max |ours - rwkv| = {err:.3g}, {err / scale:.3g} of the largest logit"


def reference_sequence(theirs, tokens):
    state, out = None, []
    for chunk in (tokens[:SPLIT], tokens[SPLIT:]):
        logits, state = theirs.forward(chunk, state, full_output=True)
        out.append(logits.float())
    return torch.cat(out)


def test_sequence_mode_matches_rwkv_package(pair):
    ours, theirs, tokens = pair
    ref = reference_sequence(theirs, tokens)
    ids = torch.tensor([tokens])
    first, state = ours(ids[:, :SPLIT], chunk_size=200)         # chunks inside each call, too
    second, _ = ours(ids[:, SPLIT:], state, chunk_size=256)
    assert_logits_close(torch.cat([first, second], 1)[0], ref)


def test_recurrent_mode_matches_rwkv_package(pair):
    ours, theirs, tokens = pair
    state_ref, state, ref, got = None, None, [], []
    for t in tokens:
        logits, state_ref = theirs.forward([t], state_ref)
        ref.append(logits.float())
        out, state = ours(torch.tensor([[t]]), state, mode="recurrent")
        got.append(out[0, 0])
    assert_logits_close(torch.stack(got), torch.stack(ref))


def test_reference_wkv_matches_rwkv_package(pair, monkeypatch):
    """The pure-torch WKV-7 (not only the kernel) gives the package's logits."""
    monkeypatch.setenv(wkv7_ops.ENV_VAR, "reference")
    ours, theirs, tokens = pair
    ref, _ = theirs.forward(tokens[:300], None, full_output=True)
    got, _ = ours(torch.tensor([tokens[:300]]))
    assert_logits_close(got[0], ref.float())
