"""WKV operator dispatch (stub: reference only; the kernel work replaces this file)."""
from __future__ import annotations

import torch

from .wkv_reference import empty_state, wkv_reference  # noqa: F401


def wkv(w, u, k, v, state=None):
    return wkv_reference(w, u, k, v, state)


def implementation_name(device: torch.device | str = "cpu") -> str:
    return "reference"
