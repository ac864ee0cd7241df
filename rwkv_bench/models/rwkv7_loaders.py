"""Load RWKV-7 (x070) weights into our model: BlinkDL `.pth`, `.safetensors` in either naming, and Hugging Face
RWKV-7 directories in fla's `RWKV7ForCausalLM` naming (a key mapping derived from fla's own converter,
utils/convert_from_rwkv7.py; no code from the checkpoint or the hub ever runs).

The shape is read from the tensors: width and vocabulary from `emb.weight`, heads and head size from `r_k`,
LoRA and feed-forward widths from their matrices. A missing or misshapen tensor is one line naming it.
"""
from __future__ import annotations

import re

import torch

from ..errors import UserError
from .rwkv7 import RWKV7, RWKV7Config

# BlinkDL name suffix -> ours. Our LoRAs are modules (w_lora.down / .up); BlinkDL calls them w1 / w2.
LORA = {"1": "down", "2": "up"}
SUPPORTED = "RWKV-4 and RWKV-7 (x070)"


def blinkdl_to_ours(name: str) -> str:
    return re.sub(r"\.att\.([wavg])([12])$", lambda m: f".att.{m.group(1)}_lora.{LORA[m.group(2)]}", name)


def ours_to_blinkdl(name: str) -> str:
    return re.sub(r"\.att\.([wavg])_lora\.(down|up)$",
                  lambda m: f".att.{m.group(1)}{'1' if m.group(2) == 'down' else '2'}", name)


# fla's names (model.layers.3.attn.w_lora.lora.0.weight, ...) -> BlinkDL's; fla's LoRA matrices are nn.Linear
# weights, i.e. transposed, and the bias of the up-projection is BlinkDL's x0.
FLA_TOP = {"model.embeddings.weight": "emb.weight", "model.norm.weight": "ln_out.weight",
           "model.norm.bias": "ln_out.bias", "lm_head.weight": "head.weight"}
FLA_PART = {"attn": "att", "ffn": "ffn", "pre_norm": "ln0", "attn_norm": "ln1", "ffn_norm": "ln2"}
FLA_PROJ = {"r_proj": "receptance", "k_proj": "key", "v_proj": "value", "o_proj": "output", "g_norm": "ln_x"}


def fla_to_blinkdl(name: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor]:
    if name in FLA_TOP:
        return FLA_TOP[name], tensor
    m = re.match(r"model\.layers\.(\d+)\.(\w+)\.(.+)$", name)
    if not m or m.group(2) not in FLA_PART:
        return name, tensor
    layer, part, rest = m.group(1), FLA_PART[m.group(2)], m.group(3)
    lora = re.match(r"([wavg])_lora\.lora\.(0\.weight|2\.weight|2\.bias)$", rest)
    if lora:
        which = {"0.weight": "1", "2.weight": "2", "2.bias": "0"}[lora.group(2)]
        rest = lora.group(1) + which
        tensor = tensor.t() if which != "0" else tensor
    else:
        head, _, tail = rest.partition(".")
        rest = FLA_PROJ.get(head, head) + (f".{tail}" if tail else "")
    return f"blocks.{layer}.{part}.{rest}", tensor


def is_fla_naming(sd: dict) -> bool:
    return any(k.startswith("model.layers.") or k == "model.embeddings.weight" for k in sd)


def detect_version(sd: dict) -> str:
    """"rwkv4" or "rwkv7" from the tensor names (BlinkDL or HF naming); anything else is one line saying what
    was found and what is supported."""
    names = set(sd)
    if is_fla_naming(sd) or (any(k.endswith("att.r_k") for k in names) and any(k.endswith("att.k_k") for k in names)):
        return "rwkv7"
    if any(k.startswith("rwkv.") for k in names):
        return "rwkv4"                      # transformers' RwkvForCausalLM names RWKV-4 only
    has_ln_x = any(k.endswith("att.ln_x.weight") for k in names)
    if any(k.endswith("att.time_first") for k in names) and not has_ln_x:
        return "rwkv4"
    if any(k.endswith(("att.time_maa_x", "att.time_maa_w1")) for k in names):
        found = "an RWKV-6 checkpoint"
    elif has_ln_x or any(k.endswith("att.time_faaaa") for k in names):
        found = "an RWKV-5 checkpoint"
    elif "emb.weight" in names or any(k.startswith("blocks.") for k in names):
        found = "an RWKV checkpoint of an unknown version (neither att.time_first nor att.r_k)"
    else:
        example = f" (e.g. {sorted(names)[0]!r})" if names else ""
        raise UserError(f"not an RWKV-4 checkpoint nor an RWKV-7 one: it holds no RWKV tensors{example}; "
                        f"supported: {SUPPORTED}")
    raise UserError(f"{found}: not supported; supported: {SUPPORTED}")


def config_from_state_dict(sd: dict) -> RWKV7Config:
    """The architecture from tensor shapes (BlinkDL names)."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in sd:
            raise UserError(f"RWKV-7 checkpoint lacks tensor {name!r}")
        return tuple(sd[name].shape)

    vocab, C = shape("emb.weight")
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    r_k = shape("blocks.0.att.r_k")
    head_size = r_k[-1]
    if len(r_k) != 2 or C % head_size:
        raise UserError(f"RWKV-7 width {C} (emb.weight) is not divisible by the head size {head_size} "
                        f"(blocks.0.att.r_k has shape {r_k})")
    if r_k[0] != C // head_size:
        raise UserError(f"blocks.0.att.r_k has shape {r_k}; expected ({C // head_size}, {head_size}) for width {C}")
    v_lora = shape("blocks.1.att.v1")[-1] if "blocks.1.att.v1" in sd else 0
    return RWKV7Config(vocab_size=vocab, n_layer=max(layers) + 1, n_embd=C, head_size=head_size,
                       ffn_dim=shape("blocks.0.ffn.key.weight")[0], decay_lora=shape("blocks.0.att.w1")[-1],
                       a_lora=shape("blocks.0.att.a1")[-1], v_lora=v_lora, gate_lora=shape("blocks.0.att.g1")[-1])


def model_from_state_dict(sd: dict, dtype=torch.float32) -> RWKV7:
    """Our model from a BlinkDL-named state dict; every tensor our model has must be there, in its size."""
    if is_fla_naming(sd):
        sd = dict(fla_to_blinkdl(k, v) for k, v in sd.items())
    config = config_from_state_dict(sd)
    ours = {blinkdl_to_ours(k): v for k, v in sd.items() if not re.match(r"blocks\.0\.att\.v[012]$", k)}
    return RWKV7(config).load_checkpoint(ours, dtype, file_name=ours_to_blinkdl)


def blinkdl_state_dict(model: RWKV7) -> dict:
    """Our weights in BlinkDL's x070 naming and shapes (what RWKV-LM saves and the `rwkv` package loads)."""
    out = {}
    for name, t in model.state_dict().items():
        leaf = name.rsplit(".", 1)[-1]
        if ".att." in name and (leaf.startswith("x_") or leaf in ("w0", "a0", "v0", "k_k", "k_a")) or \
                name.endswith("ffn.x_k"):
            t = t.reshape(1, 1, -1)
        out[ours_to_blinkdl(name)] = t.detach().clone().contiguous()
    return out


def save_blinkdl_pth(model: RWKV7, path) -> None:
    torch.save(blinkdl_state_dict(model), path)
