"""The filter catalogue: the shipped filters (package data), the user's folders, TOML files in and out."""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import tempfile
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from archlab.filters.design import Filter

USER_ENV = "ARCHLAB_FILTERS"


def catalogue_dir():
    """The folder holding the shipped catalogue TOMLs (package data ``archlab.data.filters``)."""
    try:
        return resources.files("archlab.data.filters")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "filters"


def user_dirs() -> list[Path]:
    """The user's catalogue folders, searched by name beside the shipped one: every folder in
    ``$ARCHLAB_FILTERS`` (separated by ``os.pathsep``), then ``$XDG_CONFIG_HOME/archlab/filters``
    (``~/.config/archlab/filters`` when ``XDG_CONFIG_HOME`` is unset). Folders need not exist."""
    folders = [Path(part).expanduser() for part in os.environ.get(USER_ENV, "").split(os.pathsep) if part]
    config = os.environ.get("XDG_CONFIG_HOME") or Path("~/.config").expanduser()
    folders.append(Path(config) / "archlab" / "filters")
    return list(dict.fromkeys(folders))


def _entries() -> dict[str, list]:
    """``name -> [(origin, file), ...]``: every ``*.toml`` of the shipped catalogue (origin ``"shipped"``)
    and of the user's folders (origin: the file's path)."""
    found: dict[str, list] = {}
    folders = [("shipped", catalogue_dir()), *((None, d) for d in user_dirs() if d.is_dir())]
    for origin, folder in folders:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".toml") and entry.is_file():
                found.setdefault(entry.name[:-5], []).append((origin or str(entry), entry))
    return found


def load(path) -> Filter:
    """Read a filter specification TOML (``kind``, ``factor``, parameters; ``name``
    defaults to the file's stem) and design it (:meth:`Filter.from_dict`)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from exc
    data.setdefault("name", path.stem)
    try:
        return Filter.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def names() -> list[str]:
    """Sorted names of the catalogue filters: the shipped ones and those in the user's folders (:func:`user_dirs`)."""
    return sorted(_entries())


def source(name: str) -> str:
    """Where the catalogue filter ``name`` comes from: ``"shipped"`` or the path of the user's file."""
    return _entry(name)[0]


def _entry(name: str):
    found = _entries().get(name)
    if not found:
        folders = ", ".join(str(d) for d in user_dirs())
        raise ValueError(f"filter: unknown name {name!r}; catalogue: {', '.join(names())} (user folders: {folders}; "
                         f"or a path to a .toml)")
    if len(found) > 1:
        raise ValueError(f"filter: {name!r} is defined twice ({', '.join(str(e) for _, e in found)}); "
                         "rename one file")
    return found[0]


def get(source) -> Filter:
    """A filter by catalogue name, from a TOML path, from a specification (the catalogue's own format:
    ``{"kind": "gaussian", "sigma": 0.7, ...}``, :meth:`Filter.from_dict`), or a :class:`Filter` unchanged.

    A string ending in ``.toml`` or containing a path separator is read as a file;
    anything else is looked up in the catalogue (:func:`names`: the shipped filters and
    the user's folders, :func:`user_dirs`). A name defined in two places is an error.

    Examples
    --------
    >>> get("bilinear").taps.tolist()
    [0.25, 0.75, 0.75, 0.25]
    >>> get({"kind": "gaussian", "sigma": 0.7}).name
    'gaussian-sigma0.7'
    """
    if isinstance(source, Filter):
        return source
    if isinstance(source, Mapping):
        return Filter.from_dict(source)
    if not isinstance(source, (str, Path)) and not hasattr(source, "__fspath__"):
        raise ValueError(f"filter: {source!r} is not a name, a TOML path or a Filter")
    text = str(Path(source)) if not isinstance(source, str) else source
    if not isinstance(source, str) or text.endswith(".toml") or "/" in text or "\\" in text:
        return load(source)
    with resources.as_file(_entry(text)[1]) as path:
        return load(path)


def catalog() -> dict[str, Filter]:
    """Every catalogue filter (shipped and the user's), as a dict ``name -> Filter`` in sorted name order."""
    return {name: get(name) for name in names()}


def to_toml(spec: Mapping[str, Any]) -> str:
    """A filter specification (:meth:`Filter.from_dict`'s keys; strings, numbers, booleans and
    lists of numbers) as TOML text, one ``key = value`` per line."""
    def value(item) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, numbers.Integral):
            return str(int(item))
        if isinstance(item, numbers.Real):
            if not math.isfinite(item):
                raise ValueError(f"filter specification: {item!r} is not a finite number")
            return repr(float(item))
        if isinstance(item, str):
            return '"' + item.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(item, (list, tuple, np.ndarray)):
            return "[" + ", ".join(value(v) for v in item) + "]"
        raise ValueError(f"filter specification: cannot write {item!r} as TOML")

    return "".join(f"{key} = {value(item)}\n" for key, item in spec.items() if item is not None)


def save(spec: Mapping[str, Any], path) -> Filter:
    """Check a filter specification (by designing it), then write it to ``path`` as TOML, atomically
    (a temporary file in the same folder, then a rename). Returns the designed filter."""
    flt = Filter.from_dict(spec)
    text = to_toml(spec)
    if Filter.from_dict(tomllib.loads(text)) != flt:
        raise ValueError("filter specification: does not survive the TOML round trip")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return flt
