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
from rwkv_bench.tokenizer import NEOX_TOKENIZER_FILE
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


@pytest.mark.slow
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
    # transformers 5 names the attention only in the private config._attn_implementation
    # (read in library_internals.attention_implementation)
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


# ---- RWKV-7: the same commands, no branch on the version ----

@pytest.fixture(scope="module")
def rwkv7_specs(tmp_path_factory):
    """rwkv7-tiny, an x070 .pth in BlinkDL's naming and the same weights as an fla-named HF directory."""
    import torch

    from rwkv_bench.models.rwkv7 import RWKV7, RWKV7Config, init_random_
    from rwkv_bench.models.rwkv7_loaders import blinkdl_state_dict

    from test_rwkv7 import to_fla

    root = tmp_path_factory.mktemp("rwkv7")
    model = init_random_(RWKV7(RWKV7Config(vocab_size=50304, n_layer=2, n_embd=64)), seed=1)
    torch.save(blinkdl_state_dict(model), root / "x070.pth")
    hf = root / "hf-rwkv7"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "rwkv7", "vocab_size": 50304}))
    save_file(to_fla(blinkdl_state_dict(model)), str(hf / "model.safetensors"))
    return ["rwkv7-tiny", str(root / "x070.pth"), str(hf)]


def test_rwkv7_specs_parse_to_our_runner(rwkv7_specs, tmp_path):
    for text in rwkv7_specs:
        spec = parse(text)
        assert spec.runner == OURS_RUNNER and spec.family == "rwkv", text
    assert parse("rwkv7-13.3b").random_weights and parse("llama-0.1b").runner == TRANSFORMERS
    hub_file = parse("hf://BlinkDL/rwkv-7-pile/RWKV-x070-Pile-168M-20241120-ctx4096.pth")
    assert (hub_file.kind, hub_file.runner, hub_file.has_tokenizer) == ("hub-file", OURS_RUNNER, False)
    assert hub_file.location == "BlinkDL/rwkv-7-pile/RWKV-x070-Pile-168M-20241120-ctx4096.pth"
    for bad, needle in [("transformers:rwkv7-tiny", "transformers has no RWKV-7"),
                        (f"transformers:{rwkv7_specs[2]}", "transformers has no RWKV-7"),
                        ("hf://BlinkDL/rwkv-7-pile", "expected hf://org/name/path/to/file"),
                        ("hf://BlinkDL/rwkv-7-pile/README.md", "expected hf://org/name/path/to/file")]:
        with pytest.raises(UserError, match=needle):
            parse(bad)


@pytest.mark.slow
def test_rwkv7_runs_in_score_scaling_and_uncheatable(rwkv7_specs, tmp_path):
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT)
    scored = {s: score_file(s, text_file) for s in rwkv7_specs}
    for s in rwkv7_specs:
        assert scored[s]["implementation"] == "rwkv_bench.rwkv7[cpu-kernel]", s
    # the .pth and the HF directory hold the same weights: the same log-probability
    pth, hf = rwkv7_specs[1:]
    assert math.isclose(scored[pth]["logprob_nats"], scored[hf]["logprob_nats"], rel_tol=1e-6)
    papers = tmp_path / "papers.json"
    papers.write_text(json.dumps([TEXT]))
    uncheatable = run(dict(models=rwkv7_specs, papers_file=papers, min_chars=1, bootstrap=100, progress=False),
                      out=tmp_path / "uncheatable")
    per_paper = read_per_paper(uncheatable / "per_paper.csv").set_index("model")
    for s in rwkv7_specs:
        assert math.isclose(per_paper.loc[s].logprob_nats, scored[s]["logprob_nats"], rel_tol=1e-6)
    scaling = run_sweep(dict(models=",".join(rwkv7_specs), scenario="prefill", min_len=8, max_len=8, repeats=1,
                             warmup=0), out=str(tmp_path / "scaling"), report=False)
    points = pd.read_csv(scaling / "points.csv").set_index("model")
    for s in rwkv7_specs:
        assert points.loc[s].status == "ok", points.loc[s].error
        assert points.loc[s].implementation == "rwkv_bench.rwkv7[cpu-kernel]"


def test_tokenizer_follows_the_vocabulary(tmp_path):
    from rwkv_bench.backends import load
    from rwkv_bench.models.rwkv7 import RWKV7, RWKV7Config
    from rwkv_bench.models.rwkv7_loaders import save_blinkdl_pth
    from rwkv_bench.tokenizer import ByteTokenizer, WorldTokenizer

    for vocab, kind in [(65536, WorldTokenizer), (256, ByteTokenizer), (1234, None)]:
        path = tmp_path / f"v{vocab}.pth"
        save_blinkdl_pth(RWKV7(RWKV7Config(vocab_size=vocab, n_layer=1, n_embd=64)), path)
        if kind is None:
            with pytest.raises(UserError, match="no tokenizer known for a vocabulary of 1234.*--tokenizer"):
                load(parse(str(path)))
            backend = load(parse(str(path)), tokenizer=str(NEOX_TOKENIZER_FILE))
            assert backend.tokenizer.name == str(NEOX_TOKENIZER_FILE)
        else:
            assert isinstance(load(parse(str(path))).tokenizer, kind)
