"""The allocator policy every scaling child sets: freed blocks are kept for reuse, so a forward pass does not
page-fault its buffers in anew each time, and trim still hands them back, so RSS readings stay live memory."""
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import resource, statistics, sys
    import psutil, torch
    from rwkv_bench import allocator
    from rwkv_bench.models.rwkv4 import RWKV4, RWKVConfig
    if sys.argv[1] == "keep":
        allocator.keep_freed_memory()
    faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.manual_seed(0)
    model = RWKV4(RWKVConfig(vocab_size=1000, n_layer=2, n_embd=768)).eval()
    tokens = torch.randint(0, 1000, (1, 512))
    per_pass = []
    with torch.inference_mode():
        for _ in range(6):
            before = faults()
            model.hidden(tokens, model.init_state(1), recurrent=False)
            per_pass.append(faults() - before)
    rss = psutil.Process().memory_info().rss
    allocator.trim()
    print(int(statistics.median(per_pass[2:])), rss - psutil.Process().memory_info().rss)
""")


def probe(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    faults, released = map(int, out.split())
    return faults, released


def test_a_forward_pass_reuses_kept_blocks_and_trim_returns_them():
    default_faults, _ = probe("default")
    kept_faults, released = probe("keep")
    # glibc's default: thousands of fresh pages per warm pass (about 7,000 on the Intel Xeon here)
    assert default_faults > 1000
    assert kept_faults < default_faults / 4
    assert released > 2**20   # what the passes left in the heap goes back to the OS on trim
