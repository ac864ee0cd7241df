"""The nlp run directory's format (store.py) and the token-list planning behind state reuse (prefix_batches.py),
as plain functions: no model, no lm-eval run."""
import json

import pytest

from rwkv_bench.nlp import store
from rwkv_bench.nlp.prefix_batches import PAD_BUDGET, pack, prefix_segments, right_padded


def metric_row(model: str, task: str, value: float) -> dict:
    return {"task": task, "metric": "acc", "filter": "none", "model": model, "value": value, "stderr": 0.1,
            "higher_is_better": True, "n_samples": 4, "num_fewshot": 0, "random_weights": True,
            "runner": store.RWKV_BENCH_LM, "implementation": "x", "run_task": task}


def token_row(model: str, task: str) -> dict:
    return {"model": model, "task": task, "request_type": "loglikelihood", "requests": 8, "tokens_processed": 10,
            "tokens_padding": 1, "tokens_reencode": 30, "forward_passes": 2, "reencode_over_processed": 3.0,
            "model_time_s": 0.5, "wall_s": 1.0, "runner": store.RWKV_BENCH_LM, "random_weights": True}


def test_a_task_counts_as_done_once_its_tokens_rows_are_written(tmp_path):
    """tokens.csv rows commit a (model, task); table.csv rows of a task killed before them are dropped."""
    store.append_metrics(tmp_path, [metric_row("m", "a", 0.5), metric_row("m", "b", 0.25)])
    store.append_tokens(tmp_path, [token_row("m", "a")])
    assert store.committed_tasks(tmp_path) == {("m", "a")}
    table = store.read_table(tmp_path)
    assert list(table["run_task"]) == ["a"] and list(table.columns) == store.TABLE_COLUMNS
    assert list(store.read_tokens(tmp_path).columns) == store.TOKEN_COLUMNS


def test_results_and_samples_files_are_named_by_model_and_task(tmp_path):
    assert store.read_results(tmp_path, "a/b c") is None
    store.write_results(tmp_path, "a/b c", {"results": {"t": {"acc,none": 0.5}}})
    assert store.results_path(tmp_path, "a/b c").name == "results_a_b_c.json"
    assert store.read_results(tmp_path, "a/b c") == {"results": {"t": {"acc,none": 0.5}}}
    store.write_samples(tmp_path, "m", "t", {"t": [{"doc_id": 0}, {"doc_id": 1}]})
    lines = store.samples_path(tmp_path, "m", "t").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"task": "t", "doc_id": 0}, {"task": "t", "doc_id": 1}]
    assert not list(tmp_path.glob("*.tmp"))


def test_meta_keys_are_the_stores(tmp_path):
    with pytest.raises(AssertionError, match="not an nlp meta.json key"):
        store.start(tmp_path, {}, None, no_such_key=1)
    assert store.run_options({"limit": 3, "options": {"limit": 5}})["limit"] == 5
    assert store.run_options({"limit": 3})["limit"] == 3  # results/reference/nlp-local keeps them at the top


def test_prefix_segments_cut_where_contexts_branch():
    """Contexts P+a, P+b, P+a+c: segments P, a, b, c (each context stops before its last token)."""
    P, a, b, c = (1, 2, 3), (4, 5), (6, 7), (8, 9)
    contexts = sorted([P + a, P + b, P + a + c])
    segments, node = prefix_segments(contexts)
    runs = sum(len(tokens) for _, tokens in segments)
    assert runs == len(P + a + b + c) - 2  # every token once, but the last of P+b and of P+a+c
    for ctx in contexts:  # walking up from a context's node gives its tokens but the last
        tokens, i = (), node[ctx]
        while i >= 0:
            tokens = segments[i][1] + tokens
            i = segments[i][0]
        assert tokens == ctx[:-1]


def test_pack_keeps_rows_positions_and_padding_within_bounds():
    lengths = [5, 40, 3, 40, 39, 200, 1, 1, 1]
    batches = pack(lengths, max_rows=3, max_positions=150)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) <= 3 and (len(batch) == 1 or len(batch) * longest <= 150)
        assert sum(longest - lengths[i] for i in batch) <= PAD_BUDGET
        assert lengths[batch[0]] == longest
    tokens, lens, mask = right_padded([[7, 8, 9], [5]], "cpu")
    assert tokens.tolist() == [[7, 8, 9], [5, 0, 0]] and lens.tolist() == [3, 1]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
