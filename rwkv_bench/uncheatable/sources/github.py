"""The GitHub source: source files of public repositories created in the window.

Listing: the search API (`/search/repositories?q=created:SINCE..UNTIL language:L fork:false`, newest
first, pages of --page-size; GitHub answers at most 1,000 results a query). Per repository: its licence
(`/repos/{o}/{r}/license`: the SPDX id, or "none" when it has no licence file), its top-level listing
(`/repos/{o}/{r}/contents`, and one level down when the top holds no file of the wanted kind), and one
file's content (`/repos/{o}/{r}/contents/{path}`, base64): the largest file with a wanted extension. A
file that is not UTF-8 text (a binary) is skipped with a line saying so. A new repository can hold old
code (a copy, a vendored library): the date is the repository's, which is the best a listing can say.

Unauthenticated, the search API allows 10 requests a minute and the others 60 an hour; a token in
GITHUB_TOKEN raises that (30 a minute, 5,000 an hour). A rate limit answered with 429 and Retry-After is
waited out; one answered 403 with no requests left ends the listing with a line saying when it resets.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
from typing import Iterator
from urllib.parse import quote, urlencode

from ...errors import UserError
from ..texts import normalize
from .base import FetchedSource, Window, listing_failed
from .cache import Record
from .http import FetchError, fetch, read_json

TOKEN_ENV = "GITHUB_TOKEN"
LANGUAGES = {".py": "Python", ".js": "JavaScript", ".ts": "TypeScript", ".go": "Go", ".rs": "Rust",
             ".java": "Java", ".c": "C", ".cpp": "C++", ".rb": "Ruby"}
MAX_FILE_BYTES = 1 << 20
NO_LICENCE = "none"


def rate_limit_note(exc: FetchError) -> str:
    return f"{exc.note}: GitHub's rate limit? Set {TOKEN_ENV} to a token for more requests, or rerun later"


class GithubSource(FetchedSource):
    name = "github"

    def __init__(self, settings, session=None):
        super().__init__(settings, session, api=os.environ.get("GITHUB_API_URL", "https://api.github.com"))
        self.extensions = tuple(settings.github_extensions)
        unknown = [e for e in self.extensions if e not in LANGUAGES]
        if unknown:
            raise UserError(f"--github-extensions: no GitHub language for {unknown[0]!r} "
                            f"(known: {', '.join(LANGUAGES)})")

    def headers(self) -> dict:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if token := os.environ.get(TOKEN_ENV):
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def get_json(self, path: str, **params):
        url = f"{self.api}{path}" + (f"?{urlencode(params)}" if params else "")
        return fetch(self.session, url, read_json, tries=self.settings.retries + 1)

    def query(self, window: Window) -> str:
        languages = " ".join(f"language:{quote(LANGUAGES[e])}" for e in dict.fromkeys(self.extensions))
        return f"created:{window.since}..{window.until} {languages} fork:false"

    def repositories(self, window: Window) -> Iterator[dict]:
        per_page = min(self.settings.page_size, 100)
        for page in range(1, 1000 // per_page + 1):
            try:
                data = self.get_json("/search/repositories", q=self.query(window), sort="updated", order="desc",
                                     per_page=str(per_page), page=str(page))
            except FetchError as exc:
                if page == 1 and exc.status != 403:
                    raise listing_failed("GitHub search", "files", exc.note) from None
                self.skip(f"search page {page}", rate_limit_note(exc) if exc.status in (403, 429) else exc.note)
                return
            items = data.get("items") if isinstance(data, dict) else None
            if not items:
                return
            yield from items
            if len(items) < per_page:
                return

    def records(self, window: Window) -> Iterator[tuple[Record, bool]]:
        cached = {r.id.split("/", 2)[0] + "/" + r.id.split("/", 2)[1]: r for r in self.cache.records()}
        for repo in self.repositories(window):
            name = str(repo.get("full_name", ""))
            created = self.dated(name, repo.get("created_at", ""), window)
            if created is None:
                continue
            if repo.get("fork"):
                self.skip(name, "a fork (its code predates it)")
                continue
            # one file per repository, fetched once
            yield from self.cached_or_fetched(cached.get(name), lambda: self.repository_file(repo, name, created))

    def licence(self, name: str) -> str:
        try:
            data = self.get_json(f"/repos/{name}/license")
        except FetchError as exc:
            if exc.status == 404:
                return NO_LICENCE
            raise
        return str(((data or {}).get("license") or {}).get("spdx_id") or NO_LICENCE)

    def candidates(self, name: str) -> list[dict]:
        """Files with a wanted extension, largest first: at the top, else one level down."""
        top = self.get_json(f"/repos/{name}/contents")
        if not isinstance(top, list):
            return []
        wanted = [f for f in top if f.get("type") == "file" and str(f.get("name", "")).endswith(self.extensions)]
        folders = [f for f in top if f.get("type") == "dir"][:3] if not wanted else []
        for folder in folders:
            inside = self.get_json(f"/repos/{name}/contents/{quote(folder['path'])}")
            if isinstance(inside, list):
                wanted += [f for f in inside if f.get("type") == "file"
                           and str(f.get("name", "")).endswith(self.extensions)]
        wanted = [f for f in wanted if 0 < int(f.get("size") or 0) <= MAX_FILE_BYTES]
        return sorted(wanted, key=lambda f: (-int(f.get("size") or 0), f.get("path", "")))

    def repository_file(self, repo: dict, name: str, created: dt.datetime) -> Record | None:
        try:
            files = self.candidates(name)
            if not files:
                self.skip(name, f"no {'/'.join(self.extensions)} file at the top or one level down")
                return None
            licence = self.licence(name)
            for entry in files:
                path = str(entry["path"])
                text = self.file_text(name, path)
                if text is None:
                    continue
                return Record.make(id=f"{name}/{path}", source=self.name, title=f"{name}: {path}", published=created,
                                   text=normalize(text)[:self.settings.max_chars], text_source="code",
                                   licence=licence,
                                   url=f"{repo.get('html_url', '')}/blob/{repo.get('default_branch', 'HEAD')}/{path}")
        except FetchError as exc:
            self.skip(name, rate_limit_note(exc) if exc.status in (403, 429) else f"its files could not be had "
                      f"({exc.note})")
            return None
        self.skip(name, "every candidate file is binary")
        return None

    def file_text(self, name: str, path: str) -> str | None:
        """The file's text, or None (with a line) when it is binary or not base64."""
        data = self.get_json(f"/repos/{name}/contents/{quote(path)}")
        if not isinstance(data, dict) or data.get("encoding") != "base64":
            self.skip(f"{name}/{path}", "no base64 content in the answer")
            return None
        try:
            raw = base64.b64decode(str(data.get("content", "")), validate=False)
        except (binascii.Error, ValueError):
            self.skip(f"{name}/{path}", "content that is not base64")
            return None
        if b"\x00" in raw:
            self.skip(f"{name}/{path}", "a binary file")
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.skip(f"{name}/{path}", "a binary file (not UTF-8)")
            return None

    def describe(self) -> dict:
        return {"api": self.api, "extensions": list(self.extensions), "token": bool(os.environ.get(TOKEN_ENV))}
