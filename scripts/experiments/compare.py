"""Judging a stop after the fact: the stops people use today, replayed on logged curves.

A run that trains to the end while a stopping rule only *records* when it would have
fired (shadow mode) holds everything needed to compare stops: up to a stop step the run
is identical to one that really stopped there. These helpers replay the stock
``transformers.EarlyStoppingCallback`` on an evaluation curve and pick the best step in
hindsight, so the studies can compare the interaction stop with both on the same run;
:func:`interaction_summary` is the one summary of the interactions at a stop and at the
end that both studies report.

Only the experiment scripts use this module (it is not part of the package); they and
their tests load it from this folder.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sft_interaction_callback.keys import CATEGORIES, NOISE_KEY, REMOVED_FRACTION_KEY, category_key
from sft_interaction_callback.tracking.shadow import ProbePoints

#: Per-category metrics that the studies report at the stop and at the end.
SUMMARY_METRICS = ("count", "strength_norm", "rho", "gamma", "mean_order")


def patience_stop(
    evals: Mapping[int, float],
    *,
    patience: int = 3,
    threshold: float = 0.0,
    greater_is_better: bool = False,
) -> int | None:
    """The step at which ``EarlyStoppingCallback(patience, threshold)`` stops, or ``None``.

    Mirrors transformers: at every evaluation the patience counter resets when the metric
    beats the best so far by more than ``threshold`` and grows otherwise; training stops
    at the evaluation where the counter reaches ``patience``. The best-so-far is updated
    on every strict improvement, threshold or not (``Trainer._determine_best_metric``).
    ``evals`` maps step -> metric for the evaluations the Trainer ran (not ``eval_on_start``).
    """
    if patience < 1:
        raise ValueError(f"patience={patience}: use 1 or more")
    best: float | None = None
    counter = 0
    for step in sorted(evals):
        value = float(evals[step])
        if math.isnan(value):
            counter += 1
        else:
            better = best is None or (value > best if greater_is_better else value < best)
            if better and (best is None or abs(value - best) > threshold):
                counter = 0
            else:
                counter += 1
            if better:
                best = value
        if counter >= patience:
            return step
    return None


def best_step(
    evals: Mapping[int, float],
    *,
    greater_is_better: bool = True,
    until: int | None = None,
) -> int | None:
    """The earliest step with the best metric (among steps ``<= until`` when given)."""
    steps = [s for s in sorted(evals) if until is None or s <= until]
    steps = [s for s in steps if not math.isnan(float(evals[s]))]
    if not steps:
        return None
    pick = max if greater_is_better else min
    target = pick(float(evals[s]) for s in steps)
    return next(s for s in steps if float(evals[s]) == target)


def eval_loss_stop(
    loss: Mapping[int, float], every: int, max_steps: int, *, patience: int = 3
) -> tuple[int, int | None] | None:
    """``(stop, best)`` of ``EarlyStoppingCallback(patience)`` + ``load_best_model_at_end``
    on the eval losses at steps ``every, 2*every, ...`` (not step 0): the step where
    training ends (``max_steps`` when it never fires) and the lowest-loss step up to it.
    None when there is no such evaluation."""
    grid = {s: v for s, v in loss.items() if s > 0 and s % every == 0}
    if not grid:
        return None
    fired = patience_stop(grid, patience=patience)
    stop = fired if fired is not None else max_steps
    return stop, best_step(grid, greater_is_better=False, until=stop)


def value_at(series: Mapping[int, float], step: int | None) -> float | None:
    """The metric of the last evaluation at or before ``step`` (what a stopped run holds)."""
    if step is None:
        return None
    before = [s for s in series if s <= step]
    return float(series[max(before)]) if before else None


def mean_sd(values: Iterable[float | None]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count, ignoring ``None``/NaN."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return math.nan, math.nan, 0
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return statistics.fmean(xs), sd, len(xs)


def interaction_summary(
    points: ProbePoints,
    stop: int | None,
    end: int | None,
    metrics: Sequence[str] = SUMMARY_METRICS,
) -> dict[str, Any]:
    """The interactions at probe step ``stop`` and at ``end``: removal, categories, noise.

    ``removal`` compares the removed strength at the stop with the last probe point's
    (``share_before_stop``: how much of the final removal the stop had already seen);
    ``categories[c][at][m]`` is metric ``m`` of category ``c`` at ``at`` (``stop`` /
    ``end``); ``noise`` is the interaction noise signal. A step that is not a probe point
    gives None.
    """
    removed_stop, removed_end, share = points.removal(stop)
    at = (("stop", stop), ("end", end))
    return {
        "removal": {
            "share_before_stop": share,
            "removed_strength_at_stop": removed_stop,
            "removed_strength_at_end": removed_end,
            "removed_fraction_at_stop": points.metric(stop, REMOVED_FRACTION_KEY),
            "removed_fraction_at_end": points.metric(end, REMOVED_FRACTION_KEY),
        },
        "categories": {
            c: {
                when: {m: points.metric(step, category_key(c, m)) for m in metrics}
                for when, step in at
            }
            for c in CATEGORIES
        },
        "noise": {when: points.metric(step, NOISE_KEY) for when, step in at},
    }
