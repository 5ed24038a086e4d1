"""Track AND-OR interactions during supervised fine-tuning and stop when new noise rises.

The math core (:mod:`sft_interaction_callback.andor`) imports no Hugging Face code; the
callback and its config are loaded lazily so ``import sft_interaction_callback`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "InteractionCallback": "sft_interaction_callback.callback",
    "InteractionConfig": "sft_interaction_callback.config",
    "NoiseRiseStopper": "sft_interaction_callback.tracking.stopping",
    "Probe": "sft_interaction_callback.probing.probes",
    "fit_and_or": "sft_interaction_callback.andor",
}

__all__ = [
    "InteractionCallback",
    "InteractionConfig",
    "NoiseRiseStopper",
    "Probe",
    "fit_and_or",
]

if TYPE_CHECKING:  # pragma: no cover
    from sft_interaction_callback.andor import fit_and_or
    from sft_interaction_callback.callback import InteractionCallback
    from sft_interaction_callback.config import InteractionConfig
    from sft_interaction_callback.probing.probes import Probe
    from sft_interaction_callback.tracking.stopping import NoiseRiseStopper


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sft_interaction_callback' has no attribute {name!r}")
