"""The shipped study files (package data), listed without importing Optuna or torch."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def study_dir():
    """The shipped study files (package data ``archlab.data.studies``; the repository's ``studies/``)."""
    try:
        return resources.files("archlab.data.studies")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "studies"


def shipped() -> dict[str, str]:
    """``name -> first comment line`` of every shipped study (the line states its expected runtime)."""
    out = {}
    for entry in sorted(study_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            first = entry.read_text(encoding="utf-8").splitlines()[:1]
            out[entry.name[:-5]] = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
    return out


def study_file(source: str | os.PathLike) -> Path | None:
    """``source`` as a study file path (it must exist), or None when it names a shipped study."""
    path = Path(source)
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise ValueError(f"study: file {path} not found")
        return path
    return None


def study_text(source: str | os.PathLike) -> tuple[str, str]:
    """The TOML text of a study file or shipped study, and the folder its relative paths start from
    (empty for a shipped study); an unknown name is an error listing the shipped ones."""
    path = study_file(source)
    if path is not None:
        return path.read_text(encoding="utf-8"), str(path.resolve().parent)
    entry = study_dir() / f"{source}.toml"
    if not entry.is_file():
        raise ValueError(f"study: unknown study {str(source)!r}; shipped: {', '.join(shipped())} (or a path to a .toml)")
    return entry.read_text(encoding="utf-8"), ""
