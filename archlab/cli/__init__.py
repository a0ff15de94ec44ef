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
    "bench": "time the upsampler and the fit engine against the papers' forms",
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
                          help="CPU threads for torch (default: the cores this process may use, or "
                               "$OMP_NUM_THREADS when set; never more than those cores)")

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


def default_threads() -> int:
    """The cores this process may use (``sched_getaffinity``), or ``$OMP_NUM_THREADS`` when it is set lower."""
    cores = len(os.sched_getaffinity(0))
    env = os.environ.get("OMP_NUM_THREADS", "")
    return min(cores, int(env)) if env.isdigit() and int(env) >= 1 else cores


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


def _apply_threads(count: int, func) -> None:
    """Set the thread count before any work: torch's intra-op pool (``torch.set_num_threads``), and
    the OpenMP/BLAS environment for libraries imported later. A command marked ``torch_free``
    (``func.torch_free = True``) does not import torch for it."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(count)
    if not getattr(func, "torch_free", False) or "torch" in sys.modules:
        import torch

        torch.set_num_threads(count)


def _check_device(text) -> None:
    """Reject a bad ``--device`` before any work (torch would raise a RuntimeError deep inside)."""
    if not isinstance(text, str):
        return
    from archlab.engine import resolve_device

    try:
        resolve_device(text)
    except RuntimeError as exc:
        raise ValueError(f"--device: {text!r} is invalid; allowed: auto, cpu, cuda or cuda:N") from exc


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
        _apply_threads(getattr(args, "threads", None) or default_threads(), args.func)
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
