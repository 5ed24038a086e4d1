"""``sft-interactions train``: fine-tune from a YAML config, with the interaction callback.

The same code runs as ``python scripts/train_sft.py`` and under ``accelerate launch``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

HELP = "fine-tune a model from a YAML config (TRL SFTTrainer + LoRA + InteractionCallback)"

EPILOG = """\
examples:
  sft-interactions train --config configs/experiments/qwen2.5-7b_goemotions.yaml
  sft-interactions train --model qwen2.5-3b --data dolly --set training.max_steps=500
  sft-interactions train --config my.yaml --set lora=null training.learning_rate=2e-5 --dry-run
  accelerate launch --num_processes 8 scripts/train_sft.py --model llama-3-8b --data goemotions

--model/--data compose configs/base.yaml + configs/models/NAME.yaml + configs/data/NAME.yaml
(then any --config files, then --set). --set values are YAML: 3, 1e-4, null, [a, b].
"""


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--config",
        dest="configs",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML config (repeatable; later files override earlier ones)",
    )
    p.add_argument("--model", default=None, help="configs/models/NAME.yaml (or a YAML path)")
    p.add_argument("--data", default=None, help="configs/data/NAME.yaml (or a YAML path)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override a key, e.g. --set lora.r=16 training.max_steps=200",
    )
    p.add_argument("--name", default=None, help="run name (default: from the config files)")
    p.add_argument(
        "--configs-dir",
        default=None,
        help="folder of base.yaml, models/, data/ (default: $SFT_INTERACTIONS_CONFIGS, "
        "./configs, or the repository's configs/)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the merged config and the plan; load no model and no data",
    )
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "train",
        help=HELP,
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def resolve(args: argparse.Namespace) -> Any:
    """The validated :class:`~sft_interaction_callback.training.TrainConfig` of ``args``."""
    from sft_interaction_callback.training.config import compose_paths, load_config

    overrides = [item for group in args.overrides for item in group]
    paths = compose_paths(args.model, args.data, args.configs, args.configs_dir)
    return load_config(paths, overrides, name=args.name)


def run(args: argparse.Namespace) -> int:
    """Resolve, then print (``--dry-run``) or train. 2 on a config error."""
    from sft_interaction_callback.training.config import ConfigError

    try:
        cfg = resolve(args)
    except ConfigError as err:
        print(f"sft-interactions train: error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(cfg.to_yaml(), end="")
        print("# ---- plan (dry run: nothing loaded)")
        from sft_interaction_callback.training.plan import describe_plan

        print(describe_plan(cfg))
        return 0
    from sft_interaction_callback.training.run import train

    try:
        train(cfg)
    except ConfigError as err:
        print(f"sft-interactions train: error: {err}", file=sys.stderr)
        return 2
    finally:
        _close_process_group()
    return 0


def _close_process_group() -> None:
    """Tear down torch.distributed before exit: gloo threads that outlive the interpreter
    abort the process (SIGABRT, "terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/train_sft.py`` (the ``train`` subcommand on its own)."""
    parser = argparse.ArgumentParser(
        prog="train_sft.py",
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
