"""The engine: a model and its probes in, values of masked inputs and interactions out.

No Trainer here: :mod:`.extractor` (``ValueExtractor``) runs the value engine and the fit
once per probe point; :mod:`.runtime` holds the do-no-harm guards (RNG, modes, caches,
gradients, CPU threads); :mod:`.distributed` and :mod:`.sharded_weights` split the masks
over ranks and gather sharded weights. The Trainer adapter (:mod:`..callback`), the
reference model and the demo call it; it calls only the math core, the probing layer
and the settings.
"""

from __future__ import annotations

from .extractor import ValueExtractor

__all__ = ["ValueExtractor"]
