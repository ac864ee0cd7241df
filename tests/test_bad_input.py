"""The commands as a user types them: every bad input ends with one line on stderr and exit code 2.

Each case runs the installed console script in its own process (what a user sees: the real argv parsing,
the real error mapping of rwkv_bench/cli.py), two at a time, forked from one process that has done the
imports (forked_cli.py); the positive control runs as a plain fresh process beside them. Every case must give
exit code 2, exactly one non-empty stderr line starting with "error: " and naming the problem, no traceback,
and leave the files it was given (among them two existing run directories) byte-identical.
"""
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from rwkv_bench.tokenizer import NEOX_TOKENIZER_FILE as NEOX_TOKENIZER

from forked_cli import CLI, run_forked
TEXT = "RWKV is an RNN with transformer-level performance. It can be trained in parallel like a GPT.\n"
LONG_TEXT = " ".join(["Receptance weighted key value attention runs as an RNN at inference time."] * 40)

# (id, argv after `rwkv-bench`, a substring the one-line message must contain (case-insensitive)).
# Paths are relative to the working directory the fixtures are built in (see `build_inputs`).
CASES = [
    # ---- score: model specs and files ----
    ("score-unknown-spec", ["score", "-m", "no-such-model", "-i", "text.txt"], "unknown model spec"),
    ("score-missing-model-file", ["score", "-m", "./missing.pth", "-i", "text.txt"], "no such file"),
    ("score-random-pth", ["score", "-m", "random.pth", "-i", "text.txt"], "cannot read checkpoint"),
    ("score-pickled-object-pth", ["score", "-m", "object.pth", "-i", "text.txt"], "cannot read checkpoint"),
    ("score-legacy-pth-not-rwkv", ["score", "-m", "legacy_other.pth", "-i", "text.txt"], "not an RWKV-4 checkpoint"),
    ("score-random-safetensors", ["score", "-m", "random.safetensors", "-i", "text.txt"], "cannot read checkpoint"),
    ("score-truncated-safetensors", ["score", "-m", "truncated.safetensors", "-i", "text.txt"],
     "cannot read checkpoint"),
    ("score-random-gguf", ["score", "-m", "random.gguf", "-i", "text.txt"], "random.gguf"),
    ("score-hf-dir-without-config", ["score", "-m", "hf_noconfig", "-i", "text.txt"], "without config.json"),
    # ---- score: the text ----
    ("score-input-is-directory", ["score", "-m", "rwkv4-tiny", "-i", "hf_noconfig"], "is a directory"),
    ("score-empty-input", ["score", "-m", "rwkv4-tiny", "-i", "empty.txt"], "is empty"),
    ("score-non-utf8-input", ["score", "-m", "rwkv4-tiny", "-i", "latin1.txt"], "not UTF-8"),
    # ---- score: flags ----
    ("score-unknown-flag", ["score", "-m", "rwkv4-tiny", "-i", "text.txt", "--bogus"], "no such option"),
    ("score-missing-value", ["score", "-i", "text.txt", "--model"], "requires an argument"),
    ("score-bad-dtype", ["score", "-m", "rwkv4-tiny", "-i", "text.txt", "--dtype", "int8"], "unknown dtype"),
    ("score-cuda-without-gpu", ["score", "-m", "rwkv4-tiny", "-i", "text.txt", "--device", "cuda"],
     "CUDA is not available"),
    ("score-missing-tokenizer", ["score", "-m", "rwkv4-tiny", "-i", "text.txt", "--tokenizer", "missing_tok.json"],
     "missing_tok.json: no such tokenizer file"),
    ("score-missing-tokenizer-no-suffix", ["score", "-m", "rwkv4-tiny", "-i", "text.txt", "--tokenizer",
                                           "tokenizers/neox/missing"], "no such tokenizer file"),
    # ---- scaling ----
    ("scaling-zero-length", ["scaling", "-m", "rwkv4-tiny", "--max-len", "0"], "--max-len must be positive"),
    ("scaling-negative-length", ["scaling", "-m", "rwkv4-tiny", "--min-len", "-5"], "--min-len must be positive"),
    ("scaling-min-above-max", ["scaling", "-m", "rwkv4-tiny", "--min-len", "512", "--max-len", "64"], "--min-len"),
    ("scaling-non-integer", ["scaling", "--max-len", "lots"], "valid integer"),
    ("scaling-cuda-without-gpu", ["scaling", "-m", "rwkv4-tiny", "--device", "cuda"], "CUDA is not available"),
    ("scaling-out-is-file", ["scaling", "-m", "rwkv4-tiny", "--out", "text.txt"], "is a file"),
    ("scaling-out-unwritable", ["scaling", "-m", "rwkv4-tiny", "--out", "text.txt/sub"], "not a writable directory"),
    ("scaling-out-holds-results", ["scaling", "-m", "rwkv4-tiny", "--max-len", "64", "--out", "runs/scaling-old"],
     "already holds results"),
    ("scaling-resume-changes-fixed", ["scaling", "--resume", "--out", "runs/scaling-old", "--seed", "5"],
     "cannot change"),
    ("scaling-resume-corrupt-points", ["scaling", "--resume", "--out", "runs/scaling-corrupt"], "points.csv"),
    # ---- uncheatable ----
    ("uncheatable-papers-file-invalid-json", ["uncheatable", "-m", "rwkv4-tiny", "--papers-file", "invalid.json"],
     "not valid JSON"),
    ("uncheatable-papers-file-object", ["uncheatable", "-m", "rwkv4-tiny", "--papers-file", "object.json"],
     "expected a JSON list"),
    ("uncheatable-papers-file-no-text", ["uncheatable", "-m", "rwkv4-tiny", "--papers-file", "notext.json"],
     "without a string 'text' field"),
    ("uncheatable-papers-zero", ["uncheatable", "-m", "rwkv4-tiny", "--papers-file", "papers.json", "--papers", "0"],
     "--papers must be positive"),
    ("uncheatable-papers-negative", ["uncheatable", "-m", "rwkv4-tiny", "--papers", "-5"],
     "--papers must be positive"),
    ("uncheatable-min-chars-above-chars", ["uncheatable", "-m", "rwkv4-tiny", "--papers-file", "papers.json",
                                           "--chars", "1000", "--min-chars", "2000"], "larger than --chars"),
    ("uncheatable-resume-wrong-kind", ["uncheatable", "--resume", "--out", "runs/scaling-old"], "not a uncheatable"),
    # ---- nlp ----
    ("nlp-unknown-task", ["nlp", "-m", "rwkv4-tiny", "--tasks", "no_such_task_xyz"], "no_such_task_xyz"),
    ("nlp-zero-batch", ["nlp", "-m", "rwkv4-tiny", "--tasks", "rwkv_bench_mc", "--batch-size", "0"],
     "--batch-size must be positive"),
    # ---- kernels ----
    ("kernels-zero-length", ["kernels", "--lengths", "0"], "--lengths needs positive integers"),
    ("kernels-negative-channels", ["kernels", "--channels", "-8"], "--channels must be positive"),
    ("kernels-non-integer-batch", ["kernels", "--batch", "two"], "valid integer"),
    ("kernels-cuda-without-gpu", ["kernels", "--lengths", "64", "--device", "cuda"], "CUDA is not available"),
    # ---- report ----
    ("report-missing-dir", ["report", "runs/no-such-run"], "no such run directory"),
    ("report-no-meta", ["report", "hf_noconfig"], "no meta.json"),
    ("report-corrupt-points", ["report", "runs/scaling-corrupt"], "points.csv"),
    ("report-garbage-points", ["report", "runs/scaling-garbage"], "points.csv"),
]

