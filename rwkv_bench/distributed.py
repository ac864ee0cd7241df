"""torch.distributed for scenarios launched by torchrun: who am I, one process group, objects between ranks.

`torchrun --nproc-per-node N --no-python rwkv-bench <scenario> ...` starts N copies of the command with
RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE (and MASTER_ADDR/PORT) in their environment; multi-node
launches add --nnodes/--node-rank/--rdzv-* and the same variables come out. Without torchrun (or with a
world of one) `init()` returns a single-process `Dist` and every helper here is a no-op, so a scenario
written against this module runs unchanged on its own.

The process group: gloo on CPU; on a machine with CUDA "cpu:gloo,cuda:nccl", so tensor collectives on GPUs
use NCCL while the object collectives a scenario needs (`gather_objects`, `broadcast_object`, `barrier`)
run over gloo on CPU memory, and need no device to be set first. Each rank's device is its LOCAL_RANK's
GPU (`device_for`); on CPU each rank takes an equal share of the cores (`cpu_thread_share`), so N ranks
do not oversubscribe a machine.
"""
from __future__ import annotations

import sys

import signal

import datetime as dt
import os
from contextlib import contextmanager
from dataclasses import dataclass

# Ranks wait for rank 0 while it fetches inputs (arXiv at one request every 3 s can take an hour or more)
# and for the slowest rank at the end: far longer than torch's 30-minute default. A rank that dies does
# not leave the others waiting this long: torchrun notices the dead worker and stops the rest.
TIMEOUT = dt.timedelta(hours=24)


@dataclass(frozen=True)
class Dist:
    """This process's place in the launch (rank 0 of 1 without torchrun)."""
    rank: int = 0                   # RANK: this process's place among all of them
    world_size: int = 1             # WORLD_SIZE: processes in the launch
    local_rank: int = 0             # LOCAL_RANK: its place on this machine, which picks its GPU
    local_world_size: int = 1       # LOCAL_WORLD_SIZE: processes sharing this machine's cores

    @property
    def enabled(self) -> bool:
        """True when several processes work together (a process group is, or will be, set up)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env(environ=None) -> Dist:
    """RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE as torchrun sets them (absent: one process)."""
    env = os.environ if environ is None else environ

    def read(name: str, default: int) -> int:
        value = env.get(name)
        try:
            return int(value) if value not in (None, "") else default
        except ValueError:
            raise ValueError(f"{name}={value!r} is not an integer (set by torchrun)") from None

    world = read("WORLD_SIZE", 1)
    local_world = read("LOCAL_WORLD_SIZE", world)
    return Dist(rank=read("RANK", 0), world_size=world, local_rank=read("LOCAL_RANK", 0),
                local_world_size=max(1, local_world))


def process_group_backend() -> str:
    import torch

    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init() -> Dist:
    """This process's `Dist`; under torchrun (world > 1) also the default process group, once, and this
    rank's share of the CPU cores (see `cpu_thread_share`)."""
    import torch
    import torch.distributed as tdist

    dist = from_env()
    if not dist.enabled:
        return dist
    if not tdist.is_available():
        raise RuntimeError("this torch build has no torch.distributed: run without torchrun")
    if not tdist.is_initialized():
        tdist.init_process_group(backend=process_group_backend(), timeout=TIMEOUT)
    torch.set_num_threads(cpu_thread_share(dist))
    return dist


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_thread_share(dist: Dist) -> int:
    """The cores of this node divided between its ranks (at least one thread each)."""
    return max(1, usable_cores() // dist.local_world_size)


def device_for(device: str, dist: Dist) -> str:
    """The device this rank computes on: "cuda" (or any "cuda:N") becomes its LOCAL_RANK's GPU under torchrun
    (LOCAL_RANK modulo the GPUs there are, so more ranks than GPUs share them); "cpu" stays "cpu"."""
    if dist.enabled and device.startswith("cuda"):
        import torch

        index = dist.local_rank % max(1, torch.cuda.device_count())
        torch.cuda.set_device(index)
        return f"cuda:{index}"
    return device


def barrier(dist: Dist) -> None:
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()


def broadcast_object(obj, dist: Dist, src: int = 0):
    """`obj` as rank `src` has it, on every rank (pickled; other ranks pass anything, e.g. None)."""
    if not dist.enabled:
        return obj
    import torch.distributed as tdist

    box = [obj if dist.rank == src else None]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj, dist: Dist, dst: int = 0) -> list | None:
    """Every rank's `obj`, in rank order, on rank `dst` (None on the others); [obj] in a single process."""
    if not dist.enabled:
        return [obj]
    import torch.distributed as tdist

    out = [None] * dist.world_size if dist.rank == dst else None
    tdist.gather_object(obj, out, dst=dst)
    return out


def all_gather_objects(obj, dist: Dist) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not dist.enabled:
        return [obj]
    import torch.distributed as tdist

    out = [None] * dist.world_size
    tdist.all_gather_object(out, obj)
    return out


class RankZeroFailed(SystemExit):
    """Raised on the other ranks when rank 0's `rank_zero_first` step failed. Rank 0 reports the error; the
    others leave quietly with exit status 2 (a SystemExit: no second copy of the message, no traceback).
    `message` holds rank 0's error."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def rank_zero_first(fn, dist: Dist):
    """Run `fn()` on rank 0 alone and hand its result to every rank (the others wait meanwhile: e.g. rank 0
    talks to a web API and reads the inputs, the others use what it found). If `fn` raises on rank 0, it
    raises there and every other rank raises `RankZeroFailed` with the same one-line message, so the launch
    fails cleanly instead of the others waiting until the timeout."""
    if not dist.enabled:
        return fn()
    if dist.is_main:
        try:
            result = fn()
        except BaseException as exc:
            broadcast_object(("error", f"{type(exc).__name__}: {exc}"), dist)
            raise
        broadcast_object(("ok", result), dist)
        return result
    status, payload = broadcast_object(None, dist)
    if status == "error":
        raise RankZeroFailed(f"rank 0 failed: {payload}")
    return payload


@contextmanager
def rank_zero_only(dist: Dist):
    """`with rank_zero_only(dist) as me:` - `me` is True on rank 0 (do the writing there), False elsewhere;
    every rank meets at a barrier on the way out, so what rank 0 wrote is there for all."""
    yield dist.is_main
    barrier(dist)  # not reached when the body raised: torchrun stops the ranks that wait


def shutdown() -> None:
    """Tear the process group down (at the end of a command), if one was set up."""
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


# ---- a test hook: kill one rank mid-run, to test that --resume completes what a dead rank left ----
DIE_AFTER_ENV, DIE_RANK_ENV = "RWKV_BENCH_TEST_DIE_AFTER", "RWKV_BENCH_TEST_DIE_RANK"


def die_after() -> tuple[int, int] | None:
    """(rank, units of work) after which the test hook kills that rank, or None (the normal case)."""
    count = os.environ.get(DIE_AFTER_ENV)
    return (int(os.environ.get(DIE_RANK_ENV, "1")), int(count)) if count else None


def die_if_asked(die: tuple[int, int] | None, dist: "Dist", done: int) -> None:
    if die is not None and die == (dist.rank, done):
        print(f"rank {dist.rank}: killed by {DIE_AFTER_ENV}={done} (a test of --resume)", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
