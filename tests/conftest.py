import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
NEOX_TOKENIZER = SHARED / "tokenizers" / "20B_tokenizer.json"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def neox_tokenizer_path():
    if not NEOX_TOKENIZER.is_file():
        pytest.skip(f"needs the GPT-NeoX tokenizer at {NEOX_TOKENIZER} (../shared is only on dev/CI machines)")
    return NEOX_TOKENIZER
