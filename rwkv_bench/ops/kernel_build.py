"""Building the WKV extensions once per machine, safely across processes, checkouts and venvs.

    module = load_extension("cpu", src_dir, sources=("wkv_cpu.cpp",), headers=(...), flags=...)

Where: `cache_root()` = $RWKV_BENCH_KERNEL_CACHE, else platformdirs' user cache dir / "kernels". Each build
lives in `<root>/<name>/`, with name = rwkv_bench_wkv_<kind>_<hash> and the hash over everything the binary
depends on (`build_key`): the kernel sources' bytes (not their paths), the compile flags (or, for flags
chosen by compiler probes, the recipe that chooses them), torch's version and C++ ABI, the C++ compiler's
(and for CUDA nvcc's) version, the Python ABI, the CPU (the CPU build uses -march=native) and, for CUDA,
the GPU architectures it is compiled for. Two checkouts or venvs with the same sources and torch therefore
share one build, and a changed source, flag or compiler gets its own directory (no rebuild loops).

How: a finished build holds the library and a `BUILT` marker with the library's size and hash; a process
that finds the marker and an intact library imports it directly (no ninja, no compiler probe). Otherwise,
or when the library is not the one built or does not load (a truncated copy, a full disk during an earlier
build), it takes `<root>/<name>.lock` (`BuildLock`: filelock's flock, which the OS releases when its holder
dies, even by kill -9, so a killed builder never blocks the next one), looks again, removes a build that
still does not load, and builds once more. The build itself runs in a fresh `<name>.tmp-<pid>` directory
from a copy of the sources, and is renamed to `<name>` only when complete: a half-built directory (or
torch's own FileBaton `lock` file left in it by a killed build) is never reused, only deleted by a later
builder. A process that has to wait says so in one line on stderr and gives up with BuildLockTimeout after
$RWKV_BENCH_BUILD_TIMEOUT seconds (default 600).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path

import torch
from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

CACHE_ENV = "RWKV_BENCH_KERNEL_CACHE"
TIMEOUT_ENV = "RWKV_BENCH_BUILD_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
MARKER = "BUILT"


class BuildLockTimeout(TimeoutError):
    """Another process held the build lock for longer than the bound."""


def cache_root() -> Path:
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("rwkv-bench")) / "kernels"


def build_timeout_s() -> float:
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={text!r}: expected a number of seconds") from None
    if value < 0:
        raise ValueError(f"{TIMEOUT_ENV}={text!r}: expected a non-negative number of seconds")
    return value


# ------------------------------------------------------------------------------------------------ the key
@lru_cache(maxsize=None)
def _tool_version(command: str) -> str:
    """`command --version`'s first line (which also names the compiler), or why there is none."""
    exe = shutil.which(command)
    if exe is None:
        return f"{command}: not found"
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{exe}: {type(exc).__name__}: {exc}"
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    # nvcc puts its release on the last lines, gcc/clang on the first
    return f"{exe}: {lines[0] if lines else ''} | {lines[-1] if lines else ''}"


def cxx() -> str:
    """The C++ compiler torch's build uses."""
    return os.environ.get("CXX", "c++")


def _nvcc() -> str:
    from torch.utils.cpp_extension import CUDA_HOME

    return str(Path(CUDA_HOME) / "bin" / "nvcc") if CUDA_HOME else "nvcc"


@lru_cache(maxsize=1)
def cpu_fingerprint() -> str:
    """What -march=native depends on, so that a build is never loaded on a CPU it was not made for."""
    text = platform.machine() + platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features", "model name")):
                text += line
                if line.startswith(("flags", "Features")):
                    break
    except OSError:
        pass
    return text


def _cuda_archs() -> str:
    """The architectures torch will compile for: TORCH_CUDA_ARCH_LIST, else the visible GPUs'."""
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    if not archs and torch.cuda.is_available():
        archs = ",".join(sorted({"%d.%d" % torch.cuda.get_device_capability(i)
                                 for i in range(torch.cuda.device_count())}))
    return archs


def build_key(kind: str, src_dir: Path, files: Iterable[str], flags: object = None) -> tuple[str, dict[str, str]]:
    """(directory name, the parts hashed into it) for a `kind` ("cpu" / "cuda") build of `files` with
    `flags` (the compile flags, or whatever determines them)."""
    parts = {f"source:{name}": hashlib.sha256((src_dir / name).read_bytes()).hexdigest() for name in sorted(files)}
    parts.update({
        "kind": kind,
        "flags": repr(flags),
        "torch": torch.__version__,
        "torch_cxx11_abi": str(torch.compiled_with_cxx11_abi()),
        "python": f"{sys.implementation.cache_tag}{sys.abiflags}{sysconfig.get_config_var('EXT_SUFFIX')}",
        "cxx": _tool_version(cxx()),
        "cpu": cpu_fingerprint(),
    })
    if kind == "cuda":
        parts.update({"cuda": str(torch.version.cuda), "nvcc": _tool_version(_nvcc()), "archs": _cuda_archs()})
    digest = hashlib.sha256(repr(sorted(parts.items())).encode()).hexdigest()[:16]
    return f"rwkv_bench_wkv_{kind}_{digest}", parts


# ------------------------------------------------------------------------------------------------ the lock
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


