"""The kernel sources build where users build them: the .cu with nvcc, and from an installed wheel (which also
carries the local lm-eval tasks); a build happens once per machine (whichever checkout asks) and a killed or
stuck one never blocks the next process."""
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
from filelock import FileLock
from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths

from rwkv_bench.ops import kernel_build
from rwkv_bench.ops import wkv as wkv_ops
from rwkv_bench.ops.wkv import KERNEL_FILES, kernel_source_dir

REPO = Path(__file__).resolve().parent.parent


def cuda_include_dir() -> Path:
    """The CUDA runtime's headers, where torch's build finds them (CUDA_HOME/include), else beside nvcc."""
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME:
        return Path(CUDA_HOME) / "include"
    plan = subprocess.run(["nvcc", "--dryrun", "-c", "x.cu"], capture_output=True, text=True).stderr
    (top,) = [line.split("=", 1)[1] for line in plan.splitlines() if line.startswith("#$ TOP=")]
    return Path(top) / "include"


def compile_cuda_extension(op, tmp_path: Path, src_dir: Path | None = None,
                           only: str | None = None) -> dict[str, subprocess.CompletedProcess]:
    """Compiles (-c: a CPU build of torch has no CUDA libraries to link) each source of `op`'s CUDA extension
    (or the one named `only`) as torch's build does: .cu with nvcc and torch's nvcc flags, .cpp with the C++
    compiler. Returns each source's process; the objects go to tmp_path / "<source>.o"."""
    # A CPU build of torch ships c10/cuda's headers but not the one CMake generates for CUDA builds; it only
    # says whether c10_cuda is a shared library, so the test supplies it (a CUDA torch install has it).
    shim = tmp_path / "shim" / "c10" / "cuda" / "impl"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    src_dir = src_dir or op.kernel_source_dir()
    includes = [*include_paths(), sysconfig.get_paths()["include"], str(src_dir), str(tmp_path / "shim")]
    common = ["-std=c++20", "-DTORCH_EXTENSION_NAME=rwkv_bench_cuda_test", *[f"-I{p}" for p in includes]]
    flags = op.KERNELS.cuda_flags
    procs = {}
    for name in [only] if only else op.KERNELS.sources["cuda"]:
        out = tmp_path / f"{name}.o"
        if name.endswith(".cu"):
            cmd = ["nvcc", "-c", *COMMON_NVCC_FLAGS, *flags["extra_cuda_cflags"], *common]
        else:
            cmd = [kernel_build.cxx(), "-c", "-fPIC", *flags["extra_cflags"], *common, f"-I{cuda_include_dir()}"]
        procs[name] = subprocess.run([*cmd, str(src_dir / name), "-o", str(out)], capture_output=True, text=True,
                                     timeout=600)
    return procs


def symbols(obj: Path, *nm_flags: str) -> set[str]:
    """The demangled names in an object file that `nm -C *nm_flags` lists."""
    out = subprocess.run(["nm", "-C", *nm_flags, str(obj)], capture_output=True, text=True, check=True).stdout
    # "<address> <type> <name>" for a defined symbol, "<spaces> U <name>" for an undefined one
    return {line.split(maxsplit=1 if line.startswith(" ") else 2)[-1] for line in out.splitlines() if line.strip()}


def compiled_cuda_extension(op, tmp_path: Path) -> dict[str, Path]:
    """Each source of `op`'s CUDA extension -> its object file, all compiled or the test fails."""
    procs = compile_cuda_extension(op, tmp_path)
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name}:\n{proc.stderr[-4000:]}"
    return {name: tmp_path / f"{name}.o" for name in procs}


def assert_the_halves_link(objects: dict[str, Path], namespace: str) -> None:
    """Every function of `namespace` that the host half (.cpp) calls is defined by the kernels' half (.cu)."""
    (kernels,) = [obj for name, obj in objects.items() if name.endswith(".cu")]
    (host,) = [obj for name, obj in objects.items() if not name.endswith(".cu")]
    called = {s for s in symbols(host, "--undefined-only") if f"{namespace}::" in s}
    assert called, f"the host half calls no {namespace}:: launcher"
    assert called <= symbols(kernels, "--defined-only"), called - symbols(kernels, "--defined-only")


