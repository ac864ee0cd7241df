"""The kernel sources build where users build them: the .cu with nvcc, and from an installed wheel (which also
carries the local lm-eval tasks)."""
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from torch.utils.cpp_extension import include_paths

from rwkv_bench.ops.wkv import KERNEL_FILES, kernel_source_dir

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH (it is on the dev machines and CI)")
def test_cuda_kernel_compiles_with_nvcc(tmp_path):
    # A CPU build of torch ships c10/cuda's headers but not the one CMake generates for CUDA builds; it only
    # says whether c10_cuda is a shared library, so the test supplies it (a CUDA torch install has it).
    shim = tmp_path / "shim" / "c10" / "cuda" / "impl"
    shim.mkdir(parents=True)
    (shim / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    includes = [*include_paths(), sysconfig.get_paths()["include"], str(kernel_source_dir()), str(tmp_path / "shim")]
    cmd = ["nvcc", "-c", str(kernel_source_dir() / "wkv_cuda.cu"), "-o", str(tmp_path / "wkv_cuda.o"),
           "-std=c++20", "-O3", "--expt-relaxed-constexpr", "-DTORCH_EXTENSION_NAME=rwkv_bench_wkv_cuda",
           *[f"-I{p}" for p in includes]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "wkv_cuda.o").stat().st_size > 0
    # both template instantiations the host dispatches to exist in the object (fp32, fp16, bf16)
    symbols = subprocess.run(["nm", "-C", str(tmp_path / "wkv_cuda.o")], capture_output=True, text=True).stdout
    for dtype in ("float", "c10::Half", "c10::BFloat16"):
        assert f"forward_kernel<{dtype}>" in symbols and f"backward_kernel<{dtype}>" in symbols, dtype


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
    found = subprocess.run([sys.executable, "-c", "from rwkv_bench.ops.wkv import kernel_source_dir as k; print(k())"],
                           capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == site / "rwkv_bench" / "_kernels"
    # the offline lm-eval tasks travel the same way, data files included
    assert {"rwkv_bench/_tasks/rwkv_bench_mc.yaml", "rwkv_bench/_tasks/rwkv_bench_data.py",
            "rwkv_bench/_tasks/data/rwkv_bench_mc.jsonl"} <= names
    found = subprocess.run([sys.executable, "-c", "from rwkv_bench.nlp.tasks import LOCAL_TASKS_DIR as d; print(d)"],
                           capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == site / "rwkv_bench" / "_tasks"
