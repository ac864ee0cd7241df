"""What each scenario of a sweep measures, in words: meta.json's `protocol`, shown in summary.md."""
from __future__ import annotations

from .. import allocator
from .config import ScalingConfig


def describe(c: ScalingConfig) -> dict[str, str]:
    kv = ("with their KV cache (transformers' default)" if c.kv_cache else
          "WITHOUT a KV cache: the whole growing sequence is re-run for every token (the paper's protocol)")
    return {
        "inputs": f"random token ids (seed {c.seed}); no text is encoded",
        "prefill": (f"one forward pass over T tokens, last position's logits only; median of up to "
                    f"{c.repeats} timed passes (fewer once they took {c.repeat_time:g} s) after {c.warmup} untimed "
                    f"warm-up pass(es) over the first min(T, 1024) tokens. RWKV: chunked parallel mode (chunk "
                    f"{c.chunk_size}); transformers: one pass with SDPA attention"),
        "decode": (f"the cost of one generated token at context T: in the prefill's child, from the state (RWKV) "
                   f"or KV cache (transformers) its last pass left, up to {c.decode_steps} greedy steps, "
                   f"each timed (latency_s: median, latency_mean_s: mean, min/max: spread); transformers {kv}. "
                   f"Without a KV cache a step is a forward over T + 1 tokens, and steps stop after "
                   f"{c.repeat_time:g} s. Memory: from the loaded model, so the state or KV cache at T counts. "
                   + (f"Then steps continuing the state at T alternate with steps from a state at "
                      f"{c.decode_ref_len} tokens (ref_latency_s, interleaved_latency_s): machine drift "
                      "hits both alike" if c.decode_ref_len else "")),
        "figure 7": ("cumulative time to generate T tokens = the sum of per-token latencies at contexts 1..T, "
                     "integrated from the decode samples (latency_mean_s; a power law between grid points, "
                     "straight in log-log, constant below the first); the paper's no-cache protocol from the "
                     "prefill samples (a step at context t is a forward over t tokens: the prefill at T = t); "
                     "checked against the directly generated tokens where both exist"),
        "generate": (f"greedy decoding of T tokens after a {c.prompt_len}-token prompt, each step timed; "
                     f"RWKV in recurrent mode; transformers {kv}. latency_s = mean per-token time over the last "
                     "10% of positions; cumulative_s = sum of the T step times (prompt excluded, see prompt_s)"),
        "memory": ("CPU: live memory of the child: its peak RSS during the phase (the kernel's VmHWM, reset "
                   "when the phase begins; also sampled every 3 ms by the launcher), above its RSS after loading, "
                   "warm-up and malloc_trim; malloc_trim (untimed) before each phase and every 64 generate steps "
                   "returns the heap glibc keeps after free, so freed buffers do not pile up (timed steps are "
                   "not trimmed one by one: the next step would pay to fault the pages in again); decode's "
                   "held_mem_bytes is the RSS after its steps and a trim; --memory-limit is enforced "
                   "on the sampled number. Transformer points are predicted first (KV cache 2 x layers x T x d "
                   "x bytes plus activations, predicted_mem_bytes) and skipped when they cannot fit. CUDA: "
                   "torch.cuda.max_memory_allocated above memory_allocated before the measured runs. "
                   "weights_bytes is reported separately"),
        "serve": (f"B sequences at context T decoded together (serving.csv), one child per (model, T, B), B from "
                  f"{c.batch_grid(False)} (recurrent models, RWKV and Mamba, on to {c.batch_grid(True)[-1]}): B "
                  f"different random prompts prefilled in one batched call while B x T <= "
                  f"{c.prefill_token_budget:,} tokens (prefill = distinct), else one prompt prefilled and its state "
                  f"or KV cache repeated B times, real copies (prefill = copies); 2 untimed then up to "
                  f"{c.decode_steps} timed steps, each advancing all B rows one greedy token (median and p90 per "
                  "step; aggregate tokens/s = B x steps / their time). held_mem_bytes: RSS after the steps and a "
                  "trim, above the loaded model. Capacity: the largest B whose states fit the memory budget "
                  "(meta.json machine), predicted from the bytes per sequence measured over the grid, run to "
                  f"confirm it when it lies beyond the grid and B <= {c.confirm_max_batch:,}"),
        "bandwidth": ("a decode step reads every weight once plus its state or KV cache: step_read_bytes = "
                      "step_weights_bytes (every weight but the input embedding table, of which one row per "
                      "sequence is gathered) + B x state_bytes, over the median step, against the machine's copy "
                      "bandwidth measured at the start of the run (bandwidth.py, meta.json machine)"),
        "isolation": "every point in a fresh subprocess; the time budget counts from the end of loading",
        "allocator": f"every child, whatever model it measures: {allocator.policy()}",
        "tokenizer": "none is used: token ids are random",
    }
