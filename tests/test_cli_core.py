"""`rwkv-bench score` end to end, and every bad-input path: one line on stderr, exit code 2.

The bad-input cases and --help run the installed console script, all at once, forked from one process that
has done the imports (forked_cli.py): what a user sees, without paying the imports ten times."""
import json
import os

import pytest

from rwkv_bench.cli import main

from forked_cli import run_forked
from helpers import random_hf_rwkv

TEXT = "RWKV is an RNN with transformer-level performance. It can be trained in parallel.\n"
BAD_INPUT = ["unknown_spec", "missing_file", "corrupt_pth", "empty_input", "non_utf8_input", "missing_input",
             "bad_dtype", "hub_offline"]


def bad_input_argv(case: str, root) -> list[str]:
    """`score` with the one thing `case` gets wrong, its files under `root`."""
    model, inp, extra = "rwkv4-tiny", str(root / "t.txt"), []
    if case == "unknown_spec":
        model = "no-such-model"
    elif case == "missing_file":
        model = str(root / "absent.pth")
    elif case == "corrupt_pth":
        model = str(root / "bad.pth")
    elif case == "empty_input":
        inp = str(root / "empty.txt")
    elif case == "non_utf8_input":
        inp = str(root / "latin1.txt")
    elif case == "missing_input":
        inp = str(root / "nothing.txt")
    elif case == "bad_dtype":
        extra = ["--dtype", "int3"]
    elif case == "hub_offline":
        model = "someone/some-model-that-is-not-cached"
    return ["score", "--model", model, "--input", inp, *extra]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict:
    """{name: (exit code, stdout, stderr, seconds)}: every bad-input case, `--help` and `scaling --help`."""
    root = tmp_path_factory.mktemp("cli")
    (root / "t.txt").write_text(TEXT)
    (root / "bad.pth").write_bytes(b"this is not a checkpoint")
    (root / "empty.txt").write_text("")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    argvs = {case: bad_input_argv(case, root) for case in BAD_INPUT}
    argvs.update({"help": ["--help"], "scaling-help": ["scaling", "--help"]})
    env = {**os.environ, "COLUMNS": "200"}  # the help's width: each default on the line of its option
    work = root / "work"
    work.mkdir()
    return dict(zip(argvs, run_forked(list(argvs.values()), work, env)))


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    return path


def test_score_json_ours_equals_transformers_peer(tmp_path, text_file, neox_tokenizer_path, capsys):
    random_hf_rwkv(tmp_path / "hf", hidden=32, layers=2)
    results = {}
    for spec in (str(tmp_path / "hf"), f"transformers:{tmp_path / 'hf'}"):
        code = main(["score", "--model", spec, "--input", str(text_file), "--json",
                     "--tokenizer", str(neox_tokenizer_path)])
        assert code == 0
        results[spec] = json.loads(capsys.readouterr().out)
    ours, peer = results.values()
    assert ours["implementation"].startswith("rwkv_bench.rwkv4")
    assert peer["implementation"].startswith("transformers.RwkvForCausalLM")
    for key in ("model", "implementation", "tokens", "bytes", "logprob_nats", "bits_per_byte"):
        assert key in ours
    assert ours["tokens"] == peer["tokens"] > 10
    assert ours["bytes"] == len(text_file.read_bytes())
    # a sum of ~20 fp32 log-probabilities of ~10 nats each: agreement to 1e-4 nats is rounding
    assert ours["logprob_nats"] == pytest.approx(peer["logprob_nats"], abs=1e-3)
    assert ours["bits_per_byte"] == pytest.approx(-ours["logprob_nats"] / 0.6931471805599453 / ours["bytes"])


def test_random_preset_is_near_uniform(text_file, neox_tokenizer_path, capsys):
    assert main(["score", "-m", "rwkv4-tiny", "-i", str(text_file), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["random_weights"] is True
    # random weights: about log(vocab) = 10.8 nats per token
    assert 10.0 < -r["logprob_nats"] / r["tokens"] < 11.5


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_gives_one_line_and_exit_2(case, cli_runs):
    code, out, err, _ = cli_runs[case]
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err


def test_help_lists_every_command_with_a_description(cli_runs):
    code, out, _, _ = cli_runs["help"]
    assert code == 0
    for command in ("scaling", "uncheatable", "nlp", "score", "kernels", "report"):
        assert command in out


def test_help_shows_the_defaults(cli_runs):
    # rich would read "[default: 16]" as a markup tag and print nothing: the defaults must survive
    code, out, _, _ = cli_runs["scaling-help"]
    assert code == 0
    assert "Shortest T (default: 16)." in out and "(default: 2048)" in out
