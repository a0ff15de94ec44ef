"""Study files: TOML → validated :class:`StudySpec` (tasks, images, search space, objectives, sampler).

A study file names its tasks (``[[tasks]]``, :func:`archlab.tasks.make_task` parameters), its
images (``[[images]]``: built-ins, files or dataset folders, resized/cropped), a base
architecture (``[arch]``, optionally from a preset) and fit settings (``[fit]``), the search
space (``[space]``: ArchSpec fields, fit settings and the Gaussian upsampler's ``sigma``, as
lists of choices or ``{low, high, log, step}`` ranges), ``seeds``, the objectives with their
directions (``[objectives]``; several make a Pareto study), the Optuna sampler and pruner, and points of the
space a sampled study tries first (``[[enqueue]]``, e.g. the configuration to beat).
:meth:`StudySpec.from_dict` rejects a malformed file before any trial runs, naming the key
and the allowed values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import inspect
import math
import os
import re
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna

from archlab import checks, filters, images
from archlab.checks import fail
from archlab.fitting import FitSettings
from archlab.models import ArchSpec, load_spec
from archlab.tasks import Task, make_task
from archlab.studies.files import study_file, study_text

#: Objectives a study may optimise, with the direction in which each is better (``seconds``: a fit's wall time;
#: ``cpu_seconds``: its CPU time, which fits timed at different loads compare by).
OBJECTIVES = {"peak_psnr": "maximize", "final_psnr": "maximize", "psnr_drop": "minimize",
              "peak_iteration": "minimize", "stop_iteration": "minimize", "stop_psnr": "maximize",
              "seconds": "minimize", "cpu_seconds": "minimize"}
#: Per-fit results recorded besides the objectives (``final_fbc_high``: highest FBC band at the end).
EXTRA_METRICS = {"final_fbc_high": "minimize"}
SAMPLERS = {"grid": optuna.samplers.GridSampler, "random": optuna.samplers.RandomSampler,
            "tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
            "cmaes": optuna.samplers.CmaEsSampler}
PRUNERS = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
           "percentile": optuna.pruners.PercentilePruner,
           "successive_halving": optuna.pruners.SuccessiveHalvingPruner, "hyperband": optuna.pruners.HyperbandPruner}
ARCH_FIELDS = tuple(f.name for f in dataclasses.fields(ArchSpec))
FIT_FIELDS = tuple(f.name for f in dataclasses.fields(FitSettings) if f.name != "seed")
#: Searchable parameters: ArchSpec fields, fit settings, and ``sigma`` (Gaussian upsampler, paper 000 eq. 6).
SPACE_NAMES = ARCH_FIELDS + FIT_FIELDS + ("sigma",)
TOP_KEYS = ("name", "description", "seeds", "degradation_seed", "batch_seeds", "n_trials", "curve_points", "metrics", "arch",
            "fit", "tasks", "images", "space", "objectives", "sampler", "pruner", "enqueue")
IMAGE_KEYS = ("source", "label", "size", "scale", "crop", "grey", "skip", "limit")
RANGE_KEYS = ("low", "high", "log", "step")
#: Study fits record where the ratio rule would stop (an objective) without stopping.
STUDY_FIT_DEFAULTS = {"stop": "record"}


def _pair(where: str, value) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = [value, value] if isinstance(value, int) else value
    if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(v, int) and v >= 2 for v in pair):
        fail(where, f"{value!r} is invalid; allowed: an integer ≥ 2 or [height, width]")
    return tuple(pair)


@dataclass(frozen=True)
class Param:
    """One search dimension: ``choices`` (categorical) or a ``low``..``high`` range (``log``, ``step``).

    A range is an integer one (``Trial.suggest_int``) when ``low``, ``high`` and ``step`` are
    integers, else a float one (``Trial.suggest_float``).
    """

    name: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @classmethod
    def parse(cls, name: str, value) -> "Param":
        """From a TOML value: a list of choices or a table with keys ``low, high, log, step``."""
        where = f"space.{name}"
        if name not in SPACE_NAMES:
            fail("space", f"unknown parameter {name!r}; allowed: {', '.join(SPACE_NAMES)}")
        if isinstance(value, list):
            if not value or not all(isinstance(v, (str, int, float, bool)) for v in value):
                fail(where, f"{value!r} is invalid; allowed: a non-empty list of strings/numbers/booleans")
            return cls(name, tuple(value))
        if not isinstance(value, dict):
            fail(where, f"{value!r} is invalid; allowed: a list of choices or a table with {', '.join(RANGE_KEYS)}")
        unknown = sorted(set(value) - set(RANGE_KEYS))
        if unknown:
            fail(where, f"unknown key {unknown[0]!r}; allowed: {', '.join(RANGE_KEYS)}")
        low, high, log, step = (value.get(k) for k in RANGE_KEYS)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
        if not numbers or not low < high:
            fail(where, f"low={low!r}, high={high!r} are invalid; allowed: numbers with low < high")
        if not isinstance(log or False, bool):
            fail(f"{where}.log", f"{log!r} is invalid; allowed: true, false")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0 or log):
            fail(f"{where}.step", f"{step!r} is invalid; allowed: a number > 0, and no step with log = true")
        if log and low <= 0:
            fail(f"{where}.low", f"{low!r} is invalid; allowed: a number > 0 with log = true")
        return cls(name, (), low, high, bool(log), step)

    @property
    def is_int(self) -> bool:
        return not self.choices and all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    def suggest(self, trial: optuna.Trial):
        """The trial's value for this dimension."""
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.is_int:
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list | None:
        """The grid values (choices, or a stepped range), None for a continuous range."""
        if self.choices:
            return list(self.choices)
        if self.is_int:
            return list(range(self.low, self.high + 1, self.step or 1))
        if self.step:
            return [float(v) for v in np.round(np.arange(self.low, self.high + self.step / 2, self.step), 12)]
        return None

    def contains(self, value) -> bool:
        """Whether ``value`` is a point of this dimension (a choice, or a number in [low, high] on its step)."""
        if self.choices:
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return False
        if self.is_int and not isinstance(value, int):
            return False
        return self.step is None or math.isclose((value - self.low) / self.step, round((value - self.low) / self.step))

    def to_value(self):
        """The TOML value :meth:`parse` reads back."""
        if self.choices:
            return list(self.choices)
        value = {"low": self.low, "high": self.high, "log": self.log, "step": self.step}
        return {k: v for k, v in value.items() if v is not None and v is not False}


