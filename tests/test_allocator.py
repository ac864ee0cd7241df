"""The allocator policy every scaling child sets (rwkv_bench/allocator.py): a freed 8 MiB block stays in the
heap for the next pass to reuse (no fresh pages to fault in), and trim still hands it back to the OS, so RSS
readings stay live memory. Probed with glibc's malloc itself in a fresh process (no torch: its imports would
move glibc's dynamic thresholds); what the policy saves a real forward pass is benchmarks/profile_rwkv.py's
--default-allocator comparison."""
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import ctypes, sys
    from rwkv_bench import allocator
    if sys.argv[1] == "keep":
        allocator.keep_freed_memory()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096

    def in_heap(address):
        for line in open("/proc/self/maps"):
            if line.rstrip().endswith("[heap]"):
                low, high = (int(x, 16) for x in line.split()[0].split("-"))
                return low <= address < high
        return False

    size = 8 * 2**20
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)              # touch every page
    heap = in_heap(block)
    before_free = rss()
    libc.free(block)
    after_free = rss()
    allocator.trim()
    print(int(heap), before_free - after_free, after_free - rss())
""")


def probe(mode: str) -> tuple[bool, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    heap, freed_at_free, freed_at_trim = map(int, out.split())
    return bool(heap), freed_at_free, freed_at_trim


def test_glibcs_default_returns_a_freed_block_at_once():
    heap, freed_at_free, _ = probe("default")
    assert not heap                       # mmapped: above glibc's initial 128 KiB threshold
    assert freed_at_free > 7 * 2**20      # and unmapped by free: the next pass faults its pages in again


def test_kept_blocks_stay_for_reuse_until_trim_returns_them():
    heap, freed_at_free, freed_at_trim = probe("keep")
    assert heap                           # below the raised threshold: from the heap
    assert freed_at_free < 2**20          # free keeps it (the trim threshold is raised too)
    assert freed_at_trim > 7 * 2**20      # trim hands it back, so a memory reading after trim is live memory
