"""Does one RWKV decode step cost more late in a sequence than early? (CPU, random weights.)

The scaling sweep measures each length in its own process, minutes apart, so a shared machine's drift
(several percent) shows up as a difference between lengths. Here one state is advanced to a late position and
another kept early (restarted every `--early` steps), and their steps alternate: drift hits both alike and
what is left is the cost of the position itself. Expected for RWKV: none (the state has a fixed size).
Usage: python benchmarks/decode_position.py [--model rwkv4-tiny] [--late 5000] [--steps 1500] [--early 50]
"""
from __future__ import annotations

import argparse
import statistics
import time

from rwkv_bench.backends import resolve

PROMPT = [1, 2, 3, 4]


def timed_step(backend, token, state):
    t0 = time.perf_counter()
    logits, state = backend.step(token, state)
    token = int(logits.argmax())  # greedy, and waits for the result
    return token, state, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="rwkv4-tiny")
    ap.add_argument("--late", type=int, default=5000, help="position the late state starts from")
    ap.add_argument("--steps", type=int, default=1500, help="timed steps of each state")
    ap.add_argument("--early", type=int, default=50, help="the early state is restarted after this many steps")
    args = ap.parse_args()
    backend = resolve(args.model, seed=0)

    logits, late = backend.start(PROMPT)
    late_token = int(logits.argmax())
    for _ in range(args.late):
        late_token, late, _ = timed_step(backend, late_token, late)
    start_logits, start_state = backend.start(PROMPT)

    early_times, late_times = [], []
    for i in range(args.steps):
        if i % args.early == 0:
            early, early_token = start_state, int(start_logits.argmax())
        late_token, late, dt = timed_step(backend, late_token, late)
        late_times.append(dt)
        early_token, early, dt = timed_step(backend, early_token, early)
        early_times.append(dt)

    early_ms, late_ms = (statistics.median(t) * 1e3 for t in (early_times, late_times))
    print(f"{args.model}, {args.steps} interleaved steps each")
    print(f"early positions (1-{args.early}):               median {early_ms:.2f} ms per token")
    print(f"late positions ({args.late + 1}-{args.late + args.steps}):  median {late_ms:.2f} ms per token")
    print(f"late / early: {late_ms / early_ms:.3f}")


if __name__ == "__main__":
    main()
