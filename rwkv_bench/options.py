"""Options every command shares, parsed below the CLI: dtype, device, lists, sizes; and the config-dataclass
machinery each scenario's options use (defaults and help text in one place, as optimum-benchmark's configs).

A scenario declares `@dataclass class XConfig` with fields made by `option(default, help)`. The Typer layer
builds its flags from those (`typer_option`), meta.json stores `asdict(config)`, and a resume merges the
stored options with the flags given again (`merge_options`), refusing changes to the ones that must not change.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import UserError

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def canonical_dtype(name: str) -> str:
    if str(name).lower() not in DTYPES:
        raise UserError(f"unknown dtype {name!r}: use float32, bfloat16 or float16")
    return DTYPES[str(name).lower()]


def parse_dtype(name: str):
    import torch

    return getattr(torch, canonical_dtype(name))


def parse_device(name: str) -> str:
    import torch

    if not re.fullmatch(r"cpu|cuda(:\d+)?", str(name)):
        raise UserError(f"unknown device {name!r}: use cpu or cuda[:N]")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available on this machine")
    return name


def read_utf8_file(path, what: str = "text file") -> str:
    """A user's input file as text: it must exist, be a file, be UTF-8 (a BOM is dropped) and not be blank."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a {what}")
    if not path.is_file():
        raise UserError(f"no such {'file' if what == 'text file' else what}: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise UserError(f"{path} is empty: nothing to score")
    return text


def split_list(text: str | list[str], flag: str) -> list[str]:
    """'a, b,a' -> ['a', 'b']: comma-separated, stripped, duplicates dropped, at least one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    values = list(dict.fromkeys(s.strip() for s in items if s.strip()))
    if not values:
        raise UserError(f"{flag} needs at least one value")
    return values


def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in split_list(text, flag)]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise UserError(f"{flag} needs positive integers, got {text!r}")
    return values


SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024 ** 2, "MB": 1024 ** 2, "MIB": 1024 ** 2,
              "G": 1024 ** 3, "GB": 1024 ** 3, "GIB": 1024 ** 3, "T": 1024 ** 4, "TB": 1024 ** 4, "TIB": 1024 ** 4}


def parse_size(text: str | int | None, flag: str = "--memory-limit") -> int | None:
    """'512M', '2G', '1500000' -> bytes (binary units)."""
    if text is None or text == "":
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in SIZE_UNITS:
        raise UserError(f"{flag} takes a size like 512M or 2G, got {text!r}")
    value = int(float(m.group(1)) * SIZE_UNITS[m.group(2).upper()])
    if value <= 0:
        raise UserError(f"{flag} must be positive, got {text!r}")
    return value


def parse_number(value, flag: str, kind: type = float):
    """An int or float from a flag's text (a one-line error naming the flag otherwise)."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None


def positive(value, flag: str, *, zero_ok: bool = False):
    """A number that must be > 0 (or >= 0): returned as is, or a one-line error naming the flag."""
    if value is not None and (value < 0 or (value == 0 and not zero_ok)):
        raise UserError(f"{flag} must be {'zero or more' if zero_ok else 'positive'}, got {value:g}")
    return value


# ---- config dataclasses ----

def option(default: Any, help: str, *, fixed: bool = False, flags: tuple[str, ...] = ()):
    """A config field. `fixed`: a resumed run must keep it (its rows would not be comparable otherwise).
    `flags`: the CLI's names for it (default --field-name)."""
    kw = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    return dataclasses.field(metadata={"help": help, "fixed": fixed, "flags": flags}, **kw)


def parsed(default=None):
    """A field computed from the options in __post_init__: not a flag, not stored in meta.json."""
    return dataclasses.field(default=default, init=False, repr=False, compare=False, metadata={"internal": True})


def fixed_options(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("fixed"))


def default_of(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


# the CLI type of a config field, from its annotation's first member ("int | None" -> int)
CLI_TYPES = {"int": int, "str": str, "float": float, "bool": bool, "Path": Path, "list[str]": list[str]}


def cli_parameters(cls) -> list[inspect.Parameter]:
    """One Typer option per config field: default None (so a resume can tell what was given), the config's
    default shown in the help text."""
    import typer

    params = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        default = default_of(f)
        text = f.metadata["help"]
        if default is not None and default != [] and default is not False:
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            text = f"{text.rstrip('.')} (default: {shown})."
        flags = f.metadata.get("flags") or (f"--{f.name.replace('_', '-')}",)
        kind = CLI_TYPES[str(f.type).split(" | ")[0]]
        option = typer.Option(None, *flags, help=text, show_default=False)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[kind]))
    return params


def register_config_command(app, name: str, cls, run: Callable, doc: str, extra: list[inspect.Parameter]) -> None:
    """A Typer command whose options are `cls`'s fields plus `extra` (run control: --out, --resume, ...).
    `run(given, **extra_values)` gets the fields the user set (None: not given)."""
    fields = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")}

    def command(**values):
        given = {k: v for k, v in values.items() if k in fields}
        return run(given, **{k: v for k, v in values.items() if k not in fields})

    command.__signature__ = inspect.Signature(cli_parameters(cls) + extra)
    command.__doc__ = doc
    command.__name__ = name
    app.command(name)(command)


def cli_flag(name: str, annotation, option) -> inspect.Parameter:
    """An extra (non-config) option of a command, for `register_config_command`."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def run_dir_flags(kind: str) -> list[inspect.Parameter]:
    """--out and --resume, the same for every scenario."""
    import typer

    return [cli_flag("out", Optional[Path], typer.Option(None, "--out", "-o", help=(
                f"Run directory (default: results/{kind}/<UTC timestamp>)."))),
            cli_flag("resume", bool, typer.Option(False, "--resume", help=(
                f"Continue a run (--out DIR, else the latest under results/{kind}): what it finished is kept; "
                "its stored options apply unless given again.")))]


@dataclasses.dataclass
class ModelOptions:
    """How every scenario's models run; its config dataclass inherits these fields."""
    device: str = option("cpu", "cpu or cuda[:N].", fixed=True)
    dtype: str = option("float32", "float32, bfloat16 or float16.", fixed=True)
    tokenizer: str | None = option(None, "Tokenizer for models without one of their own (default: GPT-NeoX-20B, "
                                         "shipped).", fixed=True)


def merge_options(cls, given: dict, stored: dict | None = None):
    """The config's defaults, then a resumed run's stored options, then the flags given now (None: not given).
    A fixed option given with another value than the stored one is refused."""
    given = {k: v for k, v in given.items() if v is not None}
    values = {}
    if stored:
        names = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        values.update({k: v for k, v in stored.items() if k in names})
        for key in fixed_options(cls):
            if key in given and key in stored and normalise(key, given[key]) != normalise(key, stored[key]):
                raise UserError(f"--resume: this run used --{key.replace('_', '-')} {stored[key]}; it cannot change "
                                f"to {given[key]} (start a new run instead)")
    values.update(given)
    return cls(**values)


def normalise(key: str, value):
    if key == "dtype":
        return canonical_dtype(value)
    if key == "models" and isinstance(value, str):
        return split_list(value, "--models")
    return value


def as_dict(config) -> dict:
    """A config as JSON-ready options for meta.json (paths as strings; internal fields left out)."""
    return {f.name: jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)
            if not f.metadata.get("internal")}


def jsonable(value):
    return str(value) if hasattr(value, "__fspath__") else value
