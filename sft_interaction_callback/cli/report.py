"""``sft-interactions report``: plots and one HTML page for a finished (or running) run."""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = "plots and a self-contained HTML report of a run's interaction snapshots"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``report`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "report",
        help=HELP,
        description=HELP + ". RUN_DIR is the Trainer output_dir (or its interactions/ folder).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="Trainer output_dir or snapshot folder")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default RUN_DIR/interactions/report)",
    )
    p.add_argument("--top", type=int, default=8, help="interactions listed per probe (default 8)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Build the report and print the files written. Returns 2 on bad input."""
    if args.top < 1:
        print("sft-interactions report: error: --top must be >= 1", file=sys.stderr)
        return 2
    from sft_interaction_callback.reporting.report import build_report

    try:
        paths = build_report(args.run_dir, args.out, top=args.top)
    except (OSError, ValueError) as err:  # no interaction data, unreadable or malformed files
        print(f"sft-interactions report: error: {err}", file=sys.stderr)
        return 2
    for path in paths.plots.values():
        print(path)
    print(paths.html)
    for note in paths.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0
