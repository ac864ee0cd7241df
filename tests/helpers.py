"""Small shared builders for tests: a random transformers RwkvForCausalLM saved to disk."""
from pathlib import Path

import torch

from rwkv_bench.models.rwkv4 import init_random_


def random_hf_rwkv(path: Path, vocab: int = 50277, hidden: int = 64, layers: int = 2, seed: int = 0):
    """Save a random transformers RwkvForCausalLM with dense, non-trivial weights; return the model."""
    from transformers import RwkvConfig, RwkvForCausalLM

    torch.manual_seed(seed)
    config = RwkvConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                        intermediate_size=4 * hidden, attention_hidden_size=hidden, rescale_every=0,
                        context_length=1024, tie_word_embeddings=False)
    model = RwkvForCausalLM(config).eval()
    init_random_(model, seed, scale=1.0)  # the same name patterns as our RWKV-4's (time_decay, time_mix, ln)
    model.save_pretrained(path)
    return model


class ScoringOnlyBackend:
    """A toy model for the uncheatable tests: subclasses give encode and token_logprobs; it cannot decode."""

    def start(self, ids):
        raise NotImplementedError

    def step(self, token, cache):
        raise NotImplementedError

    def weights_bytes(self):
        return 0


def install_toy_models(monkeypatch, make_backend, random_weights=lambda name: False):
    """Make the uncheatable run take any spec string and load `make_backend(spec_text)` for it."""
    from rwkv_bench.specs import ModelSpec
    from rwkv_bench.uncheatable import settings

    def fake_parse_models(text):
        names = text.split(",") if isinstance(text, str) else text
        return [ModelSpec(n, "preset", "ours", n, random_weights=random_weights(n), has_tokenizer=True)
                for n in names]

    monkeypatch.setattr(settings, "parse_models", fake_parse_models)
    monkeypatch.setattr("rwkv_bench.backends.load", lambda spec, **kwargs: make_backend(spec))