def assert_nvcc_rejects_a_type_error_in_the_kernels(op, tmp_path: Path) -> None:
    src = tmp_path / "broken"
    shutil.copytree(op.kernel_source_dir(), src)
    (cu,) = [name for name in op.KERNELS.sources["cuda"] if name.endswith(".cu")]
    with open(src / cu, "a") as f:
        f.write("\n__global__ void broken_kernel(float* y) { int* p = y; p[threadIdx.x] = 0; }\n")
    proc = compile_cuda_extension(op, tmp_path / "out", src, only=cu)[cu]
    assert proc.returncode != 0 and "error" in proc.stderr and "int *" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.needs_nvcc
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH (it is on the dev machines and CI)")
def test_cuda_kernel_compiles_with_nvcc(tmp_path):
    objects = compiled_cuda_extension(wkv_ops, tmp_path)
    kernels = symbols(objects["wkv_cuda.cu"], "--defined-only")
    # every instantiation the host dispatches to (fp32, fp16, bf16), forward and backward
    for dtype in ("float", "c10::Half", "c10::BFloat16"):
        for name in ("forward_kernel", "backward_kernel", "launch_forward", "launch_backward"):
            assert any(f"{name}<{dtype}>(" in s for s in kernels), (name, dtype)
    assert_the_halves_link(objects, "wkv")
    assert_nvcc_rejects_a_type_error_in_the_kernels(wkv_ops, tmp_path / "negative")


def test_wheel_carries_the_kernel_sources_and_finds_them(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(REPO)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PIP_NO_INDEX": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("rwkv_bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in KERNEL_FILES:
        assert f"rwkv_bench/_kernels/{name}" in names
    # installed (unzipped) away from the checkout, the package finds its own copy of the sources
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)

    def printed_path(code: str) -> Path:
        found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(site)})
        assert found.returncode == 0, found.stderr
        return Path(found.stdout.strip())

    assert printed_path("from rwkv_bench.ops.wkv import kernel_source_dir as k; print(k())") == \
        site / "rwkv_bench" / "_kernels"
    # the offline lm-eval tasks travel the same way, data files included
    assert {"rwkv_bench/_tasks/rwkv_bench_mc.yaml", "rwkv_bench/_tasks/rwkv_bench_data.py",
            "rwkv_bench/_tasks/data/rwkv_bench_mc.jsonl"} <= names
    assert printed_path("from rwkv_bench.nlp.tasks import LOCAL_TASKS_DIR as d; print(d)") == \
        site / "rwkv_bench" / "_tasks"


# ------------------------------------------------------------------------ one build per machine, never stuck

CPU_FILES = (*wkv_ops.KERNELS.headers, *wkv_ops.KERNELS.sources["cpu"])


