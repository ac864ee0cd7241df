"""--papers-file loading and text preparation; bad inputs exit with code 2 and one line."""
import json
import unicodedata

import pytest

from rwkv_bench.cli import main
from rwkv_bench.errors import UserError
from rwkv_bench.uncheatable.texts import Paper, read_papers_file, select

LONG = "word " * 500  # 2500 characters


def write(path, content):
    path.write_text(content, encoding="utf-8")
    return path


def test_list_of_strings(tmp_path):
    papers = read_papers_file(write(tmp_path / "t.json", json.dumps(["a" * 10, "b" * 20])))
    assert [(p.paper_id, p.text, p.text_source) for p in papers] == [("0", "a" * 10, "file"), ("1", "b" * 20, "file")]


def test_objects_with_text_and_jsonl(tmp_path):
    objs = [{"text": "first", "id": "x"}, {"text": "second"}]
    assert [p.text for p in read_papers_file(write(tmp_path / "t.json", json.dumps(objs)))] == ["first", "second"]
    jsonl = "\n".join(json.dumps(o) for o in objs) + "\n"
    assert [p.text for p in read_papers_file(write(tmp_path / "t.jsonl", jsonl))] == ["first", "second"]
    mixed = json.dumps("a string") + "\n" + json.dumps({"text": "obj"}) + "\n\n"
    assert [p.paper_id for p in read_papers_file(write(tmp_path / "m.jsonl", mixed))] == ["0", "1"]


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("   \n", "is empty"),
    ("[]", "empty list"),
    ('{"text": "a"}', "expected a JSON list"),
    ("[1, 2]", "item 0 is a int"),
    ('[{"body": "x"}]', "without a string 'text'"),
    ('["ok", ""]', "text 1 is empty"),
    ('["unterminated', "not valid JSON"),
    ('{"text": "a"}\nnot json\n', "neither JSON nor JSONL"),
])
def test_bad_files(tmp_path, content, message):
    with pytest.raises(UserError, match=message):
        read_papers_file(write(tmp_path / "t.json", content))


def test_non_utf8_and_missing(tmp_path):
    bad = tmp_path / "latin1.json"
    bad.write_bytes(json.dumps(["caf\u00e9"], ensure_ascii=False).encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        read_papers_file(bad)
    with pytest.raises(UserError, match="no such papers file"):
        read_papers_file(tmp_path / "missing.json")


def test_select_nfc_truncation_dedup_order():
    decomposed = "Cafe\u0301 " * 1100   # 6600 characters, 5500 once NFC
    papers = [Paper("0", decomposed), Paper("1", "x" * 6000), Paper("2", "Caf\u00e9 " * 1100), Paper("3", LONG)]
    kept, dropped = select(papers, chars=5000, min_chars=2000)
    assert [p.paper_id for p in kept] == ["0", "1", "3"]          # file order; 2 is 0 once NFC
    assert dropped["duplicates"] == [("2", "0")]
    assert unicodedata.is_normalized("NFC", kept[0].text) and len(kept[0].text) == 5000
    assert kept[1].text == "x" * 5000
    # truncation happens after NFC: 5000 characters of the normalised text
    assert kept[0].text == unicodedata.normalize("NFC", decomposed)[:5000]


def test_select_short_texts():
    papers = [Paper("0", LONG), Paper("1", "short")]
    kept, dropped = select(papers, chars=5000, min_chars=2000)
    assert [p.paper_id for p in kept] == ["0"] and dropped["too_short"] == ["1"]
    with pytest.raises(UserError, match="text 1 has 5 characters, fewer than the minimum 2000"):
        select(papers, chars=5000, min_chars=2000, short="error")


def test_select_limit():
    papers = [Paper(str(i), LONG + str(i)) for i in range(5)]
    kept, _ = select(papers, chars=5000, min_chars=2000, limit=2)
    assert [p.paper_id for p in kept] == ["0", "1"]


# ---- through the CLI: exit code 2 and one line, before any model is loaded ----

def run_cli(capsys, *args):
    code = main(["uncheatable", "--models", "rwkv4-tiny", "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    return code, err


def test_cli_empty_file(tmp_path, capsys):
    code, err = run_cli(capsys, "--papers-file", str(write(tmp_path / "e.json", "")))
    assert code == 2 and err.startswith("error: ") and "is empty" in err and "\n" not in err


def test_cli_non_utf8_file(tmp_path, capsys):
    bad = tmp_path / "b.json"
    bad.write_bytes(b'["\xff\xfe bad"]')
    code, err = run_cli(capsys, "--papers-file", str(bad))
    assert code == 2 and "not UTF-8" in err and "\n" not in err


def test_cli_short_text(tmp_path, capsys):
    f = write(tmp_path / "s.json", json.dumps([LONG, "too short"]))
    code, err = run_cli(capsys, "--papers-file", str(f), "--out", str(tmp_path / "run"))
    assert code == 2 and "text 1 has 9 characters" in err and "\n" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--papers", "0"], "--papers must be positive"),
    (["--papers", "-3"], "--papers must be positive"),
    (["--chars", "1000"], "--min-chars (2000) is larger than --chars (1000)"),
    (["--stride", "0"], "--stride must be positive"),
    (["--offline"], "apply to fetched sources, not --papers-file"),
])
def test_cli_bad_numbers(tmp_path, capsys, args, message):
    f = write(tmp_path / "ok.json", json.dumps([LONG]))
    code, err = run_cli(capsys, "--papers-file", str(f), *args)
    assert code == 2 and message in err and "\n" not in err


def test_cli_missing_file(tmp_path, capsys):
    code, err = run_cli(capsys, "--papers-file", str(tmp_path / "nope.json"))
    assert code == 2 and "no such papers file" in err
