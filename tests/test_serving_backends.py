"""Many sequences at once through every backend: a batch of B prompts decodes as B separate sequences would,
a repeated cache holds real copies, and each backend states the bytes one sequence's state or KV cache takes."""
import pytest
import torch

from rwkv_bench.backends import resolve

MODELS = ["rwkv4-tiny", "rwkv7-tiny", "gptneox-tiny", "transformers:rwkv4-tiny", "mamba-tiny", "mamba2-tiny"]


@pytest.fixture(scope="module")
def backends():
    return {name: resolve(name, seed=0) for name in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_a_batch_decodes_each_row_as_its_own_sequence(backends, name):
    backend = backends[name]
    ids = torch.randint(0, 1000, (3, 12), generator=torch.Generator().manual_seed(1))
    logits, cache = backend.start_batch(ids)
    tokens = logits.argmax(-1)
    logits, cache = backend.step_batch(tokens, cache)
    alone, alone_cache = backend.start(ids[2])
    alone, _ = backend.step(int(tokens[2]), alone_cache)
    assert logits.shape[0] == 3
    assert torch.allclose(logits[2], alone, atol=1e-4), (logits[2] - alone).abs().max()


@pytest.mark.parametrize("name", MODELS)
def test_a_repeated_cache_is_copies_of_one_sequence(backends, name):
    backend = backends[name]
    _, one = backend.start(torch.arange(10))
    _, many = backend.start_batch(torch.arange(10).reshape(1, -1))
    many = backend.repeat_cache(many, 4)
    logits, many = backend.step_batch(torch.tensor([7, 7, 7, 7]), many)
    alone, _ = backend.step(7, one)
    assert logits.shape[0] == 4 and all(torch.allclose(row, alone, atol=1e-4) for row in logits)


def test_state_bytes_per_sequence_are_the_analytic_sizes(backends):
    L, C = 4, 256  # the tiny preset
    assert backends["rwkv4-tiny"].sequence_state_bytes(1000) == 5 * L * C * 4
    assert backends["transformers:rwkv4-tiny"].sequence_state_bytes(1000) == 5 * L * C * 4
    assert backends["rwkv7-tiny"].sequence_state_bytes(1000) == L * C * (64 + 2) * 4
    assert backends["gptneox-tiny"].sequence_state_bytes(1000) == 2 * L * 1000 * C * 4
    assert backends["mamba-tiny"].sequence_state_bytes(1000) == L * (2 * C) * (4 + 16) * 4
    inner = 2 * C
    assert backends["mamba2-tiny"].sequence_state_bytes(1000) == L * ((inner + 2 * 128) * 4 + inner * 128) * 4
    assert backends["mamba-tiny"].implementation == "transformers.MambaForCausalLM[torch-reference-scan]"
    assert backends["mamba-tiny"].family == "mamba" and backends["mamba-tiny"].max_context is None
