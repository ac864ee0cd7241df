"""Each point in its own fresh process (as optimum-benchmark's process launcher does).

`sys.executable -m rwkv_bench.scaling.child SPEC.json`, no shell. The parent watches the child:
- loading (interpreter start, imports, model build) may take up to `load_timeout_s`;
- once the child says it has loaded, the point has `time_budget_s` (plus a small grace for the child to
  report its own timeout) before it is killed;
- while the child's measured region is open (it writes its memory baseline to a file), the launcher samples
  the child's RSS every few milliseconds (CPU memory is measured from outside the timed process), and under
  --memory-limit kills it once the RSS above the baseline passes the limit (status oom);
- a child killed by SIGKILL that the launcher did not kill is taken as the kernel's OOM killer; under a
  --memory-limit, an abort or segfault is an allocation failure too.
The outcome is always a row: status ok / oom / timeout / error, with a one-line error text. The child's
stdout and stderr go to a log file, kept for points that did not succeed.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..trackers import RssSampler
from .child import PARENT_PID_ENV
from .points import PointSpec

LOAD_TIMEOUT_S = 600.0
SAMPLE_S = 0.003          # RSS sampling period while the child measures


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "model"


def grace_s(budget_s: float) -> float:
    return 2.0 + 0.05 * budget_s


def last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def launch(spec: PointSpec, log_dir: Path, *, load_timeout_s: float = LOAD_TIMEOUT_S,
           poll_s: float = 0.05) -> dict:  # noqa: C901 - one loop that watches one child
    """Run one point in a child process; returns its result dict (with 'status', 'error', 'wall_s')."""
    log_dir.mkdir(parents=True, exist_ok=True)
    name = f"{slug(spec.model)}_{spec.scenario}_{spec.seq_len}"
    log_path = log_dir / f"{name}.log"
    with tempfile.TemporaryDirectory(prefix="rwkv-bench-point-") as tmp:
        tmp = Path(tmp)
        spec.result_path = str(tmp / "result.json")
        spec.loaded_path = str(tmp / "loaded")
        spec.region_path = str(tmp / "region.json")
        region, region_end = Path(spec.region_path), Path(spec.region_path).with_suffix(".end")
        baseline = None
        spec_path = spec.write(tmp / "spec.json")
        env = dict(os.environ, **{PARENT_PID_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"})
        cmd = [sys.executable, "-m", "rwkv_bench.scaling.child", str(spec_path)]
        t_spawn = time.monotonic()
        loaded_at = None
        killed_for = None
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        sampler = RssSampler(proc.pid)
        try:
            while True:
                measuring = baseline is not None and not region_end.exists()
                try:
                    proc.wait(timeout=SAMPLE_S if measuring else poll_s)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if baseline is None and region.exists():
                    baseline = json.loads(region.read_text())["baseline"]
                if measuring:
                    rss = sampler.sample()
                    if spec.memory_limit_bytes and rss - baseline > spec.memory_limit_bytes:
                        killed_for = "memory"
                now = time.monotonic()
                if loaded_at is None and Path(spec.loaded_path).exists():
                    loaded_at = now
                if loaded_at is None and now - t_spawn > load_timeout_s:
                    killed_for = "load"
                elif loaded_at is not None and now - loaded_at > spec.time_budget_s + grace_s(spec.time_budget_s):
                    killed_for = "budget"
                if killed_for:
                    extra_mib = (sampler.peak - (baseline or 0)) / 2 ** 20
                    proc.kill()
                    proc.wait()
                    break
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C): never leave a measurement running
                proc.kill()
                proc.wait()
        wall_s = time.monotonic() - t_spawn
        result = classify(proc.returncode, killed_for, Path(spec.result_path), log_path, spec, load_timeout_s)
    if killed_for == "memory":
        result["error"] += f" (+{extra_mib:.0f} MiB above the loaded model)"
    if result.get("status") == "ok" and "peak_total_bytes" in result and not spec.device.startswith("cuda"):
        total = max(result["peak_total_bytes"], sampler.peak)  # sampled from here, or the child's high-water mark
        result.update(peak_total_bytes=total, peak_mem_bytes=max(0, total - result["baseline_bytes"]))
    result["wall_s"] = wall_s
    if result.get("status") == "ok":
        log_path.unlink(missing_ok=True)
    else:
        result["log"] = str(log_path)
    return result


def classify(returncode: int, killed_for: str | None, result_path: Path, log_path: Path, spec: PointSpec,
             load_timeout_s: float) -> dict:
    if killed_for == "memory":
        return {"status": "oom", "error": f"killed: its memory above the loaded model passed --memory-limit "
                                          f"{spec.memory_limit_bytes / 2 ** 20:g} MiB"}
    if killed_for == "budget":
        return {"status": "timeout", "error": f"killed after exceeding the time budget of {spec.time_budget_s:g} s"}
    if killed_for == "load":
        return {"status": "timeout", "error": f"loading took longer than {load_timeout_s:g} s"}
    if result_path.is_file():
        try:
            return json.loads(result_path.read_text())
        except json.JSONDecodeError:
            pass
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGKILL:
            return {"status": "oom", "error": "killed by SIGKILL (most likely the kernel's out-of-memory killer)"}
        if spec.memory_limit_bytes and sig in (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS):
            return {"status": "oom", "error": f"{signal_name(sig)} under --memory-limit (allocation failure): "
                                              f"{last_line(log_path)}"[:300]}
        return {"status": "error", "error": f"child killed by {signal_name(sig)}: {last_line(log_path)}"[:300]}
    return {"status": "error", "error": f"child exited with code {returncode}: {last_line(log_path)}"[:300]}
