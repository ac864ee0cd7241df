"""The serve scenario: B sequences at context T decoded together, one child per (model, T, B), and the capacity.

For each T of --serve-lengths and each model, B runs through its batch grid (config.batch_grid: recurrent
models, RWKV and Mamba, go on to --recurrent-max-batch). Before a point runs, its memory is predicted (B x the
analytic bytes of one sequence's state or KV cache, plus a prefill's activations); a point that cannot fit
--memory-limit or the free memory is recorded as `skipped` with the predicted size, and once a (model, T)
fails (oom, timeout, error) its larger B are skipped. Then the capacity: the largest B whose states fit the
memory budget, predicted from the bytes per sequence measured over the grid (capacity.py), is run once to
confirm it when it lies beyond the grid and within --confirm-max-batch. Rows go to serving.csv (store.py);
`--resume` skips the (model, T, B) already there.
"""
from __future__ import annotations

from pathlib import Path

from ..specs import ModelSpec
from . import store
from .bandwidth import step_bandwidth
from .capacity import capacity_batch, measured_bytes_per_sequence
from .config import ScalingConfig
from .launcher import launch
from .points import SERVE, PointSpec
from .serving_measure import distinct_prompts
from .predict import DTYPE_BYTES, activation_bytes, memory_refusal, transformer_dims
from .store import FAILED, serve_key

LOGITS_ROWS = 2  # a step's logits (B x vocab float32) and their argmax's copy, transient


def analytic_state_bytes(spec: ModelSpec, T: int, dtype: str) -> int | None:
    """Bytes of one sequence's state or KV cache at T, from the model's configuration (no weights built):
    the same formulas as the backends' sequence_state_bytes. None when the configuration is not at hand."""
    from ..backends.hf import state_bytes_of_config
    from ..models import presets

    if spec.kind == "preset":
        family, size = presets.split_preset(spec.location)
        if family in presets.RWKV_FAMILIES:
            return rwkv_state_bytes(spec.location)
        if family in ("gptneox", "llama", *presets.MAMBA_FAMILIES):
            return state_bytes_of_config(presets.transformer_config(family, size), T, DTYPE_BYTES.get(dtype, 4))
        return None
    try:
        from transformers import AutoConfig

        kwargs = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
        cfg = AutoConfig.from_pretrained(spec.location, local_files_only=True, **kwargs)
    except Exception:  # noqa: BLE001 - not cached, not a transformers directory: run it, unpredicted
        return None
    return state_bytes_of_config(cfg, T, DTYPE_BYTES.get(dtype, 4))


def rwkv_state_bytes(preset: str) -> int:
    """Our RWKV's state size, built on the meta device (shapes only, no memory, no init)."""
    import torch

    from ..models import presets

    family, size = presets.split_preset(preset)
    with torch.device("meta"):
        if family == "rwkv7":
            from ..models.rwkv7 import RWKV7, RWKV7Config

            model = RWKV7(RWKV7Config(vocab_size=presets.RWKV7_VOCAB, n_layer=size.n_layer, n_embd=size.n_embd))
        else:
            from ..models.rwkv4 import RWKV4, RWKVConfig

            model = RWKV4(RWKVConfig(vocab_size=presets.VOCAB, n_layer=size.n_layer, n_embd=size.n_embd))
    return model.state_bytes(1)


def is_recurrent(spec: ModelSpec) -> bool:
    from ..models import presets

    if spec.kind == "preset":
        split = presets.split_preset(spec.location)
        return bool(split) and split[0] in (*presets.RWKV_FAMILIES, *presets.MAMBA_FAMILIES)
    return spec.family == "rwkv"


def predicted_bytes(spec: ModelSpec, T: int, B: int, c: ScalingConfig, state: int | None) -> int | None:
    """B states or KV caches and a step's logits, or the prefill's peak where it is higher: B prompts' states
    and activations together (a transformer's activations), or one prompt's before it is copied."""
    if state is None:
        return None
    dims = transformer_dims(spec) if not is_recurrent(spec) else None
    distinct = distinct_prompts(B, T, c.prefill_token_budget)
    activations = activation_bytes(dims, B * T if distinct else T, c.dtype) if dims is not None else 0
    prefill = (B if distinct else 1) * state + activations
    return max(prefill, B * state) + LOGITS_ROWS * B * 50304 * 4


def serve_points(c: ScalingConfig) -> list[tuple[int, ModelSpec, int]]:
    """(T, spec, B) in the order they run: T ascending, then model, then B ascending."""
    return [(T, spec, B) for T in c.lengths[SERVE] for spec in c.specs for B in c.batch_grid(is_recurrent(spec))]


