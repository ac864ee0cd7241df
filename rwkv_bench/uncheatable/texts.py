"""Texts to score, from any source, prepared the same way; and the reader of a user's JSON/JSONL file.

Preparation (the protocol): Unicode NFC, truncation to the first `chars` characters, texts shorter than
`min_chars` rejected (a file) or skipped (a fetched source), exact duplicates (after truncation) dropped.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError


@dataclass
class Paper:
    """One text to score. `paper_id`: the source's id (an arXiv id, a page id, owner/repo/path, a DOI, the
    index in a file), prefixed with "<source>:" in a run of several sources."""
    paper_id: str
    text: str
    text_source: str = "file"          # what the text is: "pdf", "abstract" (no body could be had), "code" ...
    title: str = ""
    info: dict = field(default_factory=dict)  # published, url, licence; arXiv: version, categories
    source: str = "file"               # the plug-in it came from (sources.SOURCES), or a file item's "source"

    @property
    def sha256(self) -> str:
        return sha256(self.text)

    def to_paper(self) -> "Paper":
        """A Paper is already what a source record becomes (the file source yields Papers)."""
        return self

    def row(self) -> dict:
        """What papers.csv records about the text that was scored (not the text itself)."""
        return {"paper_id": self.paper_id, "text_source": self.text_source, "chars": len(self.text),
                "bytes": len(self.text.encode("utf-8")), "sha256": self.sha256, "title": self.title,
                "source": self.source,
                **{k: (";".join(v) if isinstance(v, list) else v) for k, v in self.info.items()}}


def parse_timestamp(text: str) -> dt.datetime:
    """An ISO 8601 date or time (from an API or a file), as UTC; ValueError for anything else."""
    text = str(text).strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?", text):
        raise ValueError(f"not a date: {text!r}")
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalize(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def compose(title: str, abstract: str, body: str) -> str:
    """The evaluated text of a paper: title, abstract, body, separated by blank lines, NFC."""
    parts = [" ".join(title.split()), " ".join(abstract.split()), body.strip()]
    return normalize("\n\n".join(p for p in parts if p))


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
        return dataclasses.replace(paper, text=text, info=dict(paper.info))

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
    """A JSON list (strings, or objects with a `text` field) or JSONL (one such item a line). `paper_id` is
    the text's index in the file. An object may also say where the text is from: `source` (a label for the
    per-source tables, default "file"), `published` (YYYY-MM-DD or ISO 8601: checked against the models'
    training cutoffs), `title`, `url`, `licence`."""
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
    return [file_item(path, i, item) for i, item in enumerate(items)]


FILE_ITEM_FIELDS = ("title", "url", "licence")


def file_item(path: Path, i: int, item) -> Paper:
    if isinstance(item, str):
        item = {"text": item}
    if not isinstance(item, dict):
        raise UserError(f"{path}: item {i} is a {type(item).__name__}, expected a string or an object "
                        "with a 'text' field")
    text = item.get("text")
    if not isinstance(text, str):
        raise UserError(f"{path}: item {i} is an object without a string 'text' field")
    if not text.strip():
        raise UserError(f"{path}: text {i} is empty")
    info = {k: str(item[k]) for k in FILE_ITEM_FIELDS if item.get(k) is not None}
    if item.get("published") is not None:
        try:
            info["published"] = parse_timestamp(item["published"]).isoformat()
        except ValueError:
            raise UserError(f"{path}: item {i} has a malformed date {item['published']!r} "
                            "(use YYYY-MM-DD or ISO 8601)") from None
    source = str(item.get("source") or "file")
    if not source.replace("-", "").replace("_", "").isalnum():
        raise UserError(f"{path}: item {i} has source {source!r}: use letters, digits, '-' or '_'")
    return Paper(str(i), text, "file", info.pop("title", ""), info, source=source)


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
