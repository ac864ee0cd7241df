"""What a run's rows say about its models: their order, family, implementation, weights and protocol, and
the labels the figures and tables give them."""
from __future__ import annotations

import pandas as pd


def model_order(points: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(points["model"])) if not points.empty else []


def model_facts(points: pd.DataFrame) -> dict:
    """model -> family, implementation, random_weights, kv_cache (from its first ok row, else any row)."""
    facts = {}
    for model in model_order(points):
        rows = points[points["model"] == model]
        ok = rows[rows["status"] == "ok"]
        r = (ok if len(ok) else rows).iloc[0]
        facts[model] = {"family": r.get("family", ""), "implementation": implementations(ok if len(ok) else rows),
                        "random_weights": r.get("random_weights"), "kv_cache": r.get("kv_cache", "")}
    return facts


def implementations(rows: pd.DataFrame) -> str:
    """The implementation(s) a model's rows ran with; more than one only when a resume changed it."""
    return " + ".join(dict.fromkeys(v for v in rows["implementation"] if v)) if "implementation" in rows else ""


def per_model(df: pd.DataFrame):
    """(model, its rows by length, its ok rows) for each model of df."""
    for model in model_order(df):
        rows = df[df["model"] == model].sort_values("seq_len")
        yield model, rows, rows[rows["status"] == "ok"]


def protocol_label(scenario: str, family: str, kv_cache: str) -> str:
    if scenario == "prefill":
        return "prefill (one pass)"
    if scenario == "decode":
        if family == "transformer":
            return "decode per token, KV cache" if kv_cache == "true" else "decode per token, no cache (paper)"
        return "decode per token, recurrent"
    if family == "transformer":
        return "generate, KV cache" if kv_cache == "true" else "generate, no cache (paper)"
    return "generate, recurrent"


def weights_label(random_weights, random: str = "random") -> str:
    return random if random_weights else "trained" if random_weights is False else "?"


def label(model: str, facts: dict, scenario: str | None = None) -> str:
    f = facts.get(model, {})
    parts = []
    if scenario in ("generate", "decode"):
        parts.append(protocol_label("generate", f.get("family", ""), f.get("kv_cache", "")).removeprefix("generate, "))
    if f.get("random_weights"):
        parts.append("random weights")
    return f"{model} ({', '.join(parts)})" if parts else model
