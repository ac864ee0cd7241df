"""Only here to put the kernel sources (kernels/) into the wheel as rwkv_bench/_kernels, so an installed
package can build its WKV extension on first use. Everything else is in pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

KERNEL_SUFFIXES = (".h", ".cpp", ".cu")


class BuildPyWithKernels(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "rwkv_bench" / "_kernels"
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted(Path(__file__).parent.joinpath("kernels").iterdir()):
            if source.suffix in KERNEL_SUFFIXES:
                shutil.copy2(source, target / source.name)


setup(cmdclass={"build_py": BuildPyWithKernels})
