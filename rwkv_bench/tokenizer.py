"""Tokenizers: the GPT-NeoX-20B one for the Pile models and presets, the RWKV World one, UTF-8 bytes, or any HF one.

A model without a tokenizer of its own gets one by its vocabulary size (`tokenizer_for_vocab`): 50,277 or a
padded 50,304 -> GPT-NeoX-20B (RWKV-4 and RWKV-7 Pile models), 65,536 -> the RWKV World tokenizer (greedy
longest match over bytes, vocabulary rwkv_vocab_v20230424, shipped in rwkv_bench/data), 256 -> UTF-8 bytes
(byte-level models); any other size needs --tokenizer.

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
WORLD_VOCAB_FILE = Path(__file__).resolve().parent / "data" / "rwkv_vocab_v20230424.txt.gz"
NEOX_VOCABS = (50277, 50304)
WORLD_VOCAB = 65536
BYTE_VOCAB = 256


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


class WorldTokenizer(Tokenizer):
    """The RWKV World tokenizer: at every position, the longest vocabulary entry that the bytes start with.

    The vocabulary holds every single byte, so any text encodes. `pieces` maps each entry to its id, and each
    proper prefix of an entry to -1, so the longest match is a walk that stops where no entry continues."""

    def __init__(self, path: Path = WORLD_VOCAB_FILE):
        super().__init__(None, str(path))
        self.id_to_bytes = read_world_vocab(path)
        self.pieces: dict[bytes, int] = {}
        for token_id, piece in self.id_to_bytes.items():
            for end in range(1, len(piece)):
                self.pieces.setdefault(piece[:end], -1)
            self.pieces[piece] = token_id

    def encode(self, text: str) -> list[int]:
        data, pieces = text.encode("utf-8"), self.pieces
        ids, i, n = [], 0, len(data)
        while i < n:
            best_end, best_id, end = i + 1, pieces[data[i:i + 1]], i + 2
            while end <= n:
                found = pieces.get(data[i:end])
                if found is None:
                    break
                if found >= 0:
                    best_end, best_id = end, found
                end += 1
            ids.append(best_id)
            i = best_end
        return ids

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.id_to_bytes.get(i, b"") for i in ids).decode("utf-8", errors="replace")


def read_world_vocab(path: Path) -> dict[int, bytes]:
    """Lines `<id> <Python literal of str or bytes> <length in bytes>`, parsed with ast.literal_eval (no eval)."""
    import ast
    import gzip

    vocab = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            first, last = line.index(" "), line.rindex(" ")
            piece = ast.literal_eval(line[first:last].strip())
            piece = piece.encode("utf-8") if isinstance(piece, str) else piece
            if len(piece) != int(line[last:]):
                raise ValueError(f"{path}: entry {line[:first]} has {len(piece)} bytes, the file says {line[last:].strip()}")
            vocab[int(line[:first])] = piece
    return vocab


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as token ids 0..255 (BlinkDL's character-level demos)."""

    def __init__(self):
        super().__init__(None, "utf-8 bytes")

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def tokenizer_for_vocab(vocab_size: int, spec: str | None = None) -> Tokenizer:
    """The tokenizer of a model that has none of its own: `spec` (--tokenizer) or $RWKV_BENCH_TOKENIZER if
    given, else the one its vocabulary size implies."""
    if spec or os.environ.get("RWKV_BENCH_TOKENIZER"):
        return neox_tokenizer(spec)
    if vocab_size in NEOX_VOCABS:
        return neox_tokenizer()
    if vocab_size == WORLD_VOCAB:
        return world_tokenizer()
    if vocab_size == BYTE_VOCAB:
        return ByteTokenizer()
    raise UserError(f"no tokenizer known for a vocabulary of {vocab_size} (known: {', '.join(map(str, NEOX_VOCABS))} "
                    f"GPT-NeoX-20B, {WORLD_VOCAB} RWKV World, {BYTE_VOCAB} bytes): pass --tokenizer")


def world_tokenizer() -> WorldTokenizer:
    global _world
    if _world is None:
        _world = WorldTokenizer()
    return _world


_world: WorldTokenizer | None = None


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