def copy_sources(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in KERNEL_FILES:
        shutil.copy2(kernel_source_dir() / name, dest / name)
    return dest


def test_build_key_follows_the_sources_content_not_their_path(tmp_path):
    a, b = copy_sources(tmp_path / "checkout-a"), copy_sources(tmp_path / "venv-b" / "_kernels")
    name_a, parts = kernel_build.build_key("cpu", a, CPU_FILES)
    assert name_a == kernel_build.build_key("cpu", b, CPU_FILES)[0]
    assert {"torch", "cxx", "python", "cpu", "flags"} <= set(parts)
    assert kernel_build.build_key("cuda", a, CPU_FILES)[0] != name_a
    (b / "wkv_step.h").write_text((b / "wkv_step.h").read_text() + "\n// changed\n")
    assert kernel_build.build_key("cpu", b, CPU_FILES)[0] != name_a


def test_build_key_follows_the_compile_flags(tmp_path, monkeypatch):
    src = copy_sources(tmp_path / "src")
    o3 = kernel_build.build_key("cuda", src, CPU_FILES, {"extra_cuda_cflags": ["-O3"]})[0]
    assert o3 != kernel_build.build_key("cuda", src, CPU_FILES, {"extra_cuda_cflags": ["-O2"]})[0]
    # the CUDA build's flags and the CPU build's recipe for choosing them are in the names wkv uses
    names = {kind: wkv_ops.extension_name(kind, src) for kind in ("cpu", "cuda")}
    monkeypatch.setattr(wkv_ops.KERNELS, "cuda_flags", {**wkv_ops.KERNELS.cuda_flags, "extra_cuda_cflags": ["-O3"]})
    assert wkv_ops.extension_name("cuda", src) != names["cuda"]
    monkeypatch.setattr(wkv_ops.KERNELS, "cpu_flags", {**wkv_ops.KERNELS.cpu_flags, "always": ["-O2"]})
    assert wkv_ops.extension_name("cpu", src) != names["cpu"]


def test_flags_given_as_a_dict_key_the_build_and_reach_the_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv(kernel_build.CACHE_ENV, str(tmp_path / "cache"))
    src = copy_sources(tmp_path / "src")
    seen = {}

    def fake_load(name, **kwargs):
        seen.update(name=name, **kwargs)
        raise RuntimeError("stop before compiling")

    monkeypatch.setattr("torch.utils.cpp_extension.load", fake_load)
    flags = {"extra_cflags": ["-O1", "-DWHATEVER"]}
    with pytest.raises(RuntimeError, match="stop before compiling"):
        kernel_build.load_extension("cpu", src, wkv_ops.KERNELS.sources["cpu"], wkv_ops.KERNELS.headers, flags)
    assert seen["extra_cflags"] == ["-O1", "-DWHATEVER"]
    assert seen["name"] == kernel_build.build_key("cpu", src, CPU_FILES, flags)[0]


def test_another_checkout_loads_the_existing_build_without_compiling(tmp_path, monkeypatch):
    wkv_ops.KERNELS.extension("cpu", strict=True)           # built (or found) once for this machine
    other = copy_sources(tmp_path / "other-checkout")

    def no_compiling(*args, **kwargs):
        raise AssertionError("rebuilt although this machine has a build of these sources")

    monkeypatch.setattr("torch.utils.cpp_extension.load", no_compiling)
    module = wkv_ops.build_extension("cpu", other)
    assert module.backend == "cpu"
    assert Path(module.__file__).parent.parent == kernel_build.cache_root()


HOLD_LOCK = """
import sys, time
from pathlib import Path
from rwkv_bench.ops.kernel_build import BuildLock
lock = BuildLock(Path(sys.argv[1]), 5, "a test").__enter__()
print("held", flush=True)
time.sleep(120)
"""


def hold_lock(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_is_waited_for_in_one_line_then_given_up(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(kernel_build.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(kernel_build.TIMEOUT_ENV, "1.5")
    src = copy_sources(tmp_path / "src")
    holder = hold_lock(tmp_path / "cache" / f"{wkv_ops.extension_name('cpu', src)}.lock")
    try:
        start = time.monotonic()
        with pytest.raises(kernel_build.BuildLockTimeout, match=f"pid {holder.pid}.*{kernel_build.TIMEOUT_ENV}"):
            wkv_ops.build_extension("cpu", src)
        waited = time.monotonic() - start
    finally:
        holder.kill()
        holder.wait()
    assert 1.5 <= waited < 10, waited                       # the bound, not forever
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"waiting for pid {holder.pid}" in err[0], err


def test_the_lock_of_a_killed_holder_is_taken_over_at_once(tmp_path):
    path = tmp_path / "x.lock"
    holder = hold_lock(path)
    holder.kill()                                           # SIGKILL: no cleanup runs
    holder.wait()
    assert path.read_text().strip() == str(holder.pid)      # the file stays, naming a dead pid
    with kernel_build.BuildLock(path, timeout_s=0, what="a test"):
        assert path.read_text().strip() == str(os.getpid())


def test_the_lock_is_filelocks_flock(tmp_path):
    # filelock's FileLock (fcntl.flock, released by the OS with its holder) under the wait line and the pid
    lock = kernel_build.BuildLock(tmp_path / "x.lock", timeout_s=0, what="a test")
    assert isinstance(lock.lock, FileLock)
    with lock:
        assert lock.lock.is_locked
        with pytest.raises(kernel_build.BuildLockTimeout):   # another open of the file cannot take it
            with kernel_build.BuildLock(tmp_path / "x.lock", timeout_s=0, what="a test"):
                pass
    assert not lock.lock.is_locked


BUILD = "from rwkv_bench.ops import wkv; print(wkv.KERNELS.extension('cpu', strict=True).__file__)"


@pytest.mark.slow   # a real compile, as the nvcc tests (conftest marks those)
@pytest.mark.timeout(900)
def test_a_build_killed_midway_does_not_block_or_poison_the_next(tmp_path):
    env = {**os.environ, kernel_build.CACHE_ENV: str(tmp_path / "cache"), kernel_build.TIMEOUT_ENV: "600"}
    first = subprocess.Popen([sys.executable, "-c", BUILD], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "cache").glob(f"*.tmp-{first.pid}/build.ninja")):   # compiling now
            assert first.poll() is None and time.monotonic() < deadline, "the first build never started"
            time.sleep(0.1)
        time.sleep(2)
        first.kill()                                        # kill -9 mid-build, as a sweep's kill does
        first.wait()
        assert list((tmp_path / "cache").glob("*.lock")) and list((tmp_path / "cache").glob("*.tmp-*"))
        second = subprocess.run([sys.executable, "-c", BUILD], env=env, capture_output=True, text=True,
                                timeout=600)
    finally:
        try:
            os.killpg(first.pid, 9)                         # the killed build's orphaned compiler, if any
        except ProcessLookupError:
            pass
    assert second.returncode == 0, second.stderr[-3000:]
    built = Path(second.stdout.strip())
    assert built.is_file() and (built.parent / kernel_build.MARKER).is_file()
    assert not list((tmp_path / "cache").glob(f"*.tmp-{first.pid}"))   # the half-built directory is gone
