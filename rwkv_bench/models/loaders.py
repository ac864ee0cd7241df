"""Load RWKV weights into our models: BlinkDL `.pth`, `.safetensors`, Hugging Face `RwkvForCausalLM` dirs (RWKV-4)
and RWKV-7 directories in fla's naming (rwkv7_loaders.py). The version is read from the tensors themselves.

Everything goes through `torch.load(weights_only=True)` or safetensors: a checkpoint can never run code.
The model's shape is read from the weights themselves (or the HF config), so any size loads.
"""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import torch

from ..errors import UserError
from .rwkv4 import RWKV4, RWKVConfig

# Hugging Face name fragment -> BlinkDL name fragment (ours), applied in order.
HF_TO_BLINKDL = [
    (r"^rwkv\.embeddings\.", "emb."),
    (r"^rwkv\.ln_out\.", "ln_out."),
    (r"^rwkv\.blocks\.", "blocks."),
    (r"\.pre_ln\.", ".ln0."),
    (r"\.attention\.", ".att."),
    (r"\.feed_forward\.", ".ffn."),
    (r"\.time_mix_key$", ".time_mix_k"),
    (r"\.time_mix_value$", ".time_mix_v"),
    (r"\.time_mix_receptance$", ".time_mix_r"),
]


def hf_to_blinkdl_name(name: str) -> str:
    for pattern, repl in HF_TO_BLINKDL:
        name = re.sub(pattern, repl, name)
    return name


def blinkdl_to_hf_state_dict(sd: dict) -> dict:
    """Our (BlinkDL) names -> transformers' RwkvForCausalLM names; used by tests and the peer backend."""
    out = {}
    for name, tensor in sd.items():
        hf = name
        for pattern, repl in [(r"^emb\.", "rwkv.embeddings."), (r"^ln_out\.", "rwkv.ln_out."),
                              (r"^blocks\.", "rwkv.blocks."), (r"\.ln0\.", ".pre_ln."),
                              (r"\.att\.", ".attention."), (r"\.ffn\.", ".feed_forward."),
                              (r"\.time_mix_k$", ".time_mix_key"), (r"\.time_mix_v$", ".time_mix_value"),
                              (r"\.time_mix_r$", ".time_mix_receptance")]:
            hf = re.sub(pattern, repl, hf)
        if "time_mix" in hf:
            tensor = tensor.reshape(1, 1, -1)
        out[hf] = tensor
    return out


def config_from_state_dict(sd: dict) -> RWKVConfig:
    """Infer the architecture from tensor shapes (BlinkDL names)."""
    try:
        vocab, C = sd["emb.weight"].shape
        layers = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
        ffn_dim = sd["blocks.0.ffn.key.weight"].shape[0]
    except KeyError as exc:
        raise UserError(f"not an RWKV-4 checkpoint: missing tensor {exc.args[0]!r}") from None
    return RWKVConfig(vocab_size=vocab, n_layer=max(layers) + 1, n_embd=C, ffn_dim=ffn_dim)


def model_from_state_dict(sd: dict, config: RWKVConfig | None = None, dtype=torch.float32) -> RWKV4:
    """Build our model from a BlinkDL-named state dict; every expected tensor must be present."""
    config = config or config_from_state_dict(sd)
    return RWKV4(config).load_checkpoint(sd, dtype)


def read_tensors(path: Path) -> dict:
    """A .pth (weights_only) or .safetensors file -> dict of tensors, with one-line errors."""
    if not path.exists():
        raise UserError(f"no such file: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        # mmap needs the zip format of torch >= 1.6; a legacy (pickle-only) file loads without it
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # noqa: BLE001 - any failure to parse is a corrupt/unsupported file
        raise UserError(f"cannot read checkpoint {path}: {load_failure(exc)}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"cannot read checkpoint {path}: not a dict of tensors")
    return sd


def load_failure(exc: BaseException) -> str:
    """Why torch.load refused a file, in a few words. torch's own text advises weights_only=False, which would
    let the file run code: never repeated here."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    if "Weights only load failed" not in text:
        return (text.splitlines()[0] if text else type(exc).__name__)[:200]
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"it holds a Python object ({found.group(1)}), not only tensors, and such objects are never "
                "unpickled: save a plain state_dict of tensors")
    detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    return f"not a PyTorch checkpoint of tensors, or a corrupt one ({detail.group(1).strip() if detail else text[:80]})"


def load_checkpoint(path: str | Path, dtype=torch.float32):
    """A BlinkDL `.pth` or a `.safetensors` file in either naming: our RWKV-4 or RWKV-7, as the tensors say."""
    from . import rwkv7_loaders

    sd = read_tensors(Path(path))
    if rwkv7_loaders.detect_version(sd) == "rwkv7":
        return rwkv7_loaders.model_from_state_dict(sd, dtype=dtype)
    if any(k.startswith("rwkv.") for k in sd):
        sd = {hf_to_blinkdl_name(k): v for k, v in sd.items()}
    return model_from_state_dict(sd, dtype=dtype)


def load_hf_dir(path: str | Path, dtype=torch.float32):
    """A Hugging Face RwkvForCausalLM directory (config.json + safetensors or bin shards), or an RWKV-7 one in
    fla's RWKV7ForCausalLM naming (its config's model_type starts with "rwkv7")."""
    path = Path(path)
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path / 'config.json'}: {exc}") from None
    if is_rwkv7_config(cfg):
        from . import rwkv7_loaders

        sd = read_weight_files(path)
        if "lm_head.weight" not in sd and cfg.get("tie_word_embeddings"):
            sd["lm_head.weight"] = sd["model.embeddings.weight"]
        rwkv7_loaders.detect_version(sd)
        return rwkv7_loaders.model_from_state_dict(sd, dtype=dtype)
    if cfg.get("attention_hidden_size") not in (None, cfg["hidden_size"]):
        raise UserError("RWKV-4 with attention_hidden_size != hidden_size is not supported")
    config = RWKVConfig(vocab_size=cfg["vocab_size"], n_layer=cfg["num_hidden_layers"], n_embd=cfg["hidden_size"],
                        ffn_dim=cfg.get("intermediate_size") or 0, layer_norm_eps=cfg.get("layer_norm_epsilon", 1e-5))
    sd = {hf_to_blinkdl_name(k): v for k, v in read_weight_files(path).items()}
    if "head.weight" not in sd and cfg.get("tie_word_embeddings"):
        sd["head.weight"] = sd["emb.weight"]
    return model_from_state_dict(sd, config, dtype=dtype)


def is_rwkv7_config(cfg: dict) -> bool:
    """fla names RWKV-7's model_type "rwkv7" (or "rwkv7_fla" in later versions)."""
    return str(cfg.get("model_type", "")).startswith("rwkv7")


def read_weight_files(path: Path) -> dict:
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise UserError(f"{path} has a config.json but no *.safetensors or pytorch_model*.bin weights")
    sd = {}
    for f in files:
        sd.update(read_tensors(f))
    return sd


def save_blinkdl_pth(model: RWKV4, path: str | Path) -> None:
    """Write our weights in BlinkDL's format (time_mix as (1, 1, C))."""
    sd = {k: (v.reshape(1, 1, -1) if "time_mix" in k else v).clone() for k, v in model.state_dict().items()}
    torch.save(sd, path)
