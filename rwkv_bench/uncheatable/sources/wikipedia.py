"""The Wikipedia source: articles created in the window, their body as plain text.

Listing: the MediaWiki API's page-creation log (`list=logevents&letype=create`, main namespace, newest
first, followed page by page with `lecontinue`). Text: `prop=extracts&explaintext` of each page (the
TextExtracts extension: the article body as plain text, section titles kept as lines). A page deleted
since (the answer says `missing`) or a redirect (no text) is skipped with a line saying so. Wikipedia text
is CC BY-SA 4.0: each record says so. API etiquette (https://www.mediawiki.org/wiki/API:Etiquette):
requests one at a time, a user agent, and `maxlag` answers retried.
"""
from __future__ import annotations

import re
from typing import Iterator
from urllib.parse import urlencode

from ...errors import UserError
from ..texts import normalize
from .base import FetchedSource, Window, listing_failed
from .cache import Record
from .http import FetchError, fetch, read_json

LICENCE = "CC BY-SA 4.0"
LANG = re.compile(r"[a-z]{2,3}(-[a-z]+)*")
RETRIED_API_ERRORS = {"ratelimited", "maxlag", "readonly"}


def check_lang(lang: str) -> str:
    if not LANG.fullmatch(lang or ""):
        raise UserError(f"--wikipedia-lang takes a Wikipedia language code such as en or de, got {lang!r}")
    return lang


def read_api(resp) -> dict:
    """The JSON answer; an API error that passes (rate limit, lag) is a ValueError (asked again), another a
    FetchError."""
    data = read_json(resp)
    if not isinstance(data, dict):
        raise ValueError("the API answer is not a JSON object")
    if "error" in data:
        code = str(data["error"].get("code", "?"))
        if code in RETRIED_API_ERRORS:
            raise ValueError(f"API error {code}")
        raise FetchError(f"API error {code}: {data['error'].get('info', '')}", transient=False)
    return data


class WikipediaSource(FetchedSource):
    name = "wikipedia"

    def __init__(self, settings, session=None):
        self.lang = check_lang(settings.wikipedia_lang)
        super().__init__(settings, session, api=f"https://{self.lang}.wikipedia.org/w/api.php",
                         cache_folder=f"wikipedia-{self.lang}")

    def url(self, **params) -> str:
        return self.api + "?" + urlencode({"action": "query", "format": "json", "formatversion": "2",
                                           "maxlag": "5", **params})

    def creations(self, window: Window) -> Iterator[dict]:
        """Page-creation log events in the window, newest first."""
        params = {"list": "logevents", "letype": "create", "lenamespace": "0", "leprop": "ids|title|timestamp",
                  "lestart": f"{window.until}T23:59:59Z", "leend": f"{window.since}T00:00:00Z", "ledir": "older",
                  "lelimit": str(min(self.settings.page_size, 500))}
        cont: dict = {}
        while True:
            try:
                data = fetch(self.session, self.url(**params, **cont), read_api, tries=self.settings.retries + 1)
            except FetchError as exc:
                raise listing_failed("Wikipedia", "articles", exc.note) from None
            yield from (data.get("query") or {}).get("logevents") or []
            cont = data.get("continue") or {}
            if not cont:
                return

    def records(self, window: Window) -> Iterator[tuple[Record, bool]]:
        for event in self.creations(window):
            pageid, title = event.get("pageid") or 0, str(event.get("title", ""))
            text_id = f"{self.lang}:{pageid}"
            published = self.dated(text_id, event.get("timestamp", ""), window)
            if published is None:
                continue
            if not pageid:
                self.skip(f"{self.lang}:{title}", "deleted (the log has no page id)")
                continue
            yield from self.cached_or_fetched(self.cache.get(text_id),
                                              lambda: self.article(text_id, pageid, title, published))

    def article(self, text_id: str, pageid: int, title: str, published) -> Record | None:
        try:
            data = fetch(self.session, self.url(prop="extracts", explaintext="1", exsectionformat="plain",
                                                pageids=str(pageid)), read_api, tries=self.settings.retries + 1)
        except FetchError as exc:
            self.skip(text_id, f"its text could not be had ({exc.note})")
            return None
        pages = (data.get("query") or {}).get("pages") or []
        page = pages[0] if pages else {"missing": True}
        if page.get("missing") or page.get("invalid"):
            self.skip(text_id, f"deleted since it was created ({title!r})")
            return None
        text = normalize(str(page.get("extract") or "").strip())[:self.settings.max_chars]
        if not text:
            self.skip(text_id, f"no text (a redirect?) ({title!r})")
            return None
        return Record.make(id=text_id, source=self.name, title=normalize(str(page.get("title") or title)),
                           published=published, text=text, text_source="article", licence=LICENCE,
                           url=f"https://{self.lang}.wikipedia.org/?curid={pageid}")

    def describe(self) -> dict:
        return {"lang": self.lang, "api": self.api, "licence": LICENCE}
