"""One spec grammar for every command: `specs.parse` reads it (files only), `backends.load` loads it, and the
same table of specs behaves the same in score, scaling, uncheatable and nlp."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from safetensors.torch import save_file

from rwkv_bench.commands import score_file
from rwkv_bench.errors import UserError
from rwkv_bench.models.loaders import load_hf_dir
from rwkv_bench.nlp.evaluate import run_nlp
from rwkv_bench.nlp.store import HF_LM, RWKV_BENCH_LM
from rwkv_bench.recording import read_meta
from rwkv_bench.scaling.sweep import run_sweep
from rwkv_bench.specs import OURS as OURS_RUNNER
from rwkv_bench.specs import TRANSFORMERS, parse
from rwkv_bench.uncheatable.evaluate import run
from rwkv_bench.uncheatable.store import read_per_paper

from helpers import random_hf_rwkv

TEXT = "State space models and RNNs carry a fixed-size state across the text; attention keeps every token."


@pytest.fixture(scope="module")
def spec_table(tmp_path_factory):
    """spec -> (runner, random_weights, kind): ours and transformers, presets, an HF dir, .pth, .safetensors."""
    root = tmp_path_factory.mktemp("specs")
    hf_dir = root / "hf-rwkv"
    random_hf_rwkv(hf_dir, hidden=32, layers=2)
    state = load_hf_dir(hf_dir).state_dict()
    import torch

    torch.save(state, root / "model.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(root / "model.safetensors"))
    return {
        "rwkv4-tiny": (OURS_RUNNER, True, "preset"),
        "transformers:rwkv4-tiny": (TRANSFORMERS, True, "preset"),
        "gptneox-tiny": (TRANSFORMERS, True, "preset"),
        str(hf_dir): (OURS_RUNNER, False, "hf-dir"),
        f"transformers:{hf_dir}": (TRANSFORMERS, False, "hf-dir"),
        str(root / "model.pth"): (OURS_RUNNER, False, "checkpoint"),
        str(root / "model.safetensors"): (OURS_RUNNER, False, "checkpoint"),
    }


def test_parse_reads_what_a_spec_names_without_loading(spec_table):
    for text, (runner, random, kind) in spec_table.items():
        spec = parse(text)
        assert (spec.runner, spec.random_weights, spec.kind) == (runner, random, kind), text
        assert spec.text == text
    assert parse("EleutherAI/pythia-160m").kind == "hub"
    for bad, needle in [("", "empty"), ("transformers:", "empty"), ("no-such-thing", "unknown model spec"),
                        ("./missing.pth", "no such file")]:
        with pytest.raises(UserError, match=needle):
            parse(bad)


def test_the_same_specs_work_identically_in_every_command(spec_table, tmp_path):
    specs = list(spec_table)
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT)
    scored = {s: score_file(s, text_file) for s in specs}

    papers = tmp_path / "papers.json"
    papers.write_text(json.dumps([TEXT]))
    uncheatable = run(dict(models=specs, papers_file=papers, min_chars=1, bootstrap=100, progress=False),
                      out=tmp_path / "uncheatable")
    per_paper = read_per_paper(uncheatable / "per_paper.csv").set_index("model")

    scaling = run_sweep(dict(models=",".join(specs), scenario="prefill", min_len=8, max_len=8, repeats=1,
                             warmup=0), out=str(tmp_path / "scaling"), report=False)
    points = pd.read_csv(scaling / "points.csv").set_index("model")

    nlp = run_nlp(dict(models=specs, tasks="rwkv_bench_mc", limit=2, bootstrap_iters=0), out=tmp_path / "nlp",
                  progress=False)
    runners = {m["spec"]: m["runner"] for m in read_meta(nlp)["models"]}
    nlp_table = pd.read_csv(nlp / "table.csv")

    for spec, (runner, random, _) in spec_table.items():
        ours = runner == OURS_RUNNER
        assert scored[spec]["implementation"].startswith("rwkv_bench" if ours else "transformers"), spec
        assert scored[spec]["random_weights"] is random
        # uncheatable scores the text exactly as `score` does: same tokens, same log-probability
        row = per_paper.loc[spec]
        assert row.tokens == scored[spec]["tokens"] and row.implementation == scored[spec]["implementation"]
        assert math.isclose(row.logprob_nats, scored[spec]["logprob_nats"], rel_tol=1e-6)
        point = points.loc[spec]
        assert point.status == "ok", point.error
        assert point.implementation.startswith("rwkv_bench" if ours else "transformers")
        assert str(point.random_weights).lower() == str(random).lower()
        assert runners[spec] == (RWKV_BENCH_LM if ours else HF_LM), spec
    assert nlp_table["model"].nunique() == len(specs)
    # our RWKV and transformers' RwkvForCausalLM hold the same weights: the same log-probability
    hf_dir = next(s for s, v in spec_table.items() if v[2] == "hf-dir" and v[0] == OURS_RUNNER)
    for a, b in [("rwkv4-tiny", "transformers:rwkv4-tiny"), (hf_dir, f"transformers:{hf_dir}")]:
        assert math.isclose(scored[a]["logprob_nats"], scored[b]["logprob_nats"], rel_tol=1e-4), (a, b)


def test_attention_implementation_is_still_readable():
    # transformers 5 names the attention only in the private config._attn_implementation (backends/hf.py)
    from rwkv_bench.backends import resolve

    assert resolve("gptneox-tiny").implementation.endswith("[sdpa]")


def test_a_tokenizer_flag_never_replaces_a_models_own(tmp_path):
    from rwkv_bench.backends import load

    hf_dir = tmp_path / "with-tokenizer"
    random_hf_rwkv(hf_dir, vocab=128, hidden=16, layers=2)
    (hf_dir / "tokenizer.json").write_text("{}")           # has a tokenizer of its own (even a broken one)
    assert parse(str(hf_dir)).has_tokenizer
    backend = load(parse("rwkv4-tiny"), tokenizer=None)
    assert backend.tokenizer.name.endswith("20B_tokenizer.json.gz")  # shipped with the package
