import os
from pathlib import Path

import pytest

from rwkv_bench.tokenizer import NEOX_TOKENIZER_FILE as NEOX_TOKENIZER  # shipped in the package

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def neox_tokenizer_path():
    return NEOX_TOKENIZER