def run_serving(c: ScalingConfig, run_dir: Path, wkv: str | None, machine: dict, echo) -> None:
    """Every serve point not yet in serving.csv, then each (model, T)'s capacity point."""
    done = store.read_serving(run_dir)
    keys = set() if done.empty else {serve_key(r.model, r.seq_len, r.batch) for r in done.itertuples()}
    failed = {} if done.empty else {(r.model, r.seq_len): r.batch for r in done.itertuples() if r.status in FAILED}
    copy_gbs = (machine.get("memory_bandwidth") or {}).get("copy_gbs")
    for T, spec, B in serve_points(c):
        if serve_key(spec.text, T, B) in keys:
            continue
        row = serve_one(spec, T, B, "grid", c, run_dir, wkv, copy_gbs, failed.get((spec.text, T)))
        store.append_serving(run_dir, row)
        echo(serve_line(row))
        if row["status"] in FAILED:
            failed.setdefault((spec.text, T), B)
    budget = machine.get("memory_budget_bytes")
    if not c.confirm_max_batch or not budget:
        return
    rows = store.read_serving(run_dir)
    for T in c.lengths[SERVE]:
        for spec in c.specs:
            mine = rows[(rows["model"] == spec.text) & (rows["seq_len"] == T)]
            per_seq = measured_bytes_per_sequence(mine)
            B = capacity_batch(budget, per_seq[0] if per_seq else None)
            ran = set(mine[mine["status"] == "ok"]["batch"])
            if not B or B in set(mine["batch"]) or B <= max(ran, default=0) or B > c.confirm_max_batch:
                continue  # run already, within the grid (its rows say it), or too many to run here: a prediction
            row = serve_one(spec, T, B, "capacity", c, run_dir, wkv, copy_gbs, failed.get((spec.text, T)))
            store.append_serving(run_dir, row)
            echo(serve_line(row))


def serve_one(spec: ModelSpec, T: int, B: int, role: str, c: ScalingConfig, run_dir: Path, wkv: str | None,
              copy_gbs: float | None, failed_at: int | None) -> dict:
    state = analytic_state_bytes(spec, T, c.dtype)
    predicted = predicted_bytes(spec, T, B, c, state)
    base = {"model": spec.text, "family": spec.family, "seq_len": T, "batch": B, "role": role,
            "predicted_mem_bytes": predicted, "state_bytes": state, "device": c.device, "dtype": c.dtype}
    if failed_at is not None and failed_at < B:
        return {**base, "status": "skipped", "error": f"not run: failed at B={failed_at}"}
    refusal = memory_refusal(predicted, c.memory_limit_bytes)
    if refusal:
        return {**base, "status": "skipped", "error": refusal.replace("(KV cache and activations)",
                                                                      "(states or KV caches, activations)")}
    result = launch(point_spec(spec.text, T, B, c, wkv), run_dir / store.LOG_DIR)[SERVE]
    row = {**base, **{k: v for k, v in result.items() if k != "log"}}
    if row.get("status") == "ok":
        state = row.get("state_bytes") or state
        row["state_bytes"] = state
        row["held_per_seq_bytes"] = row["held_mem_bytes"] / B if row.get("held_mem_bytes") is not None else None
        if state is not None and row.get("step_weights_bytes"):
            row["step_read_bytes"] = row["step_weights_bytes"] + B * state
            row.update(step_bandwidth(row["step_read_bytes"], row.get("step_median_s"), copy_gbs))
    return row


def point_spec(model: str, T: int, B: int, c: ScalingConfig, wkv: str | None) -> PointSpec:
    return PointSpec(model=model, tokenizer=c.tokenizer, scenario=SERVE, phases=[SERVE], seq_len=T, batch=B,
                     prefill_token_budget=c.prefill_token_budget, device=c.device, dtype=c.dtype,
                     warmup=c.warmup, prompt_len=c.prompt_len, time_budget_s=float(c.time_budget),
                     memory_limit_bytes=c.memory_limit_bytes, seed=c.seed, chunk_size=c.chunk_size,
                     threads=c.threads, decode_steps=c.decode_steps, wkv=wkv)


def serve_line(row: dict) -> str:
    head = f"{row['model']:<28} serve    T={row['seq_len']:<7} B={row['batch']:<6}"
    if row["status"] != "ok":
        color = "yellow" if row["status"] == "skipped" else "red"
        return f"{head} [{color}]{row['status']}[/{color}] {row.get('error', '')}"[:400]
    held = (row.get("held_mem_bytes") or 0) / 2 ** 20
    return (f"{head} ok  {row['decode_tokens_per_s']:.4g} tok/s aggregate  {1000 * row['step_median_s']:.3g} ms/step  "
            f"held {held:.1f} MiB ({row['prefill']})" + (" [capacity]" if row.get("role") == "capacity" else ""))
