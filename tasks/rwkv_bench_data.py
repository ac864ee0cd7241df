"""Loader for this folder's task YAMLs: `data_files` are read relative to this folder.

lm-eval 0.4 hands `dataset_kwargs` to `datasets.load_dataset` unchanged, and `datasets` resolves a relative
`data_files` path against the current working directory, not against the YAML. The YAMLs here therefore
keep `dataset_path: json` and `data_files` (relative to this folder) and name this function as their
`custom_dataset`, which lm-eval calls with the YAML's `dataset_kwargs` (plus task metadata, ignored).
This works offline and from any working directory.
"""
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _resolve(files):
    if isinstance(files, str):
        path = Path(files).expanduser()
        return str(path if path.is_absolute() else HERE / path)
    if isinstance(files, (list, tuple)):
        return [_resolve(f) for f in files]
    if isinstance(files, dict):
        return {split: _resolve(f) for split, f in files.items()}
    raise TypeError(f"data_files must be a path, a list or a dict of splits, not {type(files).__name__}")


def load_json(data_files=None, **_metadata):
    """`datasets.load_dataset("json", data_files=...)` with paths relative to this folder."""
    import datasets

    if data_files is None:
        raise ValueError("the task YAML must set dataset_kwargs.data_files")
    return datasets.load_dataset("json", data_files=_resolve(data_files))
