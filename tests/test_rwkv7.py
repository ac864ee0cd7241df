"""Our RWKV-7 on its own terms: sequence and recurrent mode agree, chunking and batching change nothing, ragged rows
keep their own states, the state is float32 and as big as the interface says; checkpoints load in every naming
we support, and everything else is one line."""
import json
import os

import pytest
import torch

from forked_cli import run_forked
from rwkv_bench.errors import UserError
from rwkv_bench.models import loaders
from rwkv_bench.models.rwkv7 import DECAY_SCALE, RWKV7, RWKV7Config, init_random_, init_x070_
from rwkv_bench.models.rwkv7_loaders import blinkdl_state_dict, detect_version, model_from_state_dict

CONFIG = RWKV7Config(vocab_size=101, n_layer=3, n_embd=128, decay_lora=16, a_lora=8, v_lora=12, gate_lora=24)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: on a shared 2-core machine a second thread only waits for a time slice."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return init_random_(RWKV7(CONFIG), seed=5).eval()


def ids(B, T, seed=0):
    return torch.randint(0, CONFIG.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def close(a, b, rel=1e-5):
    assert (a - b).abs().max() <= rel * b.abs().max(), float((a - b).abs().max())


def test_sequence_and_recurrent_modes_agree(model):
    tokens = ids(2, 40)
    seq, s1 = model(tokens)
    rec, s2 = model(tokens, mode="recurrent")
    close(rec, seq)
    close(s2, s1)


def test_chunking_and_state_carrying_change_nothing(model):
    tokens = ids(1, 70, seed=1)
    whole, s_whole = model(tokens, chunk_size=1024)
    chunked, s_chunked = model(tokens, chunk_size=16)
    first, s = model(tokens[:, :33])
    second, s_split = model(tokens[:, 33:], s)
    close(chunked, whole)
    close(torch.cat([first, second], 1), whole)
    close(s_split, s_whole)
    close(s_chunked, s_whole)
    assert torch.equal(model.advance(tokens, chunk_size=16), s_chunked)


def test_rows_of_a_batch_are_independent(model):
    tokens = ids(3, 25, seed=2)
    batch, state = model(tokens)
    for b in range(3):
        alone, s_alone = model(tokens[b:b + 1])
        close(batch[b:b + 1], alone)
        close(model.select_rows(state, torch.tensor([b])), s_alone)


def test_ragged_rows_keep_the_state_of_their_own_tokens(model):
    """Right-padded rows of different lengths in one pass: each row's state is the one its own tokens give, and
    its outputs at real positions are unchanged; padding (any token) reaches nothing."""
    tokens = ids(3, 12, seed=3)
    lengths = torch.tensor([12, 5, 9])
    padded = tokens.clone()
    padded[1, 5:] = 7
    state = model.init_state(3)
    hidden = model.hidden(padded, state, recurrent=False, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        s_b = model.init_state(1)
        h_b = model.hidden(tokens[b:b + 1, :n], s_b, recurrent=False)
        close(hidden[b:b + 1, :n], h_b)
        close(state[:, b:b + 1], s_b)


def test_state_is_float32_with_the_documented_size_and_rows():
    config = RWKV7Config(vocab_size=50, n_layer=2, n_embd=128)
    m = init_x070_(RWKV7(config), torch.Generator().manual_seed(0)).to(torch.bfloat16)
    state = m.init_state(3)
    assert state.dtype == torch.float32 and state.shape == (2, 3, 128 * 66)
    assert m.state_bytes(1) == 128 * (64 + 2) * 2 * 4
    logits, new_state = m(torch.tensor([[1, 2, 3]]))
    assert new_state.dtype == torch.float32 and logits.dtype == torch.float32
    # put / cat rows along the batch dimension
    a, b = m.init_state(1), torch.ones_like(m.init_state(1))
    both = m.cat_rows([a, b])
    assert both.shape[1] == 2 and torch.equal(m.select_rows(both, torch.tensor([1])), b)
    m.put_rows(both, torch.tensor([0]), b)
    assert torch.equal(both[:, 0], b[:, 0])


def test_bfloat16_weights_follow_float32(model):
    tokens = ids(1, 30, seed=4)
    ref, _ = model(tokens)
    low = init_random_(RWKV7(CONFIG), seed=5).to(torch.bfloat16).eval()
    got, state = low(tokens)
    assert state.dtype == torch.float32
    assert (got - ref).abs().max() < 0.1 * ref.abs().max()


@torch.no_grad()
def test_x070_init_follows_rwkv_lm():
    m = init_x070_(RWKV7(RWKV7Config(vocab_size=300, n_layer=4, n_embd=128)), torch.Generator().manual_seed(0))
    assert not hasattr(m.blocks[0].att, "v0") and hasattr(m.blocks[1].att, "v0")
    assert float(m.emb.weight.abs().max()) <= 1e-4
    assert all(float(b.att.output.weight.abs().max()) == 0 and float(b.ffn.value.weight.abs().max()) == 0
               for b in m.blocks)
    decay = torch.exp(-DECAY_SCALE * torch.sigmoid(m.blocks[0].att.w0))
    assert 0.54 < float(decay.min()) and float(decay.max()) < 1
    # the head's rows have norm ~0.5 (gain 0.5 sqrt(V / C) spread over V rows of a C-wide orthogonal matrix)
    assert 0.4 < float(m.head.weight.norm(dim=1).mean()) < 0.6
    # a fresh model predicts close to uniformly
    logits, _ = m(torch.tensor([[1, 2, 3]]))
    assert float(logits.std()) < 2.0


# ---- loading ----

def to_fla(sd: dict) -> dict:
    """BlinkDL names -> fla's RWKV7ForCausalLM names, written from fla's utils/convert_from_rwkv7.py mapping."""
    out = {}
    top = {"emb.weight": "model.embeddings.weight", "ln_out.weight": "model.norm.weight",
           "ln_out.bias": "model.norm.bias", "head.weight": "lm_head.weight"}
    part = {"att": "attn", "ffn": "ffn", "ln0": "pre_norm", "ln1": "attn_norm", "ln2": "ffn_norm"}
    proj = {"receptance": "r_proj", "key": "k_proj", "value": "v_proj", "output": "o_proj", "ln_x": "g_norm"}
    for name, t in sd.items():
        if name in top:
            out[top[name]] = t
            continue
        _, layer, p, rest = name.split(".", 3)
        head = rest.split(".")[0]
        if p == "att" and len(head) == 2 and head[0] in "wavg" and head[1] in "012":
            kind, num = head
            rest = f"{kind}_lora.lora." + {"0": "2.bias", "1": "0.weight", "2": "2.weight"}[num]
            t = t.t().contiguous() if num != "0" else t.reshape(-1)
        elif p == "att" and head in proj:
            rest = proj[head] + rest[len(head):]
        elif p == "att" and head in ("k_k", "k_a"):
            t = t.reshape(-1)
        out[f"model.layers.{layer}.{part[p]}.{rest}"] = t
    return out


@pytest.fixture(scope="module")
def blinkdl(model):
    return blinkdl_state_dict(model)


def same_logits(loaded, model):
    tokens = ids(1, 20, seed=6)
    close(loaded(tokens)[0], model(tokens)[0], rel=1e-6)


def test_pth_and_safetensors_in_blinkdl_naming(model, blinkdl, tmp_path):
    from safetensors.torch import save_file

    assert blinkdl["blocks.0.att.x_r"].shape == (1, 1, CONFIG.n_embd)
    assert "blocks.0.att.v1" not in blinkdl and blinkdl["blocks.1.att.v1"].shape == (CONFIG.n_embd, 12)
    torch.save(blinkdl, tmp_path / "m.pth")
    save_file(blinkdl, tmp_path / "m.safetensors")
    for name in ("m.pth", "m.safetensors"):
        loaded = loaders.load_checkpoint(tmp_path / name)
        assert isinstance(loaded, RWKV7) and loaded.config.decay_lora == 16 and loaded.config.v_lora == 12
        same_logits(loaded, model)


def test_layer_0_value_lora_in_a_file_is_ignored(model, blinkdl):
    """Some files carry an unused blocks.0.att.v0/v1/v2 (RWKV-LM's training model has them): ignored."""
    sd = dict(blinkdl, **{"blocks.0.att.v0": torch.zeros(1, 1, 128), "blocks.0.att.v1": torch.zeros(128, 12),
                          "blocks.0.att.v2": torch.zeros(12, 128)})
    same_logits(model_from_state_dict(sd), model)


def test_hugging_face_directory_in_fla_naming(model, blinkdl, tmp_path):
    from safetensors.torch import save_file

    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "rwkv7", "hidden_size": 128, "num_hidden_layers": 3,
                                               "vocab_size": 101, "head_dim": 64}))
    save_file(to_fla(blinkdl), d / "model.safetensors")
    loaded = loaders.load_hf_dir(d)
    assert isinstance(loaded, RWKV7)
    same_logits(loaded, model)
    # and the same tensors in one safetensors file, without the directory
    loaded = loaders.load_checkpoint(d / "model.safetensors")
    same_logits(loaded, model)


