"""One point in a fresh process: `python -m rwkv_bench.scaling.child SPEC.json`.

Reads a PointSpec, measures its phases, and writes the result JSON (atomically) where the spec says, after
each phase and at the end (`{"info": ..., "phases": {phase: row fields}, "complete": true}`). Failures it
can catch become a phase with status oom / timeout / error; a crash or a kill leaves the phases not yet
written without a result, and the launcher classifies the exit for them instead. The child dies with its parent (PR_SET_PDEATHSIG on Linux), so
killing a sweep never leaves a measurement running.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

PARENT_PID_ENV = "RWKV_BENCH_PARENT_PID"


def die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    expected = os.environ.get(PARENT_PID_ENV)
    if expected and os.getppid() != int(expected):  # the parent died before prctl took effect
        sys.exit(3)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    die_with_parent()
    t0 = time.perf_counter()
    from ..allocator import keep_freed_memory

    keep_freed_memory()  # before anything is allocated: the same allocator for every model measured
    from ..recording import write_json
    from .measure import PointFailure, is_oom, one_line, run_point
    from .points import PointSpec

    spec = PointSpec.from_json(Path(argv[0]).read_text())

    def save(result: dict) -> None:
        write_json(spec.result_path, result)

    try:
        result = run_point(spec, save=save)
    except BaseException as exc:  # noqa: BLE001 - loading failures, anything before the phases: one line
        status = exc.status if isinstance(exc, PointFailure) else "oom" if is_oom(exc) else "error"
        failure = {"status": status, "error": str(exc) if isinstance(exc, PointFailure) else one_line(exc)}
        info = getattr(exc, "info", {})
        result = {"info": info, "phases": {phase: {**info, **failure} for phase in spec.phases}}
        import traceback

        traceback.print_exc()  # into the point's log file
    result["child_wall_s"] = time.perf_counter() - t0
    result["complete"] = True
    write_json(spec.result_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
