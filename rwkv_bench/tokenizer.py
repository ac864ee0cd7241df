"""Tokenizers: the GPT-NeoX-20B one for RWKV-4 Pile models and presets, or any HF tokenizer.

Lookup for RWKV checkpoints without a tokenizer of their own: `--tokenizer` (a tokenizer.json file, a
directory, or a hub id), then $RWKV_BENCH_TOKENIZER, then `../shared/tokenizers/20B_tokenizer.json`
beside a source checkout, then the hub id EleutherAI/gpt-neox-20b (needs the network once).
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

NEOX_HUB_ID = "EleutherAI/gpt-neox-20b"
REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_NEOX = REPO_ROOT.parent / "shared" / "tokenizers" / "20B_tokenizer.json"


class Tokenizer:
    """The two calls every backend needs, over either a `tokenizers.Tokenizer` or a transformers one."""

    def __init__(self, impl, name: str):
        self.impl = impl
        self.name = name

    def encode(self, text: str) -> list[int]:
        if hasattr(self.impl, "encode_batch"):  # tokenizers.Tokenizer
            return self.impl.encode(text, add_special_tokens=False).ids
        return self.impl(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.impl.decode(ids)


def neox_tokenizer(spec: str | None = None) -> Tokenizer:
    """The GPT-NeoX-20B tokenizer (or the one `spec` names), found as the module docstring says."""
    spec = spec or os.environ.get("RWKV_BENCH_TOKENIZER")
    if spec is None and SHARED_NEOX.is_file():
        spec = str(SHARED_NEOX)
    return load_tokenizer(spec or NEOX_HUB_ID)


def load_tokenizer(spec: str) -> Tokenizer:
    path = Path(spec).expanduser()
    try:
        if path.is_file():
            from tokenizers import Tokenizer as RawTokenizer

            return Tokenizer(RawTokenizer.from_file(str(path)), str(path))
        from transformers import AutoTokenizer

        return Tokenizer(AutoTokenizer.from_pretrained(spec), spec)
    except Exception as exc:  # noqa: BLE001 - offline hub misses, corrupt files
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load tokenizer {spec!r} ({msg}); pass --tokenizer with a tokenizer.json "
                        "file or a local directory") from None