@dataclass(frozen=True)
class ImageSpec:
    """An image (built-in name, file, or dataset folder) with its resize (``size``/``scale``) and centre ``crop``;
    of a folder, the ``limit`` files after the first ``skip`` (in name order), luma only if ``grey``."""

    source: str
    label: str = ""
    size: tuple[int, int] | None = None
    scale: float | None = None
    crop: tuple[int, int] | None = None
    grey: bool = False
    skip: int | None = None
    limit: int | None = None

    @classmethod
    def parse(cls, i: int, value) -> "ImageSpec":
        where = f"images[{i}]"
        if isinstance(value, str):
            value = {"source": value}
        if not isinstance(value, dict) or not isinstance(value.get("source"), str):
            fail(where, f"{value!r} is invalid; allowed: a source string or a table with {', '.join(IMAGE_KEYS)}")
        unknown = sorted(set(value) - set(IMAGE_KEYS))
        if unknown:
            fail(where, f"unknown key {unknown[0]!r}; allowed: {', '.join(IMAGE_KEYS)}")
        scale, grey = value.get("scale"), value.get("grey", False)
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0):
            fail(f"{where}.scale", f"{scale!r} is invalid; allowed: a number > 0")
        if not isinstance(grey, bool):
            fail(f"{where}.grey", f"{grey!r} is invalid; allowed: true, false")
        if value.get("size") is not None and scale is not None:
            fail(where, "give size or scale, not both")
        limit = value.get("limit")
        limit = None if limit is None else checks.integer(f"{where}.limit", limit, 1)
        skip = value.get("skip")
        skip = None if skip is None else checks.integer(f"{where}.skip", skip, 0)
        return cls(value["source"], str(value.get("label", "")), _pair(f"{where}.size", value.get("size")), scale,
                   _pair(f"{where}.crop", value.get("crop")), grey, skip, limit)

    def resolve(self, base_dir: str = "") -> list[tuple[str, str]]:
        """``(label, source)`` per image: a built-in, a file, or a folder's files (``limit`` of them after the
        first ``skip``).

        Relative paths are looked up from the current folder, the study file's folder and
        :func:`archlab.images.datasets_root`.
        """
        if self.source in images.builtin_names():
            return [(self.label or self.source, self.source)]
        candidates = [Path(self.source), Path(base_dir or ".") / self.source]
        with contextlib.suppress(ValueError):
            candidates.append(images.datasets_root() / self.source)
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            fail("images.source", f"{self.source!r} is not a built-in ({', '.join(images.builtin_names())}), "
                                   "a file, or a folder here, beside the study or under the datasets")
        if path.is_file():
            return [(self.label or path.stem, str(path))]
        listed = images.list_images(path)
        if not listed:
            fail("images.source", f"folder {path} holds no images")
        start = self.skip or 0
        found = listed[start: start + self.limit if self.limit is not None else None]
        if not found:
            fail("images.skip", f"{start} is invalid; allowed: 0 to {len(listed) - 1} (folder {path} holds "
                                f"{len(listed)} images)")
        return [(f"{self.label}{p.stem}" if self.label else p.stem, str(p)) for p in found]

    def to_value(self) -> dict:
        value = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        return {k: v for k, v in value.items() if v is not None and v is not False and v != ""}