@pytest.mark.parametrize("case,message", [
    ("rwkv6", "RWKV-6 checkpoint: not supported; supported: RWKV-4 and RWKV-7"),
    ("rwkv5", "RWKV-5 checkpoint: not supported"),
    ("no-rwkv", "holds no RWKV tensors"),
    ("missing", "lacks 1 tensor(s), e.g. 'blocks.2.att.a1'"),
    ("misshapen", "'blocks.1.ffn.value.weight' has shape (512, 100)"),
    ("width", "width 100 (emb.weight) is not divisible by the head size 64"),
])
def test_bad_checkpoints_are_one_line(blinkdl, case, message):
    sd = dict(blinkdl)
    if case == "rwkv6":
        sd = {"emb.weight": torch.zeros(4, 64), "blocks.0.att.time_maa_x": torch.zeros(1, 1, 64),
              "blocks.0.att.time_faaaa": torch.zeros(1, 64), "blocks.0.att.ln_x.weight": torch.zeros(64)}
    elif case == "rwkv5":
        sd = {"emb.weight": torch.zeros(4, 64), "blocks.0.att.time_faaaa": torch.zeros(1, 64),
              "blocks.0.att.ln_x.weight": torch.zeros(64)}
    elif case == "no-rwkv":
        sd = {"weight": torch.zeros(3)}
    elif case == "missing":
        del sd["blocks.2.att.a1"]
    elif case == "misshapen":
        sd["blocks.1.ffn.value.weight"] = torch.zeros(512, 100)
    elif case == "width":
        sd["emb.weight"] = torch.zeros(101, 100)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        detect_version(sd)
        model_from_state_dict(sd)
    assert "\n" not in str(info.value)


