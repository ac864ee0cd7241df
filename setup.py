"""Only here to put the kernel sources (kernels/) and the local lm-eval tasks (tasks/) into the wheel, as
rwkv_bench/_kernels and rwkv_bench/_tasks, so an installed package can build its WKV extension on first use
and run its offline tasks. Everything else is in pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
# source folder -> (folder inside the package, file suffixes copied, recursively)
CARRIED = {"kernels": ("_kernels", (".h", ".cpp", ".cu")),
           "tasks": ("_tasks", (".yaml", ".py", ".jsonl", ".json"))}


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        for folder, (target_name, suffixes) in CARRIED.items():
            source_root = HERE / folder
            target_root = Path(self.build_lib) / "rwkv_bench" / target_name
            for source in sorted(source_root.rglob("*")):
                if source.is_file() and source.suffix in suffixes and "__pycache__" not in source.parts:
                    target = target_root / source.relative_to(source_root)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, target)


setup(cmdclass={"build_py": BuildPyWithData})
