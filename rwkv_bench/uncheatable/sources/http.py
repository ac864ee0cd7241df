"""One polite HTTP session for every source: spaced requests, a user agent, a timeout, and urllib3's retries
(statuses 429 and 5xx, connection and read errors, Retry-After honoured) on the session's adapters.

What urllib3's `Retry` cannot do is kept here: the spacing between requests, a floor under its first
back-off (it retries the first failure at once), a cap on a server's Retry-After, and another try when a
body arrives cut short or unreadable (`fetch`'s `read` raising ValueError).
"""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Callable, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER_S = 60.0
USER_AGENT = "rwkv-bench/0.1 (uncheatable eval; polite: spaced requests, cached answers)"


def read_json(resp: requests.Response, what: str = "the API answer"):
    """The answer's JSON; a body that is not JSON is a ValueError (asked again by `fetch`)."""
    try:
        return resp.json()
    except ValueError:
        raise ValueError(f"{what} is not JSON") from None


def parse_xml(content: bytes, what: str) -> ET.Element:
    """The document's root; content that is not XML is a ValueError (asked again by `fetch`)."""
    try:
        return ET.fromstring(content)
    except ET.ParseError as exc:
        raise ValueError(f"{what} is not XML ({exc})") from None


class PoliteRetry(Retry):
    """urllib3's Retry, waiting at least `min_wait` before any retry and at most MAX_RETRY_AFTER_S for a
    server's Retry-After."""

    def __init__(self, *args, min_wait: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.min_wait = min_wait

    def new(self, **kw):
        fresh = super().new(**kw)
        fresh.min_wait = self.min_wait
        return fresh

    def get_backoff_time(self) -> float:
        return max(self.min_wait, super().get_backoff_time())

    def get_retry_after(self, response) -> float | None:
        wait = super().get_retry_after(response)
        return None if wait is None else min(wait, MAX_RETRY_AFTER_S)


def retry_policy(retries: int, min_wait: float) -> PoliteRetry:
    return PoliteRetry(total=retries, status_forcelist=RETRY_STATUSES, allowed_methods=frozenset({"GET"}),
                       backoff_factor=min_wait, respect_retry_after_header=True, raise_on_status=False,
                       min_wait=min_wait)


class PoliteSession(requests.Session):
    """Requests at least `delay` seconds apart, retried by urllib3 (`retries` times, `delay` at least between
    tries). `headers`: extra ones (an API token)."""

    def __init__(self, delay: float, retries: int = 3, timeout: float = 60.0, headers: dict | None = None):
        super().__init__()
        self.delay, self.timeout = delay, timeout
        self.last_request: float | None = None
        self.requests_made = 0
        self.headers["User-Agent"] = USER_AGENT
        self.headers.update(headers or {})
        adapter = HTTPAdapter(max_retries=retry_policy(retries, delay))
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method, url, *args, **kwargs):
        if self.last_request is not None:
            wait = self.delay - (time.monotonic() - self.last_request)
            if wait > 0:
                time.sleep(wait)
        kwargs.setdefault("timeout", self.timeout)
        try:
            return super().request(method, url, *args, **kwargs)
        finally:
            self.last_request = time.monotonic()
            self.requests_made += 1


class FetchError(Exception):
    """A request that gave no usable answer: `note` says why, `transient` whether a later try may succeed
    (network errors, 429/5xx after every retry) or not (404, not what was asked for)."""

    def __init__(self, note: str, transient: bool, status: int | None = None):
        super().__init__(note)
        self.note, self.transient, self.status = note, transient, status


T = TypeVar("T")


def fetch(session: requests.Session, url: str, read: Callable[[requests.Response], T] = lambda resp: resp,
          tries: int = 2, ok: tuple[int, ...] = (200,)) -> T:
    """GET `url` (urllib3 retries statuses and network errors underneath) and `read` the answer; a body cut
    short or that `read` finds damaged (ValueError) is asked again, `tries` times in all. Raises FetchError."""
    note = ""
    for _ in range(tries):
        try:
            resp = session.get(url)
        except requests.exceptions.ChunkedEncodingError:
            note = "network error: ChunkedEncodingError"
            continue
        except requests.RequestException as exc:     # connection, timeout, retries used up ...
            raise FetchError(f"network error: {type(exc).__name__}", transient=True) from None
        if resp.status_code not in ok:
            transient = resp.status_code in RETRY_STATUSES
            raise FetchError(f"HTTP {resp.status_code}" + (" after retries" if transient else ""), transient,
                             resp.status_code)
        try:
            return read(resp)
        except ValueError as exc:
            note = str(exc)
    raise FetchError(f"{note} ({tries} tries)", transient=True)
