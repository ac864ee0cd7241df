"""The RWKV World tokenizer we ship gives the token ids of BlinkDL's own (the `rwkv` package's TRIE_TOKENIZER) on
over 1 MB of mixed text: English, code, CJK, emoji, whitespace runs, invalid-looking byte mixes."""
import random
from pathlib import Path

import pytest

from rwkv_bench.errors import UserError
from rwkv_bench.tokenizer import (WORLD_VOCAB_FILE, ByteTokenizer, WorldTokenizer, read_world_vocab,
                                  tokenizer_for_vocab, world_tokenizer)

ENGLISH = ("the quick brown fox jumps over lazy dog language model recurrent state attention transformer "
           "benchmark evaluation tokenizer vocabulary greedy longest match Goose RWKV receptance weighted "
           "key value internationalization don't won't it's U.S.A. e.g. 3.14159 1,000,000 2026-12-07").split()
CODE = ["def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { s += a[i]; }\n", "\tif err != nil {\n\t\treturn err\n\t}\n",
        "SELECT * FROM t WHERE id = 42;\n", "    self.x = torch.zeros(1, 1, C)  # comment\n", "#include <vector>\n",
        "let v: Vec<u8> = vec![0xFF; 16];\n", "        \n", "{\"key\": [1, 2.5, null, true]}\n", "<div class=\"a\">&amp;</div>\n"]
CJK = "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去行过家十用发天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又定见只主没公从" \
      "日本語のテキストとカタカナ한국어텍스트입니다"
EMOJI = ["🎉", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "🦢", "😀", "🚀", "✅", "🧪"]


def mixed_text(n_bytes: int, seed: int = 0) -> str:
    """Deterministic mixed text of at least n_bytes UTF-8 bytes."""
    rng = random.Random(seed)
    parts, size = [], 0
    while size < n_bytes:
        kind = rng.random()
        if kind < 0.4:
            piece = " ".join(rng.choice(ENGLISH) for _ in range(rng.randint(3, 20)))
            piece = piece.capitalize() + rng.choice([". ", ", ", "! ", "? ", "\n\n", "\n"])
        elif kind < 0.65:
            piece = rng.choice(CODE)
        elif kind < 0.85:
            piece = "".join(rng.choice(CJK) for _ in range(rng.randint(2, 40))) + rng.choice(["。", "，", "\n", " "])
        elif kind < 0.95:
            piece = "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 5))) + " "
        else:
            piece = " " * rng.randint(1, 140) + "-" * rng.randint(0, 90) + chr(rng.randint(0x20, 0x2FFF))
        parts.append(piece)
        size += len(piece.encode("utf-8"))
    return "".join(parts)


@pytest.fixture(scope="module")
def reference():
    """BlinkDL's tokenizer on BlinkDL's vocabulary file (the one inside the rwkv package)."""
    import rwkv
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    return TRIE_TOKENIZER(str(Path(rwkv.__file__).parent / "rwkv_vocab_v20230424.txt"))


def test_ids_identical_to_rwkv_package_on_1mb_of_mixed_text(reference):
    text = mixed_text(1_050_000)
    assert len(text.encode("utf-8")) >= 1_000_000
    ours = world_tokenizer().encode(text)
    assert ours == reference.encode(text)
    assert world_tokenizer().decode(ours) == text
    assert len(ours) < len(text.encode("utf-8")) / 2   # it merges: not a byte-per-token fallback


def test_shipped_vocabulary_is_the_packages(reference):
    ours = read_world_vocab(WORLD_VOCAB_FILE)
    assert ours == reference.idx2token
    assert len(ours) == 65529 and min(ours) == 1 and max(ours) < 65536


def test_longest_match_is_greedy_not_optimal(tmp_path):
    """A toy vocabulary where greedy longest match and the shortest tokenisation differ: greedy it is."""
    import gzip

    vocab = tmp_path / "toy.txt.gz"
    lines = [f"{i + 1} {bytes([i])!r} 1" for i in range(256)] + ["257 'ab' 2", "258 'abc' 3", "259 'cd' 2"]
    vocab.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    tok = WorldTokenizer(vocab)
    assert tok.encode("abcd") == [258, ord("d") + 1]         # 'abc' + 'd', not 'ab' + 'cd'
    assert tok.encode("abx") == [257, ord("x") + 1]


def test_tokenizer_chosen_by_vocabulary(monkeypatch):
    monkeypatch.delenv("RWKV_BENCH_TOKENIZER", raising=False)
    assert tokenizer_for_vocab(50277).name.endswith("20B_tokenizer.json.gz")
    assert tokenizer_for_vocab(50304).name.endswith("20B_tokenizer.json.gz")
    assert isinstance(tokenizer_for_vocab(65536), WorldTokenizer)
    byte_tok = tokenizer_for_vocab(256)
    assert isinstance(byte_tok, ByteTokenizer) and byte_tok.encode("é!") == [0xC3, 0xA9, 0x21]
    with pytest.raises(UserError, match="--tokenizer"):
        tokenizer_for_vocab(1234)
