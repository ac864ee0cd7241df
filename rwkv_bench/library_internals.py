"""Every place rwkv-bench relies on another library beyond its public API, in one module (most of them for
the nlp scenario). It sits beside the packages that use it, so the model layer (backends/hf.py) need not
import the nlp scenario for the one transformers reach-in.

tests/test_library_internals.py checks each against the installed release and fails, naming the
function here, when a release changes what it relies on:

- `encode_pair`: how lm-eval's TemplateLM.loglikelihood tokenises a (context, continuation) request
  (`TemplateLM._encode_pair`; an empty context becomes the prefix token), for counting on lm-eval's hf
  model the positions a model that re-encodes every request runs;
- `strip_rank_padding`: lm-eval's evaluator evens out the ranks of a distributed run by appending copies of
  a rank's last request (the same object, repeated) to its request list;
- `go_offline`: `datasets` and `huggingface_hub` read their offline switches once, at import, and lm-eval
  passes no `local_files_only` through, so offline mode is set on their module constants;
- `attention_implementation`: transformers 5 names the attention a model runs (sdpa, eager, ...) only in the
  private `config._attn_implementation` (backends/hf.py labels rows with it; scaling/predict.py counts the
  T x T scores of eager attention).

The stand-in for `transformers.data.metrics.squad_metrics` (gone in transformers 5, still imported by
lm-eval's ReCoRD) is its own module, nlp/squad_compat.py, checked by the same test file.
"""
from __future__ import annotations


def encode_pair(lm, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) of a loglikelihood request, as lm-eval's
    TemplateLM.loglikelihood hands them to the model (an empty context is the prefix token)."""
    if context == "":
        cont = lm.tok_encode(continuation, add_special_tokens=False)
        return ([lm.prefix_token_id], cont) if lm.prefix_token_id != cont[0] else (cont[:1], cont[1:])
    return lm._encode_pair(context, continuation)


def reencode_positions(lm, requests) -> int:
    """Positions that running each loglikelihood request alone would run: the context and all of the
    continuation but its last token."""
    total = 0
    for context, continuation in (r.args for r in requests):
        ctx, cont = encode_pair(lm, context, continuation)
        total += len(ctx) + len(cont) - 1
    return total


def strip_rank_padding(requests: list, distributed: bool) -> tuple[list, int]:
    """`requests` without the copies lm-eval appends to even out the ranks (the last request repeated
    beyond its own `repeats`), and how many there were. A single process is never padded."""
    requests = list(requests)
    if not distributed or not requests:
        return requests, 0
    last = requests[-1]
    run = 0
    while run < len(requests) and requests[-1 - run] is last:
        run += 1
    extra = max(0, run - max(1, int(getattr(last, "repeats", 1) or 1)))
    return requests[:len(requests) - extra], extra


def go_offline() -> None:
    """Offline mode for this process: cached datasets load without network retries, missing ones fail fast."""
    import datasets.config
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    if hasattr(datasets.config, "HF_DATASETS_OFFLINE"):
        datasets.config.HF_DATASETS_OFFLINE = True


def attention_implementation(config) -> str | None:
    """The attention a transformers config asks for or its model runs ("sdpa", "eager", ...); None when unset."""
    return getattr(config, "_attn_implementation", None)
