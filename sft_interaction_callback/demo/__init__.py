"""The demo: a synthetic word task, a tiny pretrained LM, LoRA SFT with the callback.

``sft-interactions demo`` (or ``./scripts/demo.sh``) runs :func:`.run.run_demo`; nothing is
downloaded. See :mod:`.settings` for the sizes, :mod:`.task` for the task, :mod:`.model`
for the tokenizer and model, :mod:`.pretrain` for stage 1, :mod:`.finetune` for stage 2,
:mod:`.summary` for ``summary.json`` and the printout, and :mod:`.run` for the steps in
order. The shadow stop is :class:`sft_interaction_callback.tracking.shadow.ShadowStopper`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FULL", "QUICK", "DemoSettings", "run_demo"]


def __getattr__(name: str) -> Any:
    """Import on first use, so ``import sft_interaction_callback.demo`` stays cheap."""
    if name in __all__:
        from sft_interaction_callback.demo import run

        return getattr(run, name)
    raise AttributeError(f"module 'sft_interaction_callback.demo' has no attribute {name!r}")
