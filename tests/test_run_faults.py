"""Faults found by trying, as a user's machine meets them, through the installed console script:
two runs into one directory, a run killed while it held its directory, a full disk."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

CLI = str(Path(sys.executable).parent / "rwkv-bench")
TEXT = ("The quick brown fox jumps over the lazy dog, and then it runs far away across the field. " * 30).strip()

# one cheap offline run per command that writes a run directory
COMMANDS = {
    "scaling": ["scaling", "-m", "rwkv4-tiny", "-s", "prefill", "--min-len", "16", "--max-len", "32",
                "--repeats", "1", "--warmup", "0", "--no-report"],
    "uncheatable": ["uncheatable", "-m", "rwkv4-tiny", "--papers-file", "papers.json", "--papers", "2"],
    "nlp": ["nlp", "-m", "rwkv4-tiny", "--tasks", "rwkv_bench_mc", "--limit", "2"],
}


def env_for(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BENCH_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONWARNINGS="ignore",
               MPLCONFIGDIR=str(tmp / "mpl"), TOKENIZERS_PARALLELISM="false")
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=cwd, env=env_for(cwd), capture_output=True, text=True, timeout=timeout)


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([CLI, *args], cwd=cwd, env=env_for(cwd), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_until_holding(proc: subprocess.Popen, run_dir: Path, timeout: float = 120) -> None:
    """Until the process has taken its run directory (the holder file is written right after the lock)."""
    deadline = time.monotonic() + timeout
    while not (run_dir / ".lock.holder").is_file():
        assert proc.poll() is None, f"the first run ended early: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the first run never took its directory"
        time.sleep(0.05)


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one error line (after whatever progress the run printed on stderr before it)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]), result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    (tmp_path / "papers.json").write_text(json.dumps([TEXT, TEXT + " The end."]))
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_second_run_into_a_held_directory_changes_nothing(work: Path, command: str):
    """While one run holds --out (stopped mid-way here, so the moment is certain), a second run into it and a
    `report` of it each stop with one line naming the holder, and change no file; the first then finishes."""
    args = COMMANDS[command] + ["--out", "run"]
    first = start_cli(args, work)
    try:
        wait_until_holding(first, work / "run")
        first.send_signal(signal.SIGSTOP)
        before = snapshot(work / "run")
        for second_args in (args, ["report", "run"]):
            second = run_cli(second_args, work)
            assert second.returncode == 2, second.stderr
            line = one_error_line(second)
            assert f"pid {first.pid}" in line and "being written" in line
            assert snapshot(work / "run") == before
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    meta = json.loads((work / "run" / "meta.json").read_text())
    assert meta["completed"] and "resumes" not in meta
    if command == "scaling":
        points = pd.read_csv(work / "run" / "points.csv")
        assert not points.duplicated(["model", "scenario", "seq_len"]).any()
    assert run_cli(["report", "run"], work).returncode == 0  # released when the run finished


@pytest.mark.slow
def test_a_run_killed_while_holding_its_directory_can_be_resumed(work: Path):
    """The lock dies with its holder: after kill -9, --resume takes the directory and finishes the run."""
    args = COMMANDS["scaling"] + ["--out", "run"]
    first = start_cli(args, work)
    wait_until_holding(first, work / "run")
    while not (work / "run" / "meta.json").is_file():   # mid-run: begun, not finished (it takes seconds)
        assert first.poll() is None, first.stderr.read()
        time.sleep(0.05)
    first.kill()
    first.wait()
    resumed = run_cli(COMMANDS["scaling"][:1] + ["--resume", "--out", "run"], work)
    assert resumed.returncode == 0, resumed.stderr
    points = pd.read_csv(work / "run" / "points.csv")
    assert sorted(points["seq_len"]) == [16, 32]


@pytest.mark.slow
def test_a_full_disk_names_the_file_keeps_the_rows_and_says_how_to_finish(work: Path):
    """Writing index.md hits a full disk (its temp file is /dev/full, which fails every write with ENOSPC):
    one line naming the file, the rows kept, how to finish; then `report` finishes once there is space."""
    run_dir = work / "run"
    run_dir.mkdir()
    (run_dir / "index.md.tmp").symlink_to("/dev/full")
    args = [a for a in COMMANDS["scaling"] if a != "--no-report"] + ["--out", "run"]
    result = run_cli(args, work)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert "No space left on device" in line and "internal error" not in line
    assert str(Path("run") / "index.md") in line and "kept" in line and "rwkv-bench report run" in line
    points = pd.read_csv(run_dir / "points.csv")
    assert sorted(points["seq_len"]) == [16, 32] and set(points["status"]) == {"ok"}
    assert not (run_dir / "index.md").exists()
    assert run_cli(["report", "run"], work).returncode == 0
    assert (run_dir / "index.md").is_file()


def test_resuming_a_directory_where_no_run_began_says_to_start_it(tmp_path: Path):
    """A run killed between taking its directory and writing meta.json left nothing to resume: say so."""
    from rwkv_bench.errors import UserError
    from rwkv_bench.recording import open_run

    (tmp_path / "run").mkdir()
    with pytest.raises(UserError, match="holds no meta.json.*start it without --resume"):
        open_run("scaling", out=tmp_path / "run", resume=True, results=("points.csv",))
    assert open_run("scaling", out=tmp_path / "run", resume=False, results=("points.csv",))[1] is None
