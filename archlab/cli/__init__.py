"""The `archlab` command line.

Each command group lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed ``argparse.Namespace`` and returning an exit code (or None).
Only the module of the command being run is imported (``archlab --help`` and the
other groups' one-line summaries need none), and those modules import the heavy
libraries (torch, scipy, pandas, optuna, matplotlib) inside the commands that use them.

Error contract: exit 0 on success; 2 for bad input - every argument error and every
``ValueError``/``OSError`` of a command is one line on stderr (``archlab CMD: error: ...``,
naming the flag or field and the allowed values) and nothing is written; 130 when
interrupted (Ctrl-C or SIGTERM; ``restore`` keeps what it had, marked interrupted);
1 for an internal error (a bug: the traceback is printed). Outputs are written
atomically by the commands themselves, so a failed command leaves no partial files.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import importlib
import os
import re
import signal
import sys
import threading

#: Command groups with their one-line summaries (shown by ``archlab --help`` without importing them).
GROUPS = {
    "restore": "restore an image with a controlled deep image prior",
    "filters": "list, show, plot and design upsampling filters (the catalogue, your own folder, or TOML files)",
    "spectral": "FBC of a fit, radial spectra, the papers' spectral experiments",
    "recommend": "recommend a DIP architecture for an image from its texture",
    "texture": "texture features, width prediction and its cross-validation",
    "study": "Optuna studies: run (resumable, several workers), report, dashboard",
    "reproduce": "rerun a paper experiment and write its results table",
}
_TYPE_WORDS = {"int": "an integer", "float": "a number"}


class UsageError(Exception):
    """An argument error, reported on one line with exit code 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block) naming the flag and the
    allowed values, and on which every (sub)command accepts ``--threads``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.commands = None
        self.add_argument("--threads", type=threads, default=argparse.SUPPRESS, metavar="N",
                          help="CPU threads for torch (default: the cores this process may use less those "
                               "the load average says are busy, at least 1, or $OMP_NUM_THREADS when set lower; "
                               "never more than those cores)")

    def add_subparsers(self, **kwargs):
        self.commands = super().add_subparsers(**kwargs)
        return self.commands

    def error(self, message: str):
        """Raise :class:`UsageError` with a one-line message (argparse would print the usage block)."""
        message = re.sub(r"invalid (\w+) value: (.*)",
                         lambda m: f"{m.group(2)} is invalid; expected {_TYPE_WORDS.get(m.group(1), m.group(1))}",
                         message)
        if self.commands is not None and "required" in message and self.commands.metavar in message:
            message += f" (choose from {', '.join(self.commands.choices)})"
        raise UsageError(f"{self.prog}: error: {' '.join(message.split())}")


def threads(text: str) -> int:
    """``--threads``: an integer from 1 to the number of cores this process may use."""
    cores = len(os.sched_getaffinity(0))
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= cores:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid; allowed: an integer from 1 to {cores} "
                                         f"(the cores this process may use)")
    return value


def default_threads(load: float | None = None) -> int:
    """The cores this process may use (``sched_getaffinity``) less those other work keeps busy (the
    1-minute load average, rounded; ``load`` overrides it), at least 1; or ``$OMP_NUM_THREADS`` when it
    is set lower. More threads than free cores make OpenMP's threads spin while they wait for a core:
    under load, one 500-iteration fit on 2 threads cost 1,030 s of CPU."""
    cores = len(os.sched_getaffinity(0))
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    free = max(1, min(cores, cores - round(load)))
    env = os.environ.get("OMP_NUM_THREADS", "")
    return min(free, int(env)) if env.isdigit() and int(env) >= 1 else free


# --- the inputs of a fit, shared by the commands that fit (restore, spectral fbc) ---

def _task_fields() -> dict:
    """Every task parameter (the first task that has it wins): name -> (type, help)."""
    import typing

    from archlab import tasks

    found = {}
    for cls in tasks.TASKS.values():
        types = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            found.setdefault(f.name, (types[f.name], f.metadata.get("help")))
    return found


