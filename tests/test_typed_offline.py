"""`uncheatable` and `nlp` as typed, offline: their default models (the Pile trio) are not cached here, so each
stops at once with one line that names all three and what to do.

Both run through the installed console script, side by side, forked from one process that has done the
imports (forked_cli.py)."""
import os

import pytest

from forked_cli import run_forked
from rwkv_bench.models.presets import PILE_TRIO

COMMANDS = ["uncheatable", "nlp"]


@pytest.fixture(scope="module")
def typed(tmp_path_factory) -> tuple[dict, dict]:
    """{command: (exit code, stdout, stderr, seconds)} and {command: its working directory}."""
    root = tmp_path_factory.mktemp("typed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BENCH_")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(root / "hf"), MPLCONFIGDIR=str(root / "mpl"))
    work = root / "work"
    work.mkdir()
    results = run_forked([[command] for command in COMMANDS], work, env, timeout=120)
    return dict(zip(COMMANDS, results)), work


@pytest.mark.parametrize("command", COMMANDS)
def test_typed_offline_names_the_three_default_models(command, typed):
    results, work = typed
    code, out, err, _ = results[command]
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    for model in PILE_TRIO.split(","):
        assert model in lines[0]
    assert "--models rwkv4-tiny,rwkv7-tiny,smollm2-135m" in lines[0]
    assert not (work / "results").exists()  # nothing written