@dataclass(frozen=True)
class StudySpec:
    """A validated study file (see ``studies/*.toml``); :meth:`from_dict` rejects bad input before any trial.

    ``tasks`` holds ``(label, Task)``, ``arch`` the base :class:`ArchSpec` that ``space``
    values override, ``fit`` the fixed :class:`FitSettings` fields. Round-trips through
    :meth:`to_dict` (the TOML's shape).
    """

    name: str
    tasks: tuple[tuple[str, Task], ...]
    images: tuple[ImageSpec, ...]
    space: tuple[Param, ...]
    objectives: tuple[tuple[str, str], ...]
    arch: ArchSpec = ArchSpec()
    fit: tuple[tuple[str, object], ...] = ()
    seeds: tuple[int, ...] = (0,)
    degradation_seed: int = 0
    batch_seeds: bool = False
    sampler: tuple[tuple[str, object], ...] = (("kind", "grid"),)
    pruner: tuple[tuple[str, object], ...] = (("kind", "none"),)
    n_trials: int | None = None
    description: str = ""
    curve_points: int = 50
    metrics: tuple[str, ...] = ()
    enqueue: tuple[tuple[tuple[str, object], ...], ...] = ()
    base_dir: str = field(default="", compare=False)

    @classmethod
    def from_dict(cls, data: dict, base_dir: str = "") -> "StudySpec":
        """Validate a study dict (parsed TOML); every error names its key and the allowed values."""
        unknown = sorted(set(data) - set(TOP_KEYS))
        if unknown:
            fail("study", f"unknown key {unknown[0]!r}; allowed: {', '.join(TOP_KEYS)}")
        name = data.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            fail("name", f"{name!r} is invalid; allowed: letters, digits, '.', '_', '-'")
        for key in ("tasks", "images", "space", "objectives"):
            if not data.get(key):
                fail(key, "missing or empty; every study needs tasks, images, space and objectives")
        for key in ("arch", "fit", "space", "objectives", "sampler", "pruner"):
            if not isinstance(data.get(key, {}), dict):
                fail(key, f"{data[key]!r} is invalid; allowed: a table [{key}]")
        for key in ("tasks", "images"):
            if not isinstance(data[key], list):
                fail(key, f"{data[key]!r} is invalid; allowed: an array of tables [[{key}]]")
        tasks = []
        for i, entry in enumerate(data["tasks"]):
            if not isinstance(entry, dict) or "task" not in entry:
                fail(f"tasks[{i}]", f"{entry!r} is invalid; allowed: a table with task = <name> and its parameters")
            params = dict(entry)
            for key, value in params.items():
                if isinstance(value, float) and not math.isfinite(value):
                    fail(f"tasks[{i}].{key}", f"{value} is invalid; allowed: a finite number")
            label = str(params.pop("label", params["task"]))
            tasks.append((label, make_task(params.pop("task"), **params)))
        if len({label for label, _ in tasks}) < len(tasks):
            fail("tasks", "two tasks share a label; give each a distinct label = ...")
        space = tuple(Param.parse(k, v) for k, v in data["space"].items())
        objectives = data["objectives"]
        for key, direction in objectives.items():
            if key not in OBJECTIVES:
                fail("objectives", f"unknown objective {key!r}; allowed: {', '.join(OBJECTIVES)}")
            if direction not in ("maximize", "minimize"):
                fail(f"objectives.{key}", f"{direction!r} is invalid; allowed: maximize, minimize")
        arch = dict(data.get("arch", {}))
        base = load_spec(arch.pop("preset")) if "preset" in arch else ArchSpec()
        arch = ArchSpec.from_dict({**base.to_dict(), **arch})
        fit_settings = {**STUDY_FIT_DEFAULTS, **data.get("fit", {})}
        unknown = sorted(set(fit_settings) - set(FIT_FIELDS))
        if unknown:
            fail("fit", f"unknown key {unknown[0]!r}; allowed: {', '.join(FIT_FIELDS)} (seeds go in 'seeds')")
        FitSettings(**fit_settings)
        seeds = data.get("seeds", [0])
        if not isinstance(seeds, list) or not seeds:
            fail("seeds", f"{seeds!r} is invalid; allowed: a non-empty list of integers ≥ 0")
        sampler, pruner = dict(data.get("sampler", {"kind": "grid"})), dict(data.get("pruner", {"kind": "none"}))
        n_trials = data.get("n_trials")
        metrics = data.get("metrics", [])
        if not isinstance(metrics, list) or any(m not in OBJECTIVES and m not in EXTRA_METRICS for m in metrics):
            fail("metrics", f"{metrics!r} is invalid; allowed: a list of {', '.join([*OBJECTIVES, *EXTRA_METRICS])}")
        enqueue = data.get("enqueue", [])
        if not isinstance(enqueue, list) or not all(isinstance(point, dict) and point for point in enqueue):
            fail("enqueue", f"{enqueue!r} is invalid; allowed: an array of tables [[enqueue]] of space values")
        dims = {p.name: p for p in space}
        for i, point in enumerate(enqueue):
            for key, value in point.items():
                if key not in dims:
                    fail(f"enqueue[{i}]", f"unknown parameter {key!r}; allowed: the space's {', '.join(dims)}")
                if not dims[key].contains(value):
                    fail(f"enqueue[{i}].{key}", f"{value!r} is outside the space; allowed: {dims[key].to_value()}")
        spec = cls(name=name, tasks=tuple(tasks),
                   images=tuple(ImageSpec.parse(i, v) for i, v in enumerate(data["images"])), space=space,
                   objectives=tuple(objectives.items()), arch=arch, fit=tuple(fit_settings.items()),
                   seeds=tuple(checks.integer("seeds", s, 0) for s in seeds),
                   degradation_seed=checks.integer("degradation_seed", data.get("degradation_seed", 0), 0),
                   batch_seeds=checks.flag("batch_seeds", data.get("batch_seeds", False)),
                   sampler=tuple(sampler.items()), pruner=tuple(pruner.items()),
                   n_trials=None if n_trials is None else checks.integer("n_trials", n_trials, 1),
                   description=str(data.get("description", "")),
                   curve_points=checks.integer("curve_points", data.get("curve_points", 50), 2), metrics=tuple(metrics),
                   enqueue=tuple(tuple(point.items()) for point in enqueue), base_dir=str(base_dir))
        spec._check()
        return spec

    def _check(self) -> None:
        """Cross-field checks: every space value against the arch/fit, sampler, pruner, images, seeds."""
        archs = [("arch.upsampler", self.arch)]
        for param in self.space:
            archs += [(f"space.{param.name}", self.configure({param.name: value})[0])
                      for value in param.grid() or [param.low, param.high]]
        for where, arch in archs:
            for name in {arch.upsampler} if isinstance(arch.upsampler, str) else set(arch.upsampler):
                try:
                    if name not in ("transposed", "none"):
                        filters.get(name)
                except ValueError as exc:
                    fail(where, str(exc))
        kind = dict(self.sampler).get("kind")
        if kind not in SAMPLERS:
            fail("sampler.kind", f"{kind!r} is invalid; allowed: {', '.join(SAMPLERS)}")
        if kind == "grid":
            coarse = [p.name for p in self.space if p.grid() is None]
            if coarse:
                fail(f"space.{coarse[0]}", "the grid sampler needs choices or a step for every parameter")
            if self.n_trials is not None:
                fail("n_trials", f"not used by the grid sampler (the grid has {self.grid_size} points); remove it")
            if self.enqueue:
                fail("enqueue", "the grid sampler tries every point already; remove [[enqueue]]")
        elif self.n_trials is None:
            fail("n_trials", f"the {kind} sampler needs n_trials = <integer ≥ 1> (the study's trial budget)")
        if kind == "cmaes" and importlib.util.find_spec("cmaes") is None:
            fail("sampler.kind", "cmaes needs the 'cmaes' package (pip install cmaes); allowed without it: "
                                  "grid, random, tpe, nsga2")
        self.make_sampler()
        pruner = dict(self.pruner).get("kind")
        if pruner not in PRUNERS:
            fail("pruner.kind", f"{pruner!r} is invalid; allowed: {', '.join(PRUNERS)}")
        if pruner != "none" and len(self.objectives) > 1:
            fail("pruner.kind", "pruning needs a single objective; allowed with several objectives: none")
        self.make_pruner()
        labels = [label for image in self.images for label, _ in image.resolve(self.base_dir)]
        if len(set(labels)) < len(labels):
            fail("images", f"two images share the label in {labels}; give each a distinct label = ...")

    def _options(self, which: str) -> tuple[type, dict]:
        options = dict(getattr(self, which))
        return (SAMPLERS if which == "sampler" else PRUNERS)[options.pop("kind")], options

    def make_sampler(self, worker: int = 0) -> optuna.samplers.BaseSampler:
        """The Optuna sampler of ``[sampler]`` (``kind`` plus its constructor's keywords) for the
        ``worker``-th process that opens the study (0 for the first).

        A seeded sampler draws the same parameters in every process that starts from that seed (the random
        start-up trials first): the first worker keeps the file's ``seed``, so a study run by one process from
        scratch is reproducible, and worker *k* > 0 (another process, or a resumed one) draws from
        ``numpy.random.SeedSequence([seed, k])`` so it does not repeat their trials. The grid sampler is
        left as the file says: workers claim distinct grid points whatever its seed.
        """
        cls, options = self._options("sampler")
        if cls is optuna.samplers.GridSampler:
            options["search_space"] = self.grid_space()
        elif worker and options.get("seed") is not None:
            options["seed"] = int(np.random.SeedSequence([options["seed"], worker]).generate_state(1)[0])
        return _construct("sampler", cls, options)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        """The Optuna pruner of ``[pruner]`` (``kind`` plus its constructor's keywords)."""
        cls, options = self._options("pruner")
        return _construct("pruner", cls, options)

    def grid_space(self) -> dict[str, list]:
        return {p.name: p.grid() for p in self.space}

    @property
    def grid_size(self) -> int | None:
        """Points of the search space's grid; None when a parameter is a continuous range."""
        grids = self.grid_space().values()
        return None if any(g is None for g in grids) else math.prod(len(g) for g in grids)

    @property
    def is_grid(self) -> bool:
        return dict(self.sampler)["kind"] == "grid"

    def configure(self, params: dict) -> tuple[ArchSpec, dict]:
        """The trial's :class:`ArchSpec` and fit keywords: the base ones with ``params`` applied.

        ``sigma`` becomes a Gaussian upsampler (paper 000 eq. 6, 5 taps): the catalogue filter
        with the same taps when there is one, else the filter's specification, which the spec holds.
        """
        arch, settings = self.arch.to_dict(), dict(self.fit)
        for name, value in params.items():
            if name == "sigma":
                arch["upsampler"] = _gaussian(value, arch["factor"])
            elif name in ARCH_FIELDS:
                arch[name] = None if name == "lipschitz" and value == "none" else value
            else:
                settings[name] = value
        try:
            spec = ArchSpec.from_dict(arch)
            FitSettings(**settings)
        except ValueError as exc:
            fail(f"space {params}", str(exc))
        return spec, settings

    def to_dict(self) -> dict:
        """The study as a TOML-shaped dict (inverse of :meth:`from_dict`)."""
        return {"name": self.name, "description": self.description,
                "tasks": [{"label": label, **task.to_dict()} for label, task in self.tasks],
                "images": [image.to_value() for image in self.images],
                "space": {p.name: p.to_value() for p in self.space}, "objectives": dict(self.objectives),
                "arch": self.arch.to_dict(), "fit": dict(self.fit), "seeds": list(self.seeds),
                "degradation_seed": self.degradation_seed, "batch_seeds": self.batch_seeds, "sampler": dict(self.sampler), "pruner": dict(self.pruner),
                **({"n_trials": self.n_trials} if self.n_trials is not None else {}),
                "curve_points": self.curve_points, "metrics": list(self.metrics),
                **({"enqueue": [dict(point) for point in self.enqueue]} if self.enqueue else {})}


