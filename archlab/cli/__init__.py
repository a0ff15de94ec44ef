"""The `archlab` command line.

Each command group lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed ``argparse.Namespace`` and returning an exit code (or None).
Any ``ValueError``/``OSError`` raised by a command is printed on one line and
the process exits with code 2 (bad input); outputs are written atomically by the
commands themselves, so a failed command leaves no partial files.
"""

from __future__ import annotations

import argparse
import importlib
import sys

GROUPS = ("restore", "filters", "spectral", "recommend", "texture", "study", "bench", "reproduce")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every command group registered."""
    parser = argparse.ArgumentParser(prog="archlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        try:
            module = importlib.import_module(f"archlab.cli.{group}")
        except ModuleNotFoundError as exc:
            if exc.name != f"archlab.cli.{group}":
                raise
            continue
        module.register(sub)
    return parser



def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except (ValueError, OSError) as exc:
        message = " ".join(str(exc).split())
        print(f"archlab {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"archlab {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
