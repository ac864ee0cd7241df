"""The Hugging Face hub, reached once and given up on quickly.

Offline (HF_HUB_OFFLINE set, or one connection to the hub failing within a few seconds), every hub load
runs with `local_files_only=True`: a model or tokenizer in the local cache still loads, anything else
fails at once with one line, instead of minutes of transformers' retries.
"""
from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlparse

from .errors import UserError

T = TypeVar("T")
PROBE_TIMEOUT_S = 3.0
TRUTHY = {"1", "true", "yes", "on"}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:240]


@functools.lru_cache(maxsize=1)
def hub_offline() -> bool:
    """True when the hub must not or cannot be reached (asked once per process)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in TRUTHY or \
            os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in TRUTHY:
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=PROBE_TIMEOUT_S):
            return False
    except OSError:
        return True


def hub_call(load: Callable[[bool], T], what: str, hint: str = "", location: str | None = None) -> T:
    """`load(local_files_only)` with the hub's reachability decided once; failures become one line.
    `location`: what is loaded; when it is a local path the hub plays no part, and neither does its message."""
    if location is not None and Path(location).expanduser().exists():
        try:
            return load(True)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a corrupt or unsupported local model
            raise UserError(f"cannot load {what}: {first_line(exc)}") from None
    offline = hub_offline()
    try:
        return load(offline)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - missing files, offline hub, bad repo id, unsupported model
        if offline:
            raise UserError(f"{what} is not in the local Hugging Face cache and the hub cannot be reached "
                            f"(offline){hint or ': run once with network to cache it, or pass a local path'}") from None
        raise UserError(f"cannot load {what}: {first_line(exc)}") from None
