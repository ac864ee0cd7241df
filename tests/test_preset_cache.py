"""Random preset weights come from a per-machine cache: the same tensors the initialisation gives, and a
damaged cache file is made again, never trusted."""
import torch

from rwkv_bench.models import preset_cache
from rwkv_bench.models.presets import random_preset_model
from rwkv_bench.models.rwkv4 import RWKV4, RWKVConfig, init_paper_


def fresh_rwkv4_tiny(seed: int) -> RWKV4:
    model = RWKV4(RWKVConfig(vocab_size=50277, n_layer=4, n_embd=256))
    return init_paper_(model, torch.Generator().manual_seed(seed))


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cached_weights_equal_the_initialisation_and_a_damaged_file_is_remade(tmp_path, monkeypatch):
    monkeypatch.setattr(preset_cache, "cache_dir", lambda: tmp_path)
    made = random_preset_model("rwkv4-tiny", seed=3)           # made and stored
    files = list(tmp_path.glob("rwkv4-tiny-seed3-*.safetensors"))
    assert len(files) == 1
    read = random_preset_model("rwkv4-tiny", seed=3)           # read back
    assert same_weights(made, fresh_rwkv4_tiny(3)) and same_weights(read, made)
    assert not same_weights(random_preset_model("rwkv4-tiny", seed=4), made)  # the seed is in the key
    files[0].write_bytes(files[0].read_bytes()[:1000])         # a cut-short file
    assert same_weights(random_preset_model("rwkv4-tiny", seed=3), made)
    assert files[0].stat().st_size > 1000                      # made again
