"""Track AND-OR interactions during supervised fine-tuning and stop when new noise rises.

The names a user needs are importable from here, each loaded on first use, so that
``import sft_interaction_callback`` stays cheap (no Hugging Face, no plotting library);
the math core (:mod:`sft_interaction_callback.andor`) imports no Hugging Face code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    # the callback and its settings
    "InteractionCallback": "sft_interaction_callback.callback.events",
    "InteractionConfig": "sft_interaction_callback.config",
    "SnapshotError": "sft_interaction_callback.callback.resume",
    # probes and the math
    "Probe": "sft_interaction_callback.probing.probes",
    "AndOrInteractions": "sft_interaction_callback.andor",
    "fit_and_or": "sft_interaction_callback.andor",
    # tracking and stopping
    "InteractionTracker": "sft_interaction_callback.tracking.tracker",
    "ProbeSchedule": "sft_interaction_callback.tracking.schedule",
    "NoiseRiseStopper": "sft_interaction_callback.tracking.stopping",
    "Stopper": "sft_interaction_callback.tracking.stopping",
    "ShadowStopper": "sft_interaction_callback.tracking.shadow",
    # reading a finished run
    "build_report": "sft_interaction_callback.reporting.report",
    "load_run": "sft_interaction_callback.reporting.run_data",
}

__all__ = [
    "AndOrInteractions",
    "InteractionCallback",
    "InteractionConfig",
    "InteractionTracker",
    "NoiseRiseStopper",
    "Probe",
    "ProbeSchedule",
    "ShadowStopper",
    "SnapshotError",
    "Stopper",
    "build_report",
    "fit_and_or",
    "load_run",
]

if TYPE_CHECKING:  # pragma: no cover
    from sft_interaction_callback.andor import AndOrInteractions, fit_and_or
    from sft_interaction_callback.callback.events import InteractionCallback
    from sft_interaction_callback.callback.resume import SnapshotError
    from sft_interaction_callback.config import InteractionConfig
    from sft_interaction_callback.probing.probes import Probe
    from sft_interaction_callback.reporting.report import build_report
    from sft_interaction_callback.reporting.run_data import load_run
    from sft_interaction_callback.tracking.schedule import ProbeSchedule
    from sft_interaction_callback.tracking.shadow import ShadowStopper
    from sft_interaction_callback.tracking.stopping import NoiseRiseStopper, Stopper
    from sft_interaction_callback.tracking.tracker import InteractionTracker


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sft_interaction_callback' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
