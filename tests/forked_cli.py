"""Run many invocations of the installed `rwkv-bench` console script without paying its imports each time.

One server process imports what the command line loads (torch, transformers, pandas, the package), then
forks once per invocation; the child points fds 0/1/2 at /dev/null and two files, sets sys.argv and runs the
installed console script file itself as __main__, so argv parsing, the error mapping of rwkv_bench/cli.py
and the exit code are the real ones, only the imports are already done. It leaves as the interpreter would
(atexit handlers, flushed streams, SystemExit's code) but skips tearing down every module, which costs a
forked child a second of copy-on-write page faults. Every child starts from the same freshly imported state:
no invocation sees what another one did.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

CLI = str(Path(sys.executable).parent / "rwkv-bench")

# imported once in the server; everything else an invocation needs it imports itself, as it would alone
PRELOAD = ("torch", "safetensors.torch", "pandas", "transformers", "rwkv_bench.cli")


def run_forked(argvs: list[list[str]], cwd: Path, env: dict, parallel: int = 2, timeout: float = 300,
               preload: tuple[str, ...] = PRELOAD) -> list[tuple[int, str, str, float]]:
    """(exit code, stdout, stderr, seconds) of `rwkv-bench *argv` for each argv, run `parallel` at a time."""
    request = json.dumps({"cli": CLI, "argvs": argvs, "parallel": parallel, "preload": list(preload)})
    # its own session, so that a timeout ends the server and every child it forked
    server = subprocess.Popen([sys.executable, __file__], cwd=cwd, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = server.communicate(request, timeout=timeout)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode == 0, f"the fork server failed (exit {server.returncode}):\n{err[-3000:]}"
    return [tuple(r) for r in json.loads(out)]


# ---- the server (run as a script by run_forked) ----

def start_child(cli: str, argv: list[str], out_path: str, err_path: str) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    import runpy

    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
    os.dup2(os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
    sys.argv = [cli, *argv]
    code = 0
    try:
        runpy.run_path(cli, run_name="__main__")  # the script ends in sys.exit(entry())
    except SystemExit as exc:
        code = exit_status(exc.code)
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        import traceback

        traceback.print_exc()
        code = 1
    leave(code)


def exit_status(code) -> int:
    """The process exit status Python gives `sys.exit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def leave(code: int) -> None:
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


def serve(request: dict) -> list:
    import importlib
    import shutil
    import tempfile
    import time

    import gc

    for name in request["preload"]:
        importlib.import_module(name)
    gc.freeze()  # the collector of a child then leaves the imported objects (and their pages) alone
    scratch = Path(tempfile.mkdtemp(prefix="forked-cli-"))  # the children's stdout and stderr files
    argvs, parallel = request["argvs"], request["parallel"]
    results: list = [None] * len(argvs)
    running: dict[int, tuple[int, float]] = {}
    queue = list(range(len(argvs)))
    while queue or running:
        while queue and len(running) < parallel:
            i = queue.pop(0)
            running[start_child(request["cli"], argvs[i], str(scratch / f"{i}.out"), str(scratch / f"{i}.err"))] = (
                i, time.perf_counter())
        pid, status = os.wait()
        i, started = running.pop(pid)
        out, err = (scratch / f"{i}.out").read_text(errors="replace"), (scratch / f"{i}.err").read_text(errors="replace")
        results[i] = [exit_code(status), out, err, time.perf_counter() - started]
    shutil.rmtree(scratch)
    return results


if __name__ == "__main__":
    answer = serve(json.loads(sys.stdin.read()))
    sys.stdout.write(json.dumps(answer))
