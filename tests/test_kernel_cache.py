"""A cached kernel that does not load is rebuilt, and a benchmark never quietly measures the slow path instead:
`rwkv-bench kernels` stops with one line when the kernel cannot be had, unless --allow-reference."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rwkv_bench.errors import UserError
from rwkv_bench.ops import kernel_build
from rwkv_bench.ops import wkv as wkv_ops
from rwkv_bench.ops import wkv7 as wkv7_ops

CONSOLE_SCRIPT = str(Path(sys.executable).parent / "rwkv-bench")
KERNELS = [CONSOLE_SCRIPT, "kernels", "--lengths", "8", "--channels", "8", "--json"]


def library(build_dir: Path) -> Path:
    return build_dir / (build_dir / kernel_build.MARKER).read_text().splitlines()[0]


def cached_build_with_a_truncated_library(cache: Path, name: str, good: Path | None = None) -> Path:
    """`cache`/`name`: a copy of this machine's CPU build (`good`) whose library lost its second half."""
    good = good or Path(wkv_ops.build_extension("cpu").__file__).parent
    shutil.copytree(good, cache / name)
    lib = library(cache / name)
    data = lib.read_bytes()
    lib.write_bytes(data[: len(data) // 2])
    return lib


def copy_this_machines_builds(cache: Path, *ops) -> None:
    """Into `cache`, this machine's CPU build of each op's kernel (built first where there is none yet): a test
    that keeps a kernel cache of its own then compiles only the build it breaks, not every kernel its
    command loads."""
    for op in ops:
        build = Path(op.KERNELS.build("cpu").__file__).parent
        shutil.copytree(build, cache / build.name)


def run(cmd, env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow   # a real compile, then the installed `rwkv-bench kernels` end to end
@pytest.mark.timeout(900)
def test_a_truncated_cached_library_is_rebuilt_and_the_kernel_runs(tmp_path):
    cache = tmp_path / "cache"
    lib = cached_build_with_a_truncated_library(cache, wkv_ops.extension_name("cpu"))
    size = lib.stat().st_size
    proc = run(KERNELS, {**os.environ, kernel_build.CACHE_ENV: str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr, proc.stderr
    impls = {row["impl"] for row in json.loads(proc.stdout)}
    assert "cpu-kernel" in impls, impls
    assert library(cache / wkv_ops.extension_name("cpu")).stat().st_size > size
    assert not list(cache.glob("*.tmp-*"))


def fake_compiler(tmp_path: Path) -> str:
    """A C++ compiler that reports a version and compiles nothing (the cache cannot be rebuilt)."""
    script = tmp_path / "bin" / "c++"
    script.parent.mkdir()
    script.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then echo "fakecc 1.0"; exit 0; fi\n'
                      'echo "fakecc: error: cannot compile anything" >&2\nexit 1\n')
    script.chmod(0o755)
    return str(script)


@pytest.mark.timeout(600)
def test_kernels_stops_with_one_line_when_the_kernel_cannot_be_had(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    good = Path(wkv_ops.build_extension("cpu").__file__).parent   # made with the real compiler
    cxx = fake_compiler(tmp_path)
    monkeypatch.setenv("CXX", cxx)                           # the name the child computes with this compiler
    cached_build_with_a_truncated_library(cache, wkv_ops.extension_name("cpu"), good)
    env = {**os.environ, kernel_build.CACHE_ENV: str(cache), "CXX": cxx}
    proc = run(KERNELS, env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the WKV cpu kernel is unavailable"), proc.stderr
    assert "--allow-reference" in lines[0] and "Traceback" not in proc.stderr
    assert "fakecc: error: cannot compile anything" in lines[0]              # the compiler's own reason
    assert proc.stdout == ""
    # asked for, the reference runs, said in one plain line (no Python warning), and the rows name it
    proc = run([*KERNELS, "--allow-reference"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "using the PyTorch reference instead" in lines[0], proc.stderr
    assert "Warning" not in proc.stderr
    assert {row["impl"] for row in json.loads(proc.stdout)} == {"reference", "transformers-cpu"}


@pytest.mark.parametrize("op", [wkv_ops, wkv7_ops], ids=["WKV", "WKV-7"])
def test_require_kernel_names_the_kernel_or_says_why_not_in_one_line(op, monkeypatch):
    assert op.require_kernel("cpu") == "cpu-kernel"
    assert issubclass(op.KernelUnavailable, UserError)
    name = op.KERNELS.name
    with pytest.raises(op.KernelUnavailable, match=f"no {name} kernel for meta tensors.*--allow-reference"):
        op.require_kernel("meta")
    monkeypatch.setenv(op.ENV_VAR, "reference")
    with pytest.raises(op.KernelUnavailable, match="RWKV_BENCH_WKV=reference.*--allow-reference"):
        op.require_kernel("cpu")
    monkeypatch.delenv(op.ENV_VAR)

    def broken_build(kind):
        raise RuntimeError("Error building extension 'wkv'\n[1/2] c++ ...\nwkv_cpu.cpp:3: error: boom\nmore")

    monkeypatch.setattr(op.KERNELS, "_extensions", {})
    monkeypatch.setattr(op.KERNELS, "_failures", {})
    monkeypatch.setattr(op.KERNELS, "build", broken_build)
    with pytest.raises(op.KernelUnavailable) as caught:
        op.require_kernel("cpu")
    message = str(caught.value)
    assert "\n" not in message and "error: boom" in message and "--allow-reference" in message, message
    assert message.startswith(f"the {name} cpu kernel is unavailable") and "error: boom" in op.KERNELS.failure("cpu")


def test_a_cached_library_that_does_not_import_is_removed_and_built_again(tmp_path, monkeypatch):
    # intact as recorded (size and hash match) but not a library: dlopen refuses it with ImportError
    monkeypatch.setenv(kernel_build.CACHE_ENV, str(tmp_path / "cache"))
    build_dir = tmp_path / "cache" / wkv_ops.extension_name("cpu")
    build_dir.mkdir(parents=True)
    junk = build_dir / "wkv.so"
    junk.write_bytes(b"not an ELF file" * 100)
    (build_dir / kernel_build.MARKER).write_text(f"wkv.so\n{kernel_build._fingerprint(junk)}\n")
    builds = []

    def fake_load(name, **kwargs):
        builds.append(name)
        assert not build_dir.exists()                       # removed before building again
        raise RuntimeError("stop before compiling")

    monkeypatch.setattr("torch.utils.cpp_extension.load", fake_load)
    with pytest.raises(RuntimeError, match="stop before compiling"):
        wkv_ops.build_extension("cpu")
    assert builds == [build_dir.name]
