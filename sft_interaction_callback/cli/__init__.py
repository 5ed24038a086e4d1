"""``sft-interactions``: the command-line entry point.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` and
``run(args) -> int``; modules are imported lazily so ``--help`` stays fast and a missing
optional dependency only affects its own subcommand.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

#: modules under ``sft_interaction_callback.cli``, one per subcommand
SUBCOMMANDS = ("explain", "train", "demo", "report")


def build_parser() -> argparse.ArgumentParser:
    from sft_interaction_callback import __version__

    parser = argparse.ArgumentParser(
        prog="sft-interactions",
        description="Watch AND-OR interactions of a model during supervised fine-tuning.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith(__name__):
                continue  # subcommand not shipped in this build
            raise
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "json", False):
        return json_only(args)
    return int(args.func(args) or 0)


#: Where :func:`print_json` writes: the real stdout while a ``--json`` command runs.
_json_stream: Any = None


def json_only(args: argparse.Namespace) -> int:
    """Run a ``--json`` subcommand with stdout holding nothing but its JSON document.

    Whatever else is printed while it runs goes to stderr: Python's ``print`` (progress,
    a library's messages, the Trainer's log lines) and, when stdout is a real file
    descriptor, what native code writes to it (the HiGHS solver's banner). The document
    goes through :func:`print_json`.
    """
    global _json_stream
    real = sys.stdout
    real.flush()
    saved = None
    try:
        saved = os.dup(1)
        os.dup2(2, 1)  # native writes to the process's stdout now reach stderr
    except OSError:  # no file descriptors 1 / 2 (an embedded interpreter)
        saved = None
    if saved is not None and _fileno(real) == 1:
        _json_stream = os.fdopen(os.dup(saved), "w", encoding="utf-8")
    else:
        _json_stream = real  # a Python-level stdout (a capture, a StringIO)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return int(args.func(args) or 0)
    finally:
        if _json_stream is not real:
            _json_stream.close()
        if saved is not None:
            sys.stderr.flush()
            os.dup2(saved, 1)
            os.close(saved)
        _json_stream = None


def _fileno(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None


def print_json(document: Any) -> None:
    """Write one JSON document to stdout (the real one under ``--json``)."""
    stream = _json_stream if _json_stream is not None else sys.stdout
    stream.write(json.dumps(document, indent=2) + "\n")
    stream.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
