"""What rwkv_bench/library_internals.py and nlp/squad_compat.py rely on in other libraries beyond their public
API, checked against the installed releases: each test fails, naming what changed, when a release changes it."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM

from rwkv_bench.library_internals import encode_pair, go_offline, reencode_positions, strip_rank_padding
from rwkv_bench.tokenizer import neox_tokenizer


class RecordingLM(TemplateLM):
    """An lm-eval model that records the requests lm-eval hands it and answers them with constants."""

    def __init__(self, rank: int = 0, world_size: int = 1, other_rank_extra: int = 0):
        super().__init__()
        self.tokenizer = neox_tokenizer()
        self._rank, self._world_size = rank, world_size
        self.other_rank_extra = other_rank_extra
        self.token_requests, self.calls = [], {}

    @property
    def eot_token_id(self) -> int:
        return 0

    def tok_encode(self, string, add_special_tokens=None, **kwargs):
        return self.tokenizer.encode(string)

    def _loglikelihood_tokens(self, requests, **kwargs):
        self.token_requests += [(list(ctx), list(cont)) for _, ctx, cont in requests]
        return [(-1.0, False)] * len(requests)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        self.calls["loglikelihood"] = list(requests)
        return super().loglikelihood(requests, disable_tqdm=True)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError

    # lm-eval's data-parallel contract, for a rank whose peer holds `other_rank_extra` more requests
    def all_gather(self, tensor):
        mine = tensor.reshape(1)
        others = [mine + self.other_rank_extra] * (self._world_size - 1)
        return torch.cat(others[:self._rank] + [mine] + others[self._rank:])

    def gather_object(self, obj, dst: int = 0):
        return [obj] * self._world_size if self._rank == dst else None

    def barrier(self) -> None:
        pass


PAIRS = [("Question: what is ice?\nAnswer:", " frozen water"), ("The cat sat on the ", "mat"),  # trailing space
         ("", "A text with no context at all."), ("RWKV", " is an RNN")]


def test_encode_pair_is_how_lm_evals_loglikelihood_tokenises_requests():
    """library_internals.encode_pair calls TemplateLM._encode_pair; TemplateLM.loglikelihood tokenises with
    it before `_loglikelihood_tokens`. (That lm-eval's hf model goes through it too is checked in
    test_nlp_vs_hf.py: its counted re-encode positions equal ours, counted from what lm-eval handed us.)"""
    from lm_eval.models.huggingface import HFLM

    assert issubclass(HFLM, TemplateLM)
    lm = RecordingLM()
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(PAIRS)]
    lm.loglikelihood(requests)
    assert lm.token_requests == [tuple(map(list, encode_pair(lm, *pair))) for pair in PAIRS]
    ctx, cont = encode_pair(lm, "The cat sat on the ", "mat")
    assert lm.tokenizer.decode(cont) == " mat"            # the context's trailing space moves to the continuation
    assert encode_pair(lm, "", "A text")[0] == [lm.prefix_token_id] == [0]
    assert reencode_positions(lm, requests) == sum(len(c) + len(x) - 1 for c, x in lm.token_requests)


def test_lm_eval_pads_a_rank_by_repeating_its_last_request():
    """lm-eval's evaluator evens out the ranks by appending copies of a rank's last request (the same
    object); strip_rank_padding finds exactly those."""
    import lm_eval

    from rwkv_bench.nlp.tasks import include_paths, task_manager

    lm = RecordingLM(rank=1, world_size=2, other_rank_extra=3)
    out = lm_eval.simple_evaluate(model=lm, tasks=["rwkv_bench_mc"], limit=4, bootstrap_iters=0,
                                  task_manager=task_manager(["rwkv_bench_mc"], include_paths()))
    assert out is None  # rank 1 hands its metrics to rank 0
    got = lm.calls["loglikelihood"]
    real, extra = strip_rank_padding(got, distributed=True)
    assert extra == 3 and len(real) == 2 * 4      # rank 1 of 2 holds documents 1 and 3, four choices each
    assert all(r is got[len(real) - 1] for r in got[len(real):])
    assert len({(r.doc_id, r.idx) for r in real}) == len(real)


def test_strip_rank_padding():
    a, b = SimpleNamespace(repeats=1), SimpleNamespace(repeats=2)
    assert strip_rank_padding([a, b, b], True) == ([a, b, b], 0)              # b's own repeats
    assert strip_rank_padding([a, b, b, b, b, b], True) == ([a, b, b], 3)
    assert strip_rank_padding([b, a, a, a], True) == ([b, a], 2) and strip_rank_padding([], True) == ([], 0)
    assert strip_rank_padding([b, a, a], False) == ([b, a, a], 0)            # one process: never padded


def test_offline_switches_are_the_module_constants_the_libraries_read(monkeypatch):
    import inspect

    import datasets.config
    import datasets.load
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    assert not huggingface_hub.is_offline_mode()
    go_offline()
    assert huggingface_hub.is_offline_mode(), "huggingface_hub no longer reads constants.HF_HUB_OFFLINE"
    assert datasets.config.HF_HUB_OFFLINE is True
    assert "config.HF_HUB_OFFLINE" in inspect.getsource(datasets.load), "datasets reads its offline switch elsewhere"


def test_squad_shim_still_needed():
    """squad_compat exists only because lm-eval's ReCoRD imports a module transformers 5 removed. This
    fails when either upstream changes (transformers ships it again, or lm-eval stops importing it):
    then delete squad_compat.py and its install() calls."""
    import importlib.util

    import lm_eval.tasks.super_glue.record as record_pkg

    util_source = (Path(record_pkg.__path__[0]) / "util.py").read_text()
    assert "transformers.data.metrics.squad_metrics" in util_source, "lm-eval no longer needs the shim"
    try:
        real = importlib.util.find_spec("transformers.data.metrics.squad_metrics")
    except ModuleNotFoundError:
        real = None
    from rwkv_bench.nlp import squad_compat

    assert real is None or real.origin == squad_compat.__file__, "transformers ships squad_metrics again"


def test_squad_compat_makes_record_loadable():
    from rwkv_bench.nlp import squad_compat

    squad_compat.install()
    import lm_eval.tasks.super_glue.record.util as record_util

    assert record_util.squad_metrics.compute_exact("The Eiffel Tower", "eiffel tower!") == 1
    assert squad_compat.compute_f1("a cat sat", "the cat sat down") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert squad_compat.compute_f1("", "") == 1.0 and squad_compat.compute_f1("x", "") == 0.0


def test_attention_implementation_reads_what_transformers_chose():
    """transformers 5 keeps the attention only in the private config._attn_implementation: a config asking
    for one, and a model built from it, must both answer it (None would unlabel rows and hide eager scores)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from rwkv_bench.library_internals import attention_implementation

    for wanted in ("eager", "sdpa"):
        config = GPTNeoXConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, attn_implementation=wanted)
        assert attention_implementation(config) == wanted
        assert attention_implementation(GPTNeoXForCausalLM(config).config) == wanted
