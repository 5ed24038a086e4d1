"""The floor of the noise signal: what measuring an unchanged model produces (DESIGN.md §9).

At step 0, after the base interactions, the model is probed once more with its weights
perturbed by a tiny relative noise (``w + rel * std(w) * eps`` per parameter tensor,
``rel = 1e-2`` by default: at ``1e-3`` the exact, canonical fit of the demo's probes often
moves no interaction across the threshold, and a floor of exactly 0 says nothing).
Against the base, such a model has nothing "removed" or "emerged" except what the
measurement itself makes up (near-threshold interactions that flicker, a fit that moves);
the noise signal of that point is the **floor**. It is logged as
``interactions/noise_floor`` and handed to the stopper, whose ``min_delta`` defaults to a
multiple of it.

The floor uses the raw (not debounced) categories of one perturbed point, so it is an
upper bound of the floor of the debounced signal. Same guarantees as every probe point:
no gradient, no RNG state consumed (``eps`` comes from a private ``torch.Generator``),
and every perturbed tensor is copied back bit for bit from a copy taken before.
"""

from __future__ import annotations

import copy
import math
import statistics
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from sft_interaction_callback.keys import NOISE_FLOOR_KEY, NOISE_FLOOR_SD_KEY, NOISE_KEY

__all__ = ["floor_of", "measure_floor", "perturbed_weights"]


@contextmanager
def perturbed_weights(model: torch.nn.Module, rel: float = 1e-2, seed: int = 0) -> Iterator[None]:
    """Perturb every floating-point parameter by ``rel`` times its std, then restore it exactly.

    The noise comes from a private generator per device (seeded by ``seed``), so the global
    RNG streams are untouched; the original values are kept on the CPU and copied back in
    ``finally``, so the weights are bit-identical afterwards even if the body raises.
    """
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    generators: dict[str, torch.Generator] = {}
    with torch.no_grad():
        try:
            for p in model.parameters():
                if not p.is_floating_point() or p.numel() < 2:
                    continue
                saved.append((p, p.detach().to("cpu", copy=True)))
                key = str(p.device)
                if key not in generators:
                    generators[key] = torch.Generator(device=p.device).manual_seed(seed)
                eps = torch.randn(
                    p.shape, generator=generators[key], device=p.device, dtype=torch.float32
                )
                scale = rel * float(p.detach().float().std())
                if scale > 0 and math.isfinite(scale):
                    p.add_((eps * scale).to(p.dtype))
            yield
        finally:
            for p, original in saved:
                p.copy_(original.to(p.device))


def floor_of(tracker: Any, interactions: Any) -> float:
    """The noise signal of ``interactions`` against the tracker's base, raw categories.

    A copy of the tracker (same thresholds, signal and reference) is used, so the
    tracker itself is not moved.
    """
    probe = copy.deepcopy(tracker)
    probe.categories = "design"
    step = 1 if probe.last_step is None else probe.last_step + 1
    return float(probe.update(step, interactions)[NOISE_KEY])


def measure_floor(callback: Any, model: Any, rel: float | None = None) -> dict[str, float]:
    """Probe the step-0 model with perturbed weights; ``{interactions/noise_floor: x}``.

    With ``config.floor_draws = k > 1`` the floor is the mean over ``k`` draws (seeds
    ``seed .. seed + k - 1``) and their standard deviation is returned as well: one draw
    can be far from another (issue 23).

    Gives the floor to the stopper (``set_floor``) when it takes one. Returns ``{}`` (and
    measures nothing) when ``rel`` is None or 0, under sharded weights (lockstep probing),
    or when the measurement fails (with a warning: the stop then uses ``min_delta = 0``
    unless it was set).
    """
    if rel is None:
        rel = getattr(callback.config, "floor_perturbation", 1e-2)
    if not rel or callback.mode == "lockstep" or not callback.tracker.has_base:
        return {}
    draws = int(getattr(callback.config, "floor_draws", 1) or 1)
    try:
        floors = []
        for k in range(draws):  # draw k uses seed + k: draw 0 is the single-draw floor
            with perturbed_weights(model, float(rel), seed=int(callback.config.seed) + k):
                inter = callback.extractor.measure(model, callback.probes, base=True)
            floors.append(floor_of(callback.tracker, inter))
        floor = statistics.fmean(floors)
    except Exception as err:  # noqa: BLE001 - the floor is optional; never break training
        warnings.warn(
            f"interaction callback: measuring the noise floor failed ({type(err).__name__}: "
            f"{err}); min_delta falls back to its explicit value (0 by default)",
            stacklevel=2,
        )
        return {}
    set_floor = getattr(callback.stopper, "set_floor", None)
    if callable(set_floor):
        set_floor(floor)
    if draws > 1:
        return {NOISE_FLOOR_KEY: floor, NOISE_FLOOR_SD_KEY: statistics.stdev(floors)}
    return {NOISE_FLOOR_KEY: floor}