def add_fit_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The inputs of a restoration (``restore``, ``spectral fbc``): task and its flags,
    image or observation, size, architecture, fit settings, seed, device and ``-o`` (default ``out``)."""
    from archlab import models, tasks
    from archlab.restoration import (DEFAULT_ARCH, DEFAULT_FIT, DEFAULT_IMAGE, DEFAULT_MAX_PIXELS, DEFAULT_SIZE,
                                     TASK_DEFAULTS)
    from archlab.vocabulary import BUILTIN_IMAGES

    parser.add_argument("--task", default="denoise", choices=sorted(tasks.TASKS), help="inverse problem (default denoise)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--image", default=None,
                     help=f"clean image: a file or a built-in ({', '.join(sorted(BUILTIN_IMAGES))}); "
                          f"default {DEFAULT_IMAGE}")
    src.add_argument("--observed", default=None, help="an already degraded image (no PSNR is reported)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help=f"resize a clean image so its longer side is SIZE pixels before degrading (0 = keep; {DEFAULT_SIZE})")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse a fit whose output has more pixels (memory; default {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--arch", default=None,
                        help=f"a preset ({', '.join(sorted(models.PRESETS))}), 'auto' (recommended for the image), "
                             f"'studied' (the task's study's best single configuration), 'rules' (paper 004's "
                             f"rules at width 64), or a spec .toml/.json (default: 'studied' for the tasks whose "
                             f"study ships with archlab, "
                             f"{', '.join(f'{arch!r} for {name}' for name, (arch, _) in TASK_DEFAULTS.items())}, "
                             f"else {DEFAULT_ARCH})")
    parser.add_argument("--iterations", type=int, default=None,
                        help=f"maximum iterations (default {DEFAULT_FIT['iterations']}; --arch auto, studied or "
                             f"rules: theirs)")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"Adam learning rate (default {DEFAULT_FIT['lr']}; --arch auto, studied or rules: theirs)")
    parser.add_argument("--input-jitter", type=float, default=None,
                        help=f"σ of the noise added to the network's input at every step (default "
                             f"{DEFAULT_FIT['input_jitter']:.4g}; --arch auto, studied or rules: theirs)")
    parser.add_argument("--ema", type=float, default=0.99, help="weight of the output moving average (default 0.99)")
    parser.add_argument("--eval-every", type=int, default=10, help="iterations between measurements (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the degradation, the input and the weights")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("-o", "--out", default=out, help=f"output folder (default ./{out})")
    add_task_flags(parser)


def add_task_flags(parser) -> None:
    """One flag per task parameter (``--sigma``, ``--quality``, ``--mask`` ...), from the task dataclasses."""
    for name, (kind, text) in _task_fields().items():
        flag = "--" + name.replace("_", "-")
        if name == "mask":
            parser.add_argument(flag, default=None, help="inpaint: center, bernoulli, or a mask image (white = known)")
        elif name == "path":
            continue
        elif kind is bool:
            parser.add_argument(flag, default=None, action=argparse.BooleanOptionalAction, help=text)
        else:
            parser.add_argument(flag, type=kind, default=None, help=text)


def make_task(args):
    """The task from ``--task`` and its flags; a flag another task owns is an error."""
    from archlab import tasks

    cls = tasks.TASKS[args.task]
    own = {f.name for f in dataclasses.fields(cls)}
    params = {}
    for name in _task_fields():
        value = getattr(args, name, None)
        if value is None:
            continue
        if name not in own:
            raise ValueError(f"--{name.replace('_', '-')}: not a parameter of task {args.task}; "
                             f"its parameters: {', '.join(sorted(own - {'path'})) or 'none'}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')}: {value} is invalid; allowed: a finite number")
        params[name] = value
    if args.task == "inpaint":
        mask = params.get("mask", "center")
        for flag, kind in (("ratio", "center"), ("drop", "bernoulli")):
            if flag in params and mask != kind:
                raise ValueError(f"--{flag}: only used with --mask {kind}, not with --mask {mask}; "
                                 f"remove --{flag} or use --mask {kind}")
    if args.task == "inpaint" and params.get("mask") not in (None, "center", "bernoulli"):
        params["path"], params["mask"] = params["mask"], "file"
    return tasks.make_task(args.task, **params)


def check_output(out: str, names: tuple[str, ...]):
    """The ``-o`` folder, checked before any work: not a file, and if it exists, holding only ``names``
    (an earlier output, which the new one replaces whole); its parent must be writable."""
    from pathlib import Path

    path = Path(out)
    if Path.cwd().resolve().is_relative_to(path.resolve()):
        raise ValueError(f"-o: {out} is the current folder or holds it; give a folder of its own")
    if path.exists() and not path.is_dir():
        raise ValueError(f"-o: {out} is a file; give a folder (new, empty, or an earlier output)")
    if path.is_dir():
        foreign = sorted(p.name for p in path.iterdir() if p.name not in names)
        if foreign:
            raise ValueError(f"-o: folder {out} holds files this command does not write (e.g. {foreign[0]!r}) and "
                             f"would be replaced; give a new or empty folder, or an earlier output")
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"-o: cannot create {out}: {parent} is not a writable folder")
    return path


def check_fit(result) -> None:
    """Raise ``ValueError`` for a fit that diverged with nothing to write: no evaluation kept, or no
    finite output even from the last kept weights."""
    finite = bool(result.output.isfinite().all() and result.ema_output.isfinite().all())
    if result.stop_reason == "diverged" and (result.history.empty or not finite):
        raise ValueError(f"fit: diverged at iteration {result.stopped_at}: the loss or the output was not finite "
                         f"({result.restores} roll-backs of the weights); lower --lr (was {result.settings['lr']})")


def progress_lines(total: int, label: str):
    """An ``on_evaluation`` callback printing a line on stderr every ~10 % of ``total`` iterations (of each fit,
    numbered from the second on), or None when stderr is a terminal (the fit shows a progress bar there)."""
    if sys.stderr.isatty():
        return None
    import time

    start, step, fit, last = time.monotonic(), [1], [1], [0]

    def report(iteration: int, output) -> None:
        if iteration < last[0]:  # the next fit of a restoration's restarts
            fit[0], step[0] = fit[0] + 1, 1
        last[0] = iteration
        if iteration * 10 >= step[0] * total:
            which = f" (fit {fit[0]})" if fit[0] > 1 else ""
            print(f"archlab {label}{which}: iteration {iteration}/{total} ({100 * iteration // total} %), "
                  f"{time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
            step[0] = iteration * 10 // total + 1

    return report


def fit_inputs(args, outputs: tuple[str, ...]):
    """Task, architecture (``--arch auto`` recommends one from the observation, ``--arch studied`` takes the task's
    study's best single configuration, :func:`archlab.recommend.studied`, ``--arch rules`` paper 004's rules at
    width 64, :func:`archlab.recommend.rules`), observation
    (:class:`archlab.tasks.Observation`: y, its physics, the reference) and notes from the arguments of :func:`add_fit_arguments`, every input checked
    (``-o`` against ``outputs`` included) before anything is fitted or written."""
    from archlab import restoration

    task = make_task(args)
    if args.iterations is not None and args.iterations < 1:  # the defaults and the studied settings are valid
        raise ValueError(f"--iterations: {args.iterations} must be ≥ 1")
    if args.input_jitter is not None and args.input_jitter < 0:
        raise ValueError(f"--input-jitter: {args.input_jitter} must be ≥ 0")
    check_output(args.out, outputs)
    if args.arch is None:
        args.arch = restoration.default_arch(task)
    from archlab import stopping  # torch: the checks above stay cheap

    window = stopping.DEFAULT_WINDOW
    if args.eval_every < 1 or window % args.eval_every:
        divisors = ", ".join(str(d) for d in range(1, window + 1) if window % d == 0)
        raise ValueError(f"--eval-every: {args.eval_every} is invalid; allowed: a divisor of the stop rules' window "
                         f"of {window} iterations ({divisors})")
    flags = {"image": "--image", "observed": "--observed", "size": "--size", "max_pixels": "--max-pixels"}
    spec, settings, reason, prepared = restoration.configure(args.arch, task, args.image, observed=args.observed,
                                                             size=args.size, seed=args.seed,
                                                             max_pixels=args.max_pixels, names=flags)
    for key in restoration.DEFAULT_FIT:  # what the user gave wins over the configuration's settings
        if getattr(args, key, None) is None:
            setattr(args, key, settings[key])
    notes = prepared.notes
    if reason is not None:
        fitted = {key: getattr(args, key) for key in restoration.DEFAULT_FIT}
        notes.append(f"--arch {args.arch}: {_choices(spec, fitted)}; {reason}")
    return task, spec, prepared.observation, notes


def _choices(spec, fit: dict) -> str:
    """``depth 4, width 16, ..., iterations 1000``: what a chosen architecture and its fit settings set (numbers
    to four decimals)."""
    values = {key: spec.to_dict().get(key, fit.get(key))
              for key in ("depth", "width", "skip", "upsampler", "lipschitz", "lr", "input_jitter", "iterations")}
    return ", ".join(f"{key} {round(value, 4) if isinstance(value, float) else value}" for key, value in values.items())


def _command(argv: list[str]) -> str | None:
    """The command group named in ``argv`` (the first word that is not an option or its value)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--threads":
            skip = True
        elif not word.startswith("-"):
            return word if word in GROUPS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every group registered, or with ``command`` given, only that group in full
    (the others as their summaries; ``""`` registers none in full)."""
    parser = Parser(prog="archlab", description=__doc__.splitlines()[0],
                    epilog="exit codes: 0 done, 2 bad input (one line on stderr, nothing written), "
                           "130 interrupted, 1 internal error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group, summary in GROUPS.items():
        if command is not None and group != command:
            sub.add_parser(group, help=summary)
            continue
        try:
            module = importlib.import_module(f"archlab.cli.{group}")
        except ModuleNotFoundError as exc:
            if exc.name != f"archlab.cli.{group}":
                raise
            continue
        module.register(sub)
    return parser


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (as SQLAlchemy's
    ``make_url(url).render_as_string(hide_password=True)`` shows it)."""
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]*@", r"\1***@", text)


