"""Texts to score: a user's JSON/JSONL file, or cached arXiv records, prepared the same way.

Preparation (the protocol): Unicode NFC, truncation to the first `chars` characters, texts shorter than
`min_chars` rejected (a file) or skipped (arXiv), exact duplicates (after truncation) dropped.
"""
from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

DEFAULT_CHARS = 5000
DEFAULT_MIN_CHARS = 2000


@dataclass
class Paper:
    """One text to score. `paper_id` is an arXiv id, or the text's index in a --papers-file."""
    paper_id: str
    text: str
    text_source: str = "file"          # "file", "pdf", or "abstract" (no body could be had)
    title: str = ""
    info: dict = field(default_factory=dict)  # version, published, categories ... (arXiv only)

    @property
    def sha256(self) -> str:
        return sha256(self.text)

    def row(self) -> dict:
        """What papers.csv records about the text that was scored (not the text itself)."""
        return {"paper_id": self.paper_id, "text_source": self.text_source, "chars": len(self.text),
                "bytes": len(self.text.encode("utf-8")), "sha256": self.sha256, "title": self.title,
                **{k: (";".join(v) if isinstance(v, list) else v) for k, v in self.info.items()}}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalize(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def check_lengths(chars: int, min_chars: int) -> None:
    if chars <= 0:
        raise UserError(f"--chars must be positive, got {chars}")
    if min_chars < 1:
        raise UserError(f"--min-chars must be at least 1, got {min_chars}")
    if min_chars > chars:
        raise UserError(f"--min-chars ({min_chars}) is larger than --chars ({chars}): no text could qualify")


def prepare(text: str, chars: int) -> str:
    """NFC, then the first `chars` characters."""
    return normalize(text)[:chars]


class Selector:
    """Prepares texts one at a time: NFC, truncation, minimum length, exact duplicates dropped."""

    def __init__(self, *, chars: int, min_chars: int, short: str = "skip"):
        self.chars, self.min_chars, self.short = chars, min_chars, short
        self.seen: dict[str, str] = {}
        self.too_short: list[str] = []
        self.duplicates: list[tuple[str, str]] = []   # (dropped id, id of the text it repeats)

    def offer(self, paper: Paper) -> Paper | None:
        text = prepare(paper.text, self.chars)
        if len(text) < self.min_chars:
            if self.short == "error":
                raise UserError(f"text {paper.paper_id} has {len(text)} characters, fewer than the minimum "
                                f"{self.min_chars} (lower it with --min-chars)")
            self.too_short.append(paper.paper_id)
            return None
        digest = sha256(text)
        if digest in self.seen:
            self.duplicates.append((paper.paper_id, self.seen[digest]))
            return None
        self.seen[digest] = paper.paper_id
        return Paper(paper.paper_id, text, paper.text_source, paper.title, dict(paper.info))

    def dropped(self) -> dict:
        return {"too_short": self.too_short, "duplicates": self.duplicates}


def select(papers: list[Paper], *, chars: int, min_chars: int, short: str = "skip",
           limit: int | None = None) -> tuple[list[Paper], dict]:
    """Prepare texts in order (see Selector); at most `limit` kept. Returns them and what was dropped."""
    selector = Selector(chars=chars, min_chars=min_chars, short=short)
    kept = []
    for paper in papers:
        if limit is not None and len(kept) >= limit:
            break
        if (done := selector.offer(paper)) is not None:
            kept.append(done)
    return kept, selector.dropped()


def read_papers_file(path: str | Path) -> list[Paper]:
    """A JSON list (strings, or objects with a `text` field) or JSONL (one such item a line).
    `paper_id` is the text's index in the file."""
    from ..options import read_utf8_file

    path = Path(path)
    content = read_utf8_file(path, "papers file")
    try:
        items = json.loads(content)
    except json.JSONDecodeError as whole_error:
        items = read_jsonl(path, content, whole_error)
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a JSON list of texts (strings or objects with a 'text' field), "
                        f"got a JSON {type(items).__name__}")
    if not items:
        raise UserError(f"{path} holds an empty list: no texts to score")
    papers = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            text = item.get("text")
            if not isinstance(text, str):
                raise UserError(f"{path}: item {i} is an object without a string 'text' field")
        elif isinstance(item, str):
            text = item
        else:
            raise UserError(f"{path}: item {i} is a {type(item).__name__}, expected a string or an object "
                            "with a 'text' field")
        if not text.strip():
            raise UserError(f"{path}: text {i} is empty")
        papers.append(Paper(str(i), text, "file"))
    return papers


def read_jsonl(path: Path, content: str, whole_error: json.JSONDecodeError) -> list:
    lines = [(n, line) for n, line in enumerate(content.splitlines(), 1) if line.strip()]
    if len(lines) < 2 and not path.suffix == ".jsonl":
        raise UserError(f"{path} is not valid JSON: {whole_error.msg} (line {whole_error.lineno})")
    items = []
    for n, line in lines:
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is neither JSON nor JSONL: line {n}: {exc.msg}") from None
    return items
