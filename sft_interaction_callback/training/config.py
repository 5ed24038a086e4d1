"""The training config, as one import: loading, the schema, LoRA targets and the plan.

The pieces live in their own modules: :mod:`.loader` (YAML, ``extends:``, ``${VAR}``,
paths, ``--set``), :mod:`.schema` (the typed sections and :class:`TrainConfig`),
:mod:`.validate` (checks with key, file and fix), :mod:`.lora_targets` (PEFT's defaults
and matching) and :mod:`.plan` (the ``--dry-run`` summary). This module re-exports their
public names so ``from sft_interaction_callback.training.config import load_config`` keeps
working.
"""

from __future__ import annotations

from sft_interaction_callback.training.loader import (
    compose_paths,
    default_configs_dir,
    load_config,
    parse_value,
)
from sft_interaction_callback.training.lora_targets import (
    FAMILY_MODULES,
    default_target_modules,
    guess_family,
    target_matches,
)
from sft_interaction_callback.training.schema import (
    DTYPES,
    FILE_SUFFIXES,
    FORMATS,
    TOP_LEVEL,
    ConfigError,
    DataConfig,
    LoraSettings,
    ModelConfig,
    TrainConfig,
    fields_help,
)

__all__ = [
    "DTYPES",
    "FAMILY_MODULES",
    "FILE_SUFFIXES",
    "FORMATS",
    "TOP_LEVEL",
    "ConfigError",
    "DataConfig",
    "LoraSettings",
    "ModelConfig",
    "TrainConfig",
    "compose_paths",
    "default_configs_dir",
    "default_target_modules",
    "fields_help",
    "guess_family",
    "load_config",
    "parse_value",
    "target_matches",
]
