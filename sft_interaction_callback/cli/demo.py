"""``sft-interactions demo``: the whole story on a task the demo builds itself, offline.

Pretrains a tiny word-level Llama on a noisy corpus, LoRA-fine-tunes it with the
interaction callback until it overfits, and prints what the callback saw: when the stop
rule fired and why, held-out accuracy at step 0 / the stop / the best step / the end, how
much of the removal happened before the stop, whether new interactions kept growing after
it, and whether the planted AND / OR word patterns are among the salient interactions.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sft_interaction_callback.cli import print_json

HELP = "run the built-in demo (no download): pretrain, LoRA-fine-tune, stop, report"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help=HELP, description=HELP)
    p.add_argument(
        "--quick", action="store_true", help="a much smaller run (under 2 minutes) for smoke tests"
    )
    p.add_argument("--output-dir", default="runs/demo", help="parent of the run folder")
    p.add_argument("--report-to", default="none", choices=["none", "wandb"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1; 0 = torch's default). The probing cost, most of "
        "the run, does not speed up with more threads; pretraining does, a little, on an "
        "idle machine",
    )
    p.add_argument("--json", action="store_true", help="print summary.json instead of text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings

    # transformers 5 deprecates this name; the callback's training-state guard still asks
    # for it on PEFT models. It is not about the user's code, so keep the demo output clean.
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated")
    from sft_interaction_callback.demo.run import FULL, QUICK, run_demo

    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    try:
        result = run_demo(
            QUICK if args.quick else FULL,
            output_dir=args.output_dir,
            seed=args.seed,
            report_to=args.report_to,
            device=args.device,
            threads=args.threads or None,
            log=log,
        )
    except (ValueError, OSError) as err:
        print(f"sft-interactions demo: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print_json(result.summary)
    else:
        print(result.text)
    return 0
