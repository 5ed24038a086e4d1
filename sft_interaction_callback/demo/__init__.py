"""The demo: a synthetic word task, a tiny pretrained LM, LoRA SFT with the callback.

``sft-interactions demo`` (or ``./scripts/demo.sh``) runs :func:`.run.run_demo`; nothing is
downloaded. See :mod:`.task` for the task, :mod:`.model` for the tokenizer and model,
:mod:`.pretrain` for stage 1 and :mod:`.run` for stage 2 and the summary.
"""

from __future__ import annotations

__all__ = ["FULL", "QUICK", "DemoSettings", "run_demo"]


def __getattr__(name: str):
    if name in __all__:
        from sft_interaction_callback.demo import run

        return getattr(run, name)
    raise AttributeError(f"module 'sft_interaction_callback.demo' has no attribute {name!r}")
