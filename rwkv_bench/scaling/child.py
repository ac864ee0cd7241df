"""One point in a fresh process: `python -m rwkv_bench.scaling.child SPEC.json`.

Reads a PointSpec, measures it, and writes the result JSON (atomically) where the spec says. Failures it
can catch become a result with status oom / timeout / error; a crash or a kill leaves no result, and the
launcher classifies the exit instead. The child dies with its parent (PR_SET_PDEATHSIG on Linux), so
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
    from ..recording import write_json
    from .measure import PointFailure, is_oom, one_line, run_point
    from .points import PointSpec

    spec = PointSpec.from_json(Path(argv[0]).read_text())
    try:
        result = run_point(spec)
    except PointFailure as exc:
        result = {**getattr(exc, "info", {}), "status": exc.status, "error": str(exc)}
        if exc.__cause__ is not None:
            import traceback

            traceback.print_exception(exc.__cause__)  # into the point's log file
    except BaseException as exc:  # noqa: BLE001 - loading failures, anything unexpected: one line
        result = {"status": "oom" if is_oom(exc) else "error", "error": one_line(exc)}
        import traceback

        traceback.print_exc()  # into the point's log file
    result["child_wall_s"] = time.perf_counter() - t0
    write_json(spec.result_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