# the cases that load a checkpoint: no message may suggest turning the pickle safety off
PTH_CASES = {"score-random-pth", "score-pickled-object-pth", "score-legacy-pth-not-rwkv"}
SLOW_FIRST = ("nlp-unknown-task",)  # lm-eval indexes every task it has: start it first so it overlaps the rest


def offline_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BENCH_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", XDG_CACHE_HOME=str(tmp / "cache"),
               MPLCONFIGDIR=str(tmp / "mpl"), PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false")
    return env


def tiny_rwkv_state(vocab: int = 50277) -> dict:
    """A BlinkDL-named state dict of a 1-layer x 32 RWKV-4 (as loaders.save_blinkdl_pth writes it)."""
    from rwkv_bench.models.rwkv4 import RWKV4, RWKVConfig

    torch.manual_seed(0)
    model = RWKV4(RWKVConfig(vocab_size=vocab, n_layer=1, n_embd=32))
    return {k: (v.reshape(1, 1, -1) if "time_mix" in k else v).clone() for k, v in model.state_dict().items()}


def fake_run(path: Path, meta: dict, points: bytes) -> None:
    path.mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (path / "points.csv").write_bytes(points)


def build_inputs(work: Path) -> None:
    """Every file the cases name, under `work` (their working directory)."""
    from safetensors.torch import save_file

    (work / "text.txt").write_text(TEXT)
    (work / "empty.txt").write_text("  \n")
    (work / "latin1.txt").write_bytes("Café au lait, naïve résumé.\n".encode("latin-1"))
    rng = torch.Generator().manual_seed(0)
    noise = bytes(torch.randint(0, 256, (4096,), generator=rng, dtype=torch.uint8).tolist())
    for name in ("random.pth", "random.safetensors", "random.gguf"):
        (work / name).write_bytes(noise)
    (work / "empty.pth").write_bytes(b"")
    # a pickle holding an object that is not a tensor: weights_only=True refuses it, as it must
    import argparse
    torch.save({"args": argparse.Namespace(lr=1.0), "w": torch.zeros(2)}, work / "object.pth")
    torch.save({"weight": torch.zeros(3, 3)}, work / "legacy_other.pth", _use_new_zipfile_serialization=False)
    save_file({"emb.weight": torch.randn(256, 64), "head.weight": torch.randn(256, 64)}, str(work / "full.safetensors"))
    data = (work / "full.safetensors").read_bytes()
    (work / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (work / "full.safetensors").unlink()
    (work / "hf_noconfig").mkdir()
    (work / "hf_noconfig" / "model.safetensors").write_bytes(noise)
    (work / "invalid.json").write_text('[{"text": "unterminated}]')
    (work / "object.json").write_text(json.dumps({"text": LONG_TEXT}))
    (work / "notext.json").write_text(json.dumps([{"body": LONG_TEXT}, {"body": LONG_TEXT + "!"}]))
    (work / "papers.json").write_text(json.dumps([LONG_TEXT, LONG_TEXT + " The end."]))
    points = (b"model,scenario,seq_len,status,prefill_s\n"
              b"rwkv4-tiny,prefill,16,ok,0.01\nrwkv4-tiny,prefill,32,ok,0.02\n")
    options = {"models": "rwkv4-tiny", "scenario": "prefill", "min_len": 16, "max_len": 32, "seed": 0,
               "device": "cpu", "dtype": "float32"}
    fake_run(work / "runs" / "scaling-old", {"kind": "scaling", "options": options, "completed": True}, points)
    fake_run(work / "runs" / "scaling-corrupt", {"kind": "scaling", "options": options},
             b"\x00\xff garbage, \"not\ncsv\n\x89PNG\r\n" + bytes(range(256)))
    fake_run(work / "runs" / "scaling-garbage", {"kind": "scaling", "options": options},
             b'seq_len;;"unterminated\nthis is, not: a points table\n1,2,3,4,5,6,7\n')


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


def start_fresh(args, work: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([CLI, *args], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)


def problems(case_id: str, expected: str, result) -> list[str]:
    code, out, err, _ = result
    lines = [line for line in err.splitlines() if line.strip()]
    found = []
    if code != 2:
        found.append(f"exit code {code}, expected 2")
    if len(lines) != 1:
        found.append(f"{len(lines)} non-empty stderr lines, expected 1")
    if not lines or not lines[0].startswith("error: "):
        found.append("stderr does not start with 'error: '")
    if lines and expected.lower() not in lines[0].lower():
        found.append(f"message lacks {expected!r}")
    if "Traceback" in err or "Traceback" in out:
        found.append("a traceback")
    flat = "".join((err + out).lower().replace("`", "").split())
    if case_id in PTH_CASES and ("weights_only=false" in flat or "weights_onlysettofalse" in flat):
        found.append("suggests weights_only=False")
    return found


def test_case_ids_are_unique_and_cover_every_command():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 30
    assert {case[1][0] for case in CASES} >= {"score", "scaling", "uncheatable", "nlp", "kernels", "report"}


@pytest.mark.slow
def test_bad_input_gives_one_line_and_exit_2(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    build_inputs(work)
    # the positive control: a legacy (pre-zip) BlinkDL .pth of a tiny RWKV-4 loads and scores
    torch.save(tiny_rwkv_state(), work / "legacy.pth", _use_new_zipfile_serialization=False)
    before = snapshot(work)
    env = offline_env(tmp_path)
    legacy_args = ["score", "-m", "legacy.pth", "-i", "text.txt", "--json", "--tokenizer", str(NEOX_TOKENIZER)]
    legacy = start_fresh(legacy_args, work, env)
    ordered = sorted(CASES, key=lambda case: case[0] not in SLOW_FIRST)
    results = dict(zip([case[0] for case in ordered], run_forked([case[1] for case in ordered], work, env)))
    legacy_out, legacy_err = legacy.communicate(timeout=300)
    report = []
    for case_id, args, expected in CASES:
        found = problems(case_id, expected, results[case_id])
        if found:
            code, out, err, seconds = results[case_id]
            report.append(f"{case_id} ({' '.join(args)}): {'; '.join(found)}\n    stderr: {err.strip()[-800:]!r}"
                          f"\n    stdout: {out.strip()[-300:]!r}")
    slowest = sorted(((r[3], cid) for cid, r in results.items()), reverse=True)[:5]
    print("slowest cases:", ", ".join(f"{cid} {s:.1f}s" for s, cid in slowest))
    assert not report, f"{len(report)} of {len(CASES)} cases misbehave:\n" + "\n".join(report)
    after = snapshot(work)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"bad input changed or created files (the run directories under runs/ among them): {changed}"
    assert legacy.returncode == 0, f"a legacy .pth does not load: {legacy_err.strip()[-800:]}"
    scored = json.loads(legacy_out)
    assert scored["tokens"] > 10 and scored["bits_per_byte"] > 0