def _apply_threads(count: int) -> None:
    """Set the thread count before any work: the OpenMP/BLAS environment, which torch reads when it is
    first imported (``torch.get_num_threads()`` follows ``OMP_NUM_THREADS``), and torch's intra-op pool
    where torch is already loaded. A command that never needs torch does not load it for this."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(count)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)


def _check_device(text) -> None:
    """Reject a bad ``--device`` before any work (torch would raise a RuntimeError deep inside)."""
    if not isinstance(text, str) or text in ("auto", "cpu"):  # always valid: no torch needed to say so
        return
    message = f"--device: {text!r} is invalid; allowed: auto, cpu, cuda or cuda:N"
    if not re.fullmatch(r"cuda(:\d+)?", text):
        raise ValueError(message)
    from archlab.engine import resolve_device

    try:
        resolve_device(text)
    except RuntimeError as exc:
        raise ValueError(message) from exc


def _redeliver(unraisable) -> None:
    """``sys.unraisablehook``: a Ctrl-C that arrived inside a ``__del__`` or weakref callback (where
    Python only prints "Exception ignored") is delivered again 10 ms later, from a timer thread, so that
    it lands in ordinary code; anything else is reported as Python does."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
        threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
    else:
        sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (see the module's error contract)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(_command(argv) or "").parse_args(argv)
    except UsageError as exc:
        print(redact(str(exc)), file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    previous, hook = {}, sys.unraisablehook
    # Ctrl-C and SIGTERM both raise KeyboardInterrupt (SIGINT too where a parent left it ignored)
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        sys.unraisablehook = _redeliver
    try:
        _apply_threads(getattr(args, "threads", None) or default_threads())
        _check_device(getattr(args, "device", None))
        code = args.func(args)
    except BrokenPipeError:  # the reader of our output has gone (`archlab ... | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError) as exc:
        print(f"archlab {args.command}: error: {redact(' '.join(str(exc).split()))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"archlab {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = hook
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