class BuildLock:
    """filelock's FileLock on `path` (an fcntl.flock, released by the OS when its holder dies), plus what it
    lacks: one line on stderr when this process has to wait, naming the holder's pid (kept in the file)."""

    def __init__(self, path: Path, timeout_s: float, what: str, poll_s: float = 0.2):
        self.path, self.timeout_s, self.what = path, timeout_s, what
        # fallback_to_soft=False: a filesystem without flock fails here rather than getting a lock file that
        # a dead holder would leave behind
        self.lock = FileLock(path, poll_interval=poll_s, fallback_to_soft=False, preserve_lock_file=True,
                             on_acquired=_write_pid)

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def __enter__(self) -> BuildLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire(timeout=0)
            return self
        except Timeout:
            pass
        print(f"rwkv-bench: waiting for pid {self.holder()} to finish building {self.what} "
              f"(lock {self.path}, up to {self.timeout_s:g} s)", file=sys.stderr, flush=True)
        try:
            self.lock.acquire(timeout=self.timeout_s)
        except Timeout:
            raise BuildLockTimeout(f"gave up after {self.timeout_s:g} s waiting for pid {self.holder()} to "
                                   f"finish building {self.what} (lock {self.path}; {TIMEOUT_ENV} sets the bound)"
                                   ) from None
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()


# ------------------------------------------------------------------------------------------------ the build
def _fingerprint(lib: Path) -> str:
    data = lib.read_bytes()
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}"


def _library(build_dir: Path) -> Path | None:
    """The finished library in build_dir, or None if the directory holds no complete, intact build.

    The marker records the library's size and hash: a truncated library is not even opened (dlopen of a
    truncated file can kill the process with SIGBUS instead of raising ImportError).
    """
    try:
        lib_name, fingerprint = (build_dir / MARKER).read_text().strip().split("\n")
        lib = build_dir / lib_name
        intact = _fingerprint(lib) == fingerprint
    except (OSError, ValueError):
        return None
    if not intact:
        log.info("%s is not the library that was built (size or hash differ)", lib)
    return lib if intact else None


def _import(name: str, lib: Path):
    spec = importlib.util.spec_from_file_location(name, lib)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _import_or_none(name: str, lib: Path):
    """The module in `lib`, or None when that file does not load (a truncated copy, a damaged disk)."""
    try:
        return _import(name, lib)
    except (ImportError, OSError) as exc:
        log.info("%s does not load (%s)", lib, " ".join(str(exc).split()))
        return None


def _remove_abandoned(root: Path, name: str) -> None:
    """Delete half-built directories of `name` whose builder is gone (called while holding the lock)."""
    for tmp in root.glob(f"{name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and _pid_alive(int(pid)) and int(pid) != os.getpid()):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _build_notes_to_our_log():
    """torch's build advice (Python warnings such as "TORCH_CUDA_ARCH_LIST is not set", its logger's
    compiler-ABI banner) goes to this module's log instead of stderr: a failed build raises with the
    compiler's own error, and a command's stderr stays one line."""
    torch_log = logging.getLogger("torch.utils.cpp_extension")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        torch_log.setLevel(level)
        for warning in caught:
            log.info("while building: %s", " ".join(str(warning.message).split()))


def load_extension(kind: str, src_dir: Path, sources: Iterable[str], headers: Iterable[str],
                   flags: Mapping | Callable[[], Mapping], flags_key: object = None) -> object:
    """The built extension (building it first if this machine has no loadable build for this key yet).

    `flags` are torch.utils.cpp_extension.load's extra_* arguments, as a dict (part of the build key) or as a
    function returning them that runs only when building (for compiler probes, which are slow); then
    `flags_key` stands for them in the key (the candidates and what the probes depend on), and without one
    the function runs every time to key the build by its result.
    """
    sources, headers = tuple(sources), tuple(headers)
    if isinstance(flags, Mapping):
        flags_now = dict(flags)
        flags, flags_key = (lambda: flags_now), flags_now
    elif flags_key is None:
        flags_key = flags()
    name, parts = build_key(kind, src_dir, (*headers, *sources), flags_key)
    root = cache_root()
    final = root / name
    lib = _library(final)
    module = None if lib is None else _import_or_none(name, lib)
    if module is not None:
        return module
    what = f"the WKV {kind} kernel"
    with BuildLock(root / f"{name}.lock", build_timeout_s(), what):
        lib = _library(final)                  # built (or rebuilt) by the process we waited for
        module = None if lib is None else _import_or_none(name, lib)
        if module is not None:
            return module
        # a build that does not load is removed and built again, once: a broken file in the cache must not
        # send every later run to the slow path
        shutil.rmtree(final, ignore_errors=True)
        _remove_abandoned(root, name)
        tmp = root / f"{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "src").mkdir(parents=True)
        for file in (*headers, *sources):
            shutil.copy2(src_dir / file, tmp / "src" / file)
        (tmp / "key.txt").write_text("".join(f"{k}: {v}\n" for k, v in sorted(parts.items())))
        log.info("building %s (once per machine and torch version) into %s", what, final)
        from torch.utils.cpp_extension import load

        with _build_notes_to_our_log():
            module = load(name=name, sources=[str(tmp / "src" / s) for s in sources],
                          extra_include_paths=[str(tmp / "src")], build_directory=str(tmp), verbose=False,
                          **flags())
        built = Path(module.__file__)
        (tmp / MARKER).write_text(f"{built.name}\n{_fingerprint(built)}\n")
        os.replace(tmp, final)
        module.__file__ = str(final / built.name)   # where the (already loaded) library now lives
        return module
