"""Tokenizers: the GPT-NeoX-20B one for RWKV-4 Pile models and presets, or any HF tokenizer.

The GPT-NeoX-20B tokenizer ships inside the package (rwkv_bench/data/20B_tokenizer.json.gz, gzipped: 0.6 MB
instead of 2.4; Apache-2.0, see
data/NOTICE.md), so presets and RWKV checkpoints without a tokenizer of their own run offline.
`--tokenizer` (a tokenizer.json file, a directory, or a hub id) or $RWKV_BENCH_TOKENIZER replace it for
those models only: a model that has a tokenizer of its own always keeps it.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

NEOX_TOKENIZER_FILE = Path(__file__).resolve().parent / "data" / "20B_tokenizer.json.gz"


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
    """The tokenizer of a model that has none: `spec`, else $RWKV_BENCH_TOKENIZER, else the shipped NeoX one."""
    if spec:
        return load_tokenizer(spec)
    if os.environ.get("RWKV_BENCH_TOKENIZER"):
        return load_tokenizer(os.environ["RWKV_BENCH_TOKENIZER"], "$RWKV_BENCH_TOKENIZER")
    return load_tokenizer(str(NEOX_TOKENIZER_FILE))


def looks_like_path(spec: str) -> bool:
    """A file or folder name, not a hub id ('org/name' or 'name'): a path prefix, more than one '/', a
    backslash, or a tokenizer file's suffix."""
    return (spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec
            or spec.endswith((".json", ".model", ".txt", ".vocab")))


def load_tokenizer(spec: str, flag: str = "--tokenizer") -> Tokenizer:
    """A tokenizer.json file, a directory with tokenizer files, or a hub id."""
    from .hub import first_line, hub_call

    path = Path(spec).expanduser()
    if path.is_file():
        from tokenizers import Tokenizer as RawTokenizer

        try:
            if path.suffix == ".gz":  # a gzipped tokenizer.json, as the package ships its own
                import gzip

                return Tokenizer(RawTokenizer.from_str(gzip.decompress(path.read_bytes()).decode("utf-8")), str(path))
            return Tokenizer(RawTokenizer.from_file(str(path)), str(path))
        except Exception as exc:  # noqa: BLE001 - not a tokenizers JSON file
            raise UserError(f"{flag} {spec}: not a tokenizer.json file ({first_line(exc)})") from None
    if path.is_dir() or looks_like_path(spec):
        if not path.exists():
            raise UserError(f"{flag} {spec}: no such tokenizer file or directory")
        from transformers import AutoTokenizer

        try:
            return Tokenizer(AutoTokenizer.from_pretrained(str(path)), str(path))
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{flag} {spec}: no tokenizer files in this directory ({first_line(exc)})") from None
    from transformers import AutoTokenizer

    return Tokenizer(hub_call(lambda local: AutoTokenizer.from_pretrained(spec, local_files_only=local),
                              f"tokenizer {spec!r}"), spec)
