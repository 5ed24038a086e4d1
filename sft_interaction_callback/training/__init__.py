"""Config-driven SFT runs: YAML config -> model, LoRA, data, TRL ``SFTTrainer`` + callback.

``load_config`` merges YAML files (with ``extends:``) and ``--set`` overrides into a
validated :class:`TrainConfig`; ``train`` runs it. The command line is
``sft-interactions train`` (see :mod:`sft_interaction_callback.cli.train`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_LAZY = {
    "ConfigError": "sft_interaction_callback.training.schema",
    "DataConfig": "sft_interaction_callback.training.schema",
    "LoraSettings": "sft_interaction_callback.training.schema",
    "ModelConfig": "sft_interaction_callback.training.schema",
    "TrainConfig": "sft_interaction_callback.training.schema",
    "compose_paths": "sft_interaction_callback.training.loader",
    "load_config": "sft_interaction_callback.training.loader",
    "SFTData": "sft_interaction_callback.training.data",
    "build_probes": "sft_interaction_callback.training.probes",
    "load_sft_data": "sft_interaction_callback.training.data",
    "RunResult": "sft_interaction_callback.training.run",
    "build_trainer": "sft_interaction_callback.training.run",
    "train": "sft_interaction_callback.training.run",
}

__all__ = [
    "ConfigError",
    "DataConfig",
    "LoraSettings",
    "ModelConfig",
    "RunResult",
    "SFTData",
    "TrainConfig",
    "build_probes",
    "build_trainer",
    "compose_paths",
    "load_config",
    "load_sft_data",
    "train",
]

if TYPE_CHECKING:  # pragma: no cover
    from sft_interaction_callback.training.data import SFTData, load_sft_data
    from sft_interaction_callback.training.loader import compose_paths, load_config
    from sft_interaction_callback.training.probes import build_probes
    from sft_interaction_callback.training.run import RunResult, build_trainer, train
    from sft_interaction_callback.training.schema import (
        ConfigError,
        DataConfig,
        LoraSettings,
        ModelConfig,
        TrainConfig,
    )


def __getattr__(name: str) -> Any:
    """Import on first use, so ``import sft_interaction_callback.training`` stays cheap."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sft_interaction_callback.training' has no attribute {name!r}")
