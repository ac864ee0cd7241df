"""`rwkv-bench nlp` end to end on the offline local tasks, `report` on its run, and its bad-input errors."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import NEOX_TOKENIZER
from rwkv_bench.cli import main
from rwkv_bench.nlp.tasks import PAPER_TASKS, expand_task_names
from rwkv_bench.recording import read_meta


LIMIT = 15
RUN_ARGS = ["--models", "rwkv4-tiny", "--tasks", "rwkv_bench_mc,rwkv_bench_lambada", "--limit", str(LIMIT),
            "--bootstrap-iters", "100"]
_single_run: dict[str, Path] = {}


def single_process_run(tmp_path_factory) -> Path:
    """One in-process `rwkv-bench nlp` run of RUN_ARGS for the whole session: this file's tests read it, and
    test_nlp_distributed.py compares its sharded runs with it. Tests copy it before changing it."""
    if "run" not in _single_run:
        out = tmp_path_factory.mktemp("nlp") / "run"
        assert main(["nlp", *RUN_ARGS, "--tokenizer", str(NEOX_TOKENIZER), "--out", str(out)]) == 0
        _single_run["run"] = out
    return _single_run["run"]


@pytest.fixture(scope="module")
def nlp_run(tmp_path_factory):
    return single_process_run(tmp_path_factory)


@pytest.mark.slow  # end to end: the nlp command's run
def test_run_writes_lm_evals_json_and_the_tables(nlp_run):
    table = pd.read_csv(nlp_run / "table.csv")
    assert {"task", "metric", "model", "value", "stderr"} <= set(table.columns)
    assert set(table["task"]) == {"rwkv_bench_mc", "rwkv_bench_lambada"}
    acc = table[(table.task == "rwkv_bench_mc") & (table.metric == "acc")]["value"].item()
    assert 0.0 <= acc <= 1.0 and (table["n_samples"] == LIMIT).all()
    assert table["random_weights"].astype(str).str.lower().eq("true").all()
    raw = json.loads((nlp_run / "results_rwkv4-tiny.json").read_text())
    # table.csv carries lm-eval's own numbers, unchanged
    assert raw["results"]["rwkv_bench_mc"]["acc,none"] == pytest.approx(acc, abs=0)
    md = (nlp_run / "table.md").read_text()
    assert "random weights" in md and "rwkv_bench_lambada" in md and "perplexity" in md
    tokens = pd.read_csv(nlp_run / "tokens.csv")
    mc = tokens[tokens.task == "rwkv_bench_mc"].iloc[0]
    assert mc["tokens_processed"] < mc["tokens_reencode"]       # state reuse: shared contexts run once
    assert read_meta(nlp_run)["kind"] == "nlp"
    assert (nlp_run / "nlp_scores.png").stat().st_size > 1000 and (nlp_run / "nlp_scores.svg").is_file()


@pytest.mark.slow  # end to end: the nlp command's run
def test_report_rebuilds_the_tables(nlp_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(nlp_run, run)
    before = (run / "table.md").read_text()
    (run / "table.md").unlink()
    (run / "nlp_scores.png").unlink()
    assert main(["report", str(run)]) == 0
    assert (run / "table.md").read_text() == before
    assert (run / "nlp_scores.png").is_file() and "table.md" in (run / "index.md").read_text()


def test_paper_expands_to_the_twelve_tasks():
    assert expand_task_names("paper") == PAPER_TASKS and len(PAPER_TASKS) == 12
    assert expand_task_names("paper,rwkv_bench_mc")[-1] == "rwkv_bench_mc"


# unknown and standard task names index lm-eval's ~15k task YAMLs (seconds): slow
@pytest.mark.parametrize("args,needle", [
    pytest.param(["--models", "rwkv4-tiny", "--tasks", "no_such_task"], "no_such_task", marks=pytest.mark.slow),
    (["--models", "no-such-model", "--tasks", "rwkv_bench_mc"], "no-such-model"),
    (["--models", "rwkv4-tiny", "--tasks", "rwkv_bench_mc", "--limit", "0"], "--limit"),
    # a standard task whose dataset is not in the (offline) Hugging Face cache
    pytest.param(["--models", "rwkv4-tiny", "--tasks", "piqa"], "piqa", marks=pytest.mark.slow),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, args, needle):
    assert main(["nlp", *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err


def test_a_saved_random_preset_stays_labelled_random(tmp_path):
    from rwkv_bench.models.peer import save_peer
    from rwkv_bench.nlp.evaluate import plan_model
    from rwkv_bench.specs import parse

    saved = save_peer("rwkv4-tiny", tmp_path / "tiny", seed=0)
    assert plan_model(parse(str(saved))).random_weights            # our LM on the saved directory
    assert plan_model(parse(f"transformers:{saved}")).random_weights  # lm-eval's hf on the same directory
    (saved / "RANDOM_WEIGHTS").unlink()                              # a user's own directory: no marker, not random
    assert not plan_model(parse(str(saved))).random_weights


@pytest.mark.slow  # end to end: the nlp command's run
def test_a_killed_run_resumes_without_lost_or_duplicated_rows(tmp_path, nlp_run):
    run = tmp_path / "run"
    shutil.copytree(nlp_run, run)
    full_table, full_tokens = pd.read_csv(run / "table.csv"), pd.read_csv(run / "tokens.csv")
    first_meta = read_meta(run)
    # killed after the first task's rows and half of the second's: its tokens.csv rows (the commit) never written
    table_lines = (run / "table.csv").read_text().splitlines(keepends=True)
    mc_rows = 1 + int((full_table.run_task == "rwkv_bench_mc").sum())
    (run / "table.csv").write_text("".join(table_lines[:mc_rows + 1]) + table_lines[mc_rows + 1][:7])
    token_lines = (run / "tokens.csv").read_text().splitlines(keepends=True)
    (run / "tokens.csv").write_text("".join(token_lines[:1 + int((full_tokens.task == "rwkv_bench_mc").sum())]))
    # a new run may not reuse the directory; a changed dtype is refused; both leave the files as they were
    before = (run / "table.csv").read_bytes()
    assert main(["nlp", "--out", str(run)]) == 2
    assert main(["nlp", "--out", str(run), "--resume", "--dtype", "bfloat16"]) == 2
    assert (run / "table.csv").read_bytes() == before
    assert main(["nlp", "--out", str(run), "--resume"]) == 0
    table, tokens = pd.read_csv(run / "table.csv"), pd.read_csv(run / "tokens.csv")
    key = ["run_task", "task", "metric", "filter", "model"]
    assert not table.duplicated(key).any() and len(table) == len(full_table)
    merged = table.merge(full_table, on=key, suffixes=("", "_first"))
    assert (merged["value"] == merged["value_first"]).all()          # deterministic: the same numbers again
    assert len(tokens) == len(full_tokens) and not tokens.duplicated(["model", "task", "request_type"]).any()
    meta = read_meta(run)
    assert meta["date_utc"] == first_meta["date_utc"] and len(meta["resumes"]) == 1 and meta["completed"]
