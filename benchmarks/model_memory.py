"""Peak memory of our chunked RWKV-4 forward at 1,000 vs 100,000 tokens (CPU, fp32, random weights).

Each length runs in a fresh child process, so the peak resident set size (ru_maxrss) belongs to that forward
alone. The claim checked: with chunking, peak memory does not depend on T (goal: 100k within 10% of 1k).
Usage: python benchmarks/model_memory.py [--size 169m] [--lengths 1000,100000] [--chunk 1024]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from rwkv_bench.recording import environment

from _timing import write_result

CHILD = """
import json, resource, sys, threading, time, psutil, torch
from rwkv_bench.models.presets import SIZES, VOCAB
from rwkv_bench.models.rwkv4 import RWKV4, RWKVConfig, init_random_
size, T, chunk = SIZES[sys.argv[1]], int(sys.argv[2]), int(sys.argv[3])
model = init_random_(RWKV4(RWKVConfig(vocab_size=VOCAB, n_layer=size.n_layer, n_embd=size.n_embd))).eval()
model(torch.randint(0, VOCAB, (1, 8)))            # warm-up: kernel loaded, allocator primed
# ru_maxrss is the whole life's peak (model init included), so also sample the RSS during the forward
proc, samples, done = psutil.Process(), [], threading.Event()
def sample():
    while not done.wait(0.002):
        samples.append(proc.memory_info().rss)
tokens = torch.randint(0, VOCAB, (1, T))
before = proc.memory_info().rss
sampler = threading.Thread(target=sample); sampler.start()
t0 = time.perf_counter()
model(tokens, chunk_size=chunk, last_only=True)
seconds = time.perf_counter() - t0
done.set(); sampler.join()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(tokens=T, peak_rss_bytes=peak, rss_before_forward_bytes=before,
                      forward_peak_rss_bytes=max(samples + [before]), forward_s=seconds)))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="169m")
    ap.add_argument("--lengths", default="1000,100000")
    ap.add_argument("--chunk", type=int, default=1024)
    args = ap.parse_args()
    rows = []
    for T in (int(x) for x in args.lengths.split(",")):
        out = subprocess.run([sys.executable, "-c", CHILD, args.size, str(T), str(args.chunk)],
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base = rows[0]["peak_rss_bytes"]
    during = rows[0]["forward_peak_rss_bytes"]
    print("\n| tokens | forward_s | process peak RSS (MiB) | / first | peak RSS during forward (MiB) | / first | "
          "growth during forward (MiB) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tokens']} | {r['forward_s']:.2f} | {r['peak_rss_bytes'] / 2**20:.1f} | "
              f"{r['peak_rss_bytes'] / base:.3f} | {r['forward_peak_rss_bytes'] / 2**20:.1f} | "
              f"{r['forward_peak_rss_bytes'] / during:.3f} | "
              f"{(r['forward_peak_rss_bytes'] - r['rss_before_forward_bytes']) / 2**20:.1f} |")
    write_result("model_memory.json", {"environment": environment("cpu", "float32"), "size": args.size,
                                       "chunk": args.chunk, "rows": rows})


if __name__ == "__main__":
    main()