def test_rwkv4_files_still_load_as_rwkv4(tmp_path):
    from rwkv_bench.models.rwkv4 import RWKV4, RWKVConfig

    m = RWKV4(RWKVConfig(vocab_size=50, n_layer=1, n_embd=32))
    loaders.save_blinkdl_pth(m, tmp_path / "r4.pth")
    assert detect_version(torch.load(tmp_path / "r4.pth")) == "rwkv4"
    assert isinstance(loaders.load_checkpoint(tmp_path / "r4.pth"), RWKV4)


@pytest.mark.slow
def test_truncated_and_v6_files_exit_2_with_one_line(blinkdl, tmp_path):
    """The command line: a truncated x070 file and an RWKV-6 one are one line on stderr and exit code 2."""
    torch.save(blinkdl, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[:len(data) // 2])
    torch.save({"emb.weight": torch.zeros(4, 64), "blocks.0.att.time_maa_x": torch.zeros(1, 1, 64),
                "blocks.0.att.ln_x.weight": torch.zeros(64)}, tmp_path / "v6.pth")
    (tmp_path / "t.txt").write_text("hello world\n")
    cases = (("truncated.pth", "cannot read checkpoint"), ("v6.pth", "RWKV-6"))
    # both through the installed console script, side by side, forked from one imported process
    runs = run_forked([["score", "-m", str(tmp_path / name), "-i", str(tmp_path / "t.txt")] for name, _ in cases],
                      tmp_path, dict(os.environ))
    for (_, expected), (code, _, err, _) in zip(cases, runs):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and expected in lines[0], err[-2000:]
