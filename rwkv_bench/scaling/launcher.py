"""Each point in its own fresh process (as optimum-benchmark's process launcher does).

`sys.executable -m rwkv_bench.scaling.child SPEC.json`, no shell. The parent watches the child:
- loading (interpreter start, imports, model build) may take up to `load_timeout_s`;
- once the child says it has loaded, it has `time_budget_s` per phase (prefill and decode of one length share
  a child) plus a small grace for the child to report its own timeout, before it is killed: phase k (counted
  from the measured regions the child opened and closed) by (k + 1) budgets after loading, so a prefill that
  cannot finish is cut off after its own budget, not after the sum of all its child's phases;
- while a phase's measured region is open (the child writes its memory baseline to a file), the launcher
  samples the child's RSS every few milliseconds (CPU memory is also seen from outside the timed process),
  and under --memory-limit kills it once the RSS above the baseline passes the limit (status oom);
- a child killed by SIGKILL that the launcher did not kill is taken as the kernel's OOM killer; under a
  --memory-limit, an abort or segfault is an allocation failure too.
The outcome is always one row per phase: status ok / oom / timeout / error, with a one-line error text (the
phases a killed child had finished keep their results). The child's
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
from .points import PointSpec, region_files

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
           poll_s: float = 0.05) -> dict[str, dict]:  # noqa: C901 - one loop that watches one child
    """Run one point's phases in a child process; returns {phase: result dict (with 'status', 'error',
    'wall_s')}."""
    log_dir.mkdir(parents=True, exist_ok=True)
    phases = list(spec.phases)
    name = f"{slug(spec.model)}_{'+'.join(phases)}_{spec.seq_len}" + (f"_B{spec.batch}" if spec.batch > 1 else "")
    log_path = log_dir / f"{name}.log"
    budget_s = spec.time_budget_s
    peaks: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="rwkv-bench-point-") as tmp:
        tmp = Path(tmp)
        spec.result_path = str(tmp / "result.json")
        spec.loaded_path = str(tmp / "loaded")
        spec.region_path = str(tmp / "region")
        regions = [region_files(spec.region_path, phase) for phase in phases]
        current, baseline = 0, None  # the phase whose region is awaited or open, and its baseline
        spec_path = spec.write(tmp / "spec.json")
        env = dict(os.environ, **{PARENT_PID_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"})
        cmd = [sys.executable, "-m", "rwkv_bench.scaling.child", str(spec_path)]
        t_spawn = time.monotonic()
        loaded_at = None
        killed_for = None
        extra_mib = 0.0
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        sampler = RssSampler(proc.pid)
        try:
            while True:
                if current < len(phases):
                    begin, end = regions[current]
                    if baseline is None and begin.exists():
                        baseline = json.loads(begin.read_text())["baseline"]
                        sampler.peak = 0  # this phase's own peak
                    if baseline is not None and end.exists():
                        peaks[phases[current]] = sampler.peak
                        current, baseline = current + 1, None
                        continue
                measuring = baseline is not None
                try:
                    proc.wait(timeout=SAMPLE_S if measuring else poll_s)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if measuring:
                    rss = sampler.sample()
                    if spec.memory_limit_bytes and rss - baseline > spec.memory_limit_bytes:
                        killed_for = "memory"
                now = time.monotonic()
                if loaded_at is None and Path(spec.loaded_path).exists():
                    loaded_at = now
                if loaded_at is None and now - t_spawn > load_timeout_s:
                    killed_for = "load"
                elif loaded_at is not None and now - loaded_at > min(current + 1, len(phases)) * (
                        budget_s + grace_s(budget_s)):  # phase `current` is awaited or running
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
        data = read_result(Path(spec.result_path))
    failure = None
    if killed_for or not data.get("complete"):
        failure = classify(proc.returncode, killed_for, log_path, spec, load_timeout_s, budget_s)
        if killed_for == "memory":
            failure["error"] += f" (+{extra_mib:.0f} MiB above the loaded model)"
    info = data.get("info") or {}
    results = {}
    for phase in phases:
        result = dict((data.get("phases") or {}).get(phase) or {**info, **(failure or {
            "status": "error", "error": f"the child reported no result for {phase}"})})
        if result.get("status") == "ok" and "peak_total_bytes" in result and not spec.device.startswith("cuda"):
            total = max(result["peak_total_bytes"], peaks.get(phase, 0))  # the child's own peak, or sampled here
            result.update(peak_total_bytes=total, peak_mem_bytes=max(0, total - result["baseline_bytes"]))
        result["wall_s"] = wall_s
        results[phase] = result
    if all(r.get("status") == "ok" for r in results.values()):
        log_path.unlink(missing_ok=True)
    else:
        for r in results.values():
            if r.get("status") != "ok":
                r["log"] = str(log_path)
    return results


def read_result(path: Path) -> dict:
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            pass
    return {}


def classify(returncode: int, killed_for: str | None, log_path: Path, spec: PointSpec, load_timeout_s: float,
             budget_s: float | None = None) -> dict:
    """Why a child ended without a result for some phase: the launcher's kill, a signal, an exit code."""
    if killed_for == "memory":
        return {"status": "oom", "error": f"killed: its memory above the loaded model passed --memory-limit "
                                          f"{spec.memory_limit_bytes / 2 ** 20:g} MiB"}
    if killed_for == "budget":
        budget = spec.time_budget_s if budget_s is None else budget_s
        return {"status": "timeout", "error": f"killed after exceeding the time budget of {budget:g} s"}
    if killed_for == "load":
        return {"status": "timeout", "error": f"loading took longer than {load_timeout_s:g} s"}
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGKILL:
            return {"status": "oom", "error": "killed by SIGKILL (most likely the kernel's out-of-memory killer)"}
        if spec.memory_limit_bytes and sig in (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS):
            return {"status": "oom", "error": f"{signal_name(sig)} under --memory-limit (allocation failure): "
                                              f"{last_line(log_path)}"[:300]}
        return {"status": "error", "error": f"child killed by {signal_name(sig)}: {last_line(log_path)}"[:300]}
    return {"status": "error", "error": f"child exited with code {returncode}: {last_line(log_path)}"[:300]}
