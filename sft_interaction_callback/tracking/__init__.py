"""Tracking logic: the probe schedule, the interaction tracker and the early-stopping rule.

Pure logic on tensors and plain dicts (no Hugging Face import); the callback wires it into
a ``transformers.TrainerCallback``.
"""

from .schedule import ProbeSchedule
from .stopping import NoiseRiseStopper, Stopper
from .tracker import InteractionTracker

__all__ = [
    "InteractionTracker",
    "NoiseRiseStopper",
    "ProbeSchedule",
    "Stopper",
]
