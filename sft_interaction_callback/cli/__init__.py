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

    Whatever else is printed while it runs (progress, a library's ``print``, the
    Trainer's log lines) goes to stderr; the document goes through :func:`print_json`.
    """
    global _json_stream
    _json_stream = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return int(args.func(args) or 0)
    finally:
        _json_stream = None


def print_json(document: Any) -> None:
    """Write one JSON document to stdout (the real one under ``--json``)."""
    stream = _json_stream if _json_stream is not None else sys.stdout
    stream.write(json.dumps(document, indent=2) + "\n")
    stream.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
