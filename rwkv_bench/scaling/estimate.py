"""A rough time estimate of a sweep, printed with its plan and used to weight the progress bar.

Calibrated on the tiny pair (4 layers x 256, 50k vocabulary, fp32, 1 thread of a 2-core Intel Xeon):
a prefill costs 7.9e-5 s per token, a transformer's attention 2.2e-11 s per T^2 x layers x d more, a decode
step 8 ms plus 3.1e-9 s per cached key or value element read. Other sizes scale by their arithmetic: the
prefill with layers x d^2, a decode step with the parameters it reads (layers x 12 d^2 + vocab x d). A
batched step (serve) streams the weights once and adds, per further row, 2.7e-11 s per parameter and that
row's KV cache (rwkv4-169m, 1 thread of the same Xeon: 65 ms at B = 1, about 2.5 ms a row more at B = 1,024).
A model whose size is not known here (a hub id not in the cache) counts as tiny.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..specs import ModelSpec
from .predict import Dims

CALIBRATED_ON = "1 thread of a 2-core Intel Xeon"  # the machine the constants below were measured on
LOAD_S = 4.0             # interpreter, torch and the model in a fresh child
PREFILL_S_PER_TOKEN = 7.9e-5
ATTENTION_S = 2.2e-11    # per T^2 x layers x d
STEP_S = 8e-3
KV_READ_S = 3.1e-9       # per cached element (2 x layers x T x d)
TINY_LAYERS, TINY_D, VOCAB = 4, 256, 50277
REPEAT_TIME_S = 20.0     # prefill passes repeat until they took this long (at most 3)
ROW_S_PER_PARAM = 2.7e-11  # a batched step's cost per further row, per parameter the step multiplies
WARMUP_STEPS = 8           # a child's warm-up: a 16-token prompt, then 8 steps of one sequence


@dataclass(frozen=True)
class Size:
    layers: int = TINY_LAYERS
    d: int = TINY_D
    transformer: bool = False
    known: bool = True

    @property
    def prefill_scale(self) -> float:
        return self.layers * self.d ** 2 / (TINY_LAYERS * TINY_D ** 2)

    @property
    def step_params(self) -> int:
        """The parameters a decode step multiplies: the blocks' matrices and the head."""
        return self.layers * 12 * self.d ** 2 + VOCAB * self.d

    @property
    def step_scale(self) -> float:
        return self.step_params / Size().step_params


def model_size(spec: ModelSpec, dims: Dims | None) -> Size:
    """Layers and width of a preset, or of a transformer whose config was read for the memory prediction
    (`dims`, predict.transformer_dims); unknown sizes count as tiny."""
    from ..models import presets

    transformer = spec.family == "transformer"
    if spec.kind == "preset" and (split := presets.split_preset(spec.location)):
        return Size(split[1].n_layer, split[1].n_embd, transformer and split[0] not in presets.MAMBA_FAMILIES)
    if dims is not None:
        return Size(dims.layers, dims.d, True)
    return Size(transformer=transformer, known=False)


def kv_read_s(size: Size, context: int) -> float:
    return KV_READ_S * 2 * size.layers * context * size.d if size.transformer else 0.0


def step_s(size: Size, context: int) -> float:
    return STEP_S * size.step_scale + kv_read_s(size, context)


def batch_step_s(size: Size, context: int, B: int) -> float:
    """One step of B sequences: the weights streamed once, then each further row's products and KV cache."""
    return step_s(size, context) + (B - 1) * (ROW_S_PER_PARAM * size.step_params + kv_read_s(size, context))


def prefill_s(size: Size, T: int) -> float:
    attention = ATTENTION_S * T * T * size.layers * size.d if size.transformer else 0.0
    return PREFILL_S_PER_TOKEN * size.prefill_scale * T + attention


def estimated_cost_s(scenario: str, T: int, size: Size = Size()) -> float:
    """Seconds one point takes, roughly: a prefill point its warm-up and timed passes, a decode point its steps (32 at T,
    32 pairs interleaved with a reference state), a generate point its T steps."""
    if scenario == "prefill":
        one = prefill_s(size, T)
        passes = min(3, max(1, math.ceil(REPEAT_TIME_S / one))) if one > 0 else 3
        return LOAD_S + prefill_s(size, min(T, 1024)) + passes * one  # a warm-up pass, then the timed ones
    if scenario == "decode":
        return 96 * step_s(size, T)
    return LOAD_S + T * step_s(size, T // 2)


def serve_cost_s(T: int, B: int, size: Size, distinct: bool, steps: int, time_budget_s: float) -> float:
    """Seconds one serve child takes, roughly: load and warm-up, then within its time budget the prefill (B
    prompts, or one when the rows are copies) and the batched steps. The capacity points a sweep adds after
    its grid depend on what the grid measured and are not counted."""
    from .serving_measure import UNTIMED_STEPS

    prefill = (B if distinct else 1) * prefill_s(size, T)
    measured = prefill + (UNTIMED_STEPS + steps) * batch_step_s(size, T, B)
    return LOAD_S + WARMUP_STEPS * step_s(size, 16) + min(measured, time_budget_s)
