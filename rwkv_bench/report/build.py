"""Rebuild a run's outputs with its kind's renderer (an explicit table), then write its index.md."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..fileio import write_atomically

INDEX = "index.md"
TABLE_EXTS = (".md",)
FIGURE_EXTS = (".png",)
DATA_EXTS = (".csv", ".json", ".jsonl")


REFERENCE = "reference"  # results/reference/: committed runs the README shows, rebuilt only when named


# Each kind's renderer, imported when called (they pull in pandas and matplotlib, which the CLI's start-up
# does without). One line per kind, the way lm-evaluation-harness registers its models.
def render_scaling(run_dir: Path) -> list[Path]:
    from ..scaling.report import render

    return render(run_dir)


def render_uncheatable(run_dir: Path) -> list[Path]:
    from ..uncheatable.report import render

    return render(run_dir)


def render_nlp(run_dir: Path) -> list[Path]:
    from ..nlp.report import render

    return render(run_dir)


RENDERERS = {"scaling": render_scaling, "uncheatable": render_uncheatable, "nlp": render_nlp}


def find_run_dirs(root: Path = Path("results")) -> list[Path]:
    """Every directory under `root` holding a meta.json with a kind (results/<kind>/<run>/ and deeper),
    except the committed reference runs under root/reference."""
    if not root.is_dir():
        return []
    runs = []
    for meta in sorted(root.rglob("meta.json")):
        if meta.relative_to(root).parts[0] == REFERENCE:
            continue
        if read_meta_safe(meta.parent).get("kind"):
            runs.append(meta.parent)
    return runs


def read_meta(run_dir: Path) -> dict:
    # imported here: rwkv_bench.recording imports pandas, and every command's start-up imports this module
    from ..recording import read_meta as read

    return read(run_dir)


def read_meta_safe(run_dir: Path) -> dict:
    try:
        return read_meta(run_dir)
    except (OSError, ValueError):
        return {}


def render_run(run_dir: Path) -> list[Path]:
    """Rebuild one run's outputs with its kind's renderer, then its index.md. Returns the files written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no such run directory: {run_dir}")
    if not (run_dir / "meta.json").is_file():
        raise UserError(f"{run_dir} has no meta.json: not a run directory")
    try:
        meta = read_meta(run_dir)
    except ValueError as exc:
        raise UserError(f"{run_dir / 'meta.json'} is not valid JSON: {exc}") from None
    kind = meta.get("kind")
    render = RENDERERS.get(kind) if isinstance(kind, str) else None
    if render is None:
        raise UserError(f"{run_dir}: no report for kind {kind!r} in this version "
                        f"(known kinds: {', '.join(sorted(RENDERERS))})")
    written = [Path(p) for p in (render(run_dir) or [])]
    return written + [write_index(run_dir, meta, written)]


def write_index(run_dir: Path, meta: dict, written: list[Path] | None = None) -> Path:
    """index.md: what the run is, then links to its tables, figures and data files."""
    run_dir = Path(run_dir)
    files = sorted(p for p in run_dir.iterdir() if p.is_file() and p.name != INDEX and not p.name.endswith(".tmp"))
    tables = [p for p in files if p.suffix in TABLE_EXTS]
    figures = [p for p in files if p.suffix in FIGURE_EXTS]
    data = [p for p in files if p.suffix in DATA_EXTS]
    versions = meta.get("versions") or {}
    lines = [f"# {meta.get('kind', 'run')}: {run_dir.name}", "",
             f"- kind: {meta.get('kind')}",
             f"- date (UTC): {meta.get('date_utc')}",
             f"- device: {meta.get('device')} ({meta.get('gpu') or meta.get('cpu')}), dtype {meta.get('dtype')}, "
             f"torch threads {meta.get('torch_threads')}",
             f"- command: `{meta.get('command')}`",
             f"- git: {meta.get('git_revision')}; torch {versions.get('torch')}, "
             f"transformers {versions.get('transformers')}", ""]
    if tables:
        lines += ["## Tables", ""] + [f"- [{p.name}]({p.name})" for p in tables] + [""]
    if figures:
        lines += ["## Figures", ""]
        for p in figures:
            svg = p.with_suffix(".svg")
            alt = f" ([svg]({svg.name}))" if svg.is_file() else ""
            lines += [f"### {p.stem}{alt}", "", f"![{p.stem}]({p.name})", ""]
    if data:
        lines += ["## Data", ""] + [f"- [{p.name}]({p.name})" for p in data] + [""]
    path = run_dir / INDEX
    write_atomically(path, "\n".join(lines))
    return path
