"""`uncheatable` and `nlp` as typed, offline: their default models (the Pile trio) are not cached here, so each
stops at once with one line that names all three and what to do."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rwkv_bench.models.presets import PILE_TRIO

CLI = str(Path(sys.executable).parent / "rwkv-bench")


@pytest.mark.parametrize("command", ["uncheatable", "nlp"])
def test_typed_offline_names_the_three_default_models(command, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BENCH_")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), MPLCONFIGDIR=str(tmp_path / "mpl"))
    result = subprocess.run([CLI, command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for model in PILE_TRIO.split(","):
        assert model in lines[0]
    assert "--models rwkv4-tiny,rwkv7-tiny,smollm2-135m" in lines[0]
    assert not (tmp_path / "results").exists()  # nothing written