def _construct(what: str, cls: type, options: dict):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**options)
    except (TypeError, ValueError) as exc:
        allowed = [p for p in inspect.signature(cls).parameters if p != "search_space"]
        fail(what, f"{exc}; allowed keys for {cls.__name__}: kind, {', '.join(allowed)}")


def _gaussian(sigma: float, factor: int) -> str | dict:
    """The Gaussian upsampler of ``sigma`` (σ ≥ 0 in input pixels): a catalogue name where a filter has its
    taps, else its specification ``{"kind": "gaussian", "sigma": σ}``."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or sigma < 0:
        fail("space.sigma", f"{sigma!r} is invalid; allowed: a number ≥ 0")
    wanted = filters.design("gaussian", factor, sigma=float(sigma))
    for name, flt in filters.catalog().items():
        if flt.factor == factor and len(flt.taps) == len(wanted.taps) and np.allclose(flt.taps, wanted.taps):
            return name
    return {"kind": "gaussian", "sigma": float(sigma)}


def load_study(source: str | os.PathLike) -> StudySpec:
    """A :class:`StudySpec` from a study TOML path or a shipped study's name (:func:`shipped`)."""
    text, base = study_text(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        fail("study", f"cannot parse {source}: {exc}")
    return StudySpec.from_dict(data, base_dir=base)


def default_storage(source: str | os.PathLike) -> str:
    """SQLite beside a study file (``<file>.db``), or ``./<name>.db`` for a shipped study or a bare name."""
    path = Path(source)
    is_file = path.suffix == ".toml" or path.is_file()
    db = path.resolve().with_suffix(".db") if is_file else Path.cwd() / f"{path.name}.db"
    return f"sqlite:///{db}"


def resolve_target(source: str, storage: str | None) -> tuple[str, str]:
    """``(study name, storage URL)`` for a study file, a shipped name or a study name in ``storage``."""
    path = study_file(source) if str(source).endswith(".toml") or Path(source).is_file() else None
    name = load_study(path).name if path else str(source)
    return name, storage or default_storage(source)
