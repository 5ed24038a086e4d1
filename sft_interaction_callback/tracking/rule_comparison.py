"""Where other stop rules would have stopped this run, replayed from its probe points.

A label-free stop is a bet; a user who also has a labelled evaluation can check it on
their own task if they see, side by side, where the rule they ran stopped, where its
neighbours (other patience values, other restore targets) would have stopped, and which
checkpoint each would have kept. Every rule here reads only the recorded probe points
(``metrics.jsonl``: the same metrics the stopper was given, and the step-0 floor), so the
replay is exact and costs nothing; no model is touched.

:func:`compare_rules` returns one row per rule; the callback writes them to
``interactions/rules.json`` at the end of training and the HTML report shows them beside
the Trainer's evaluation loss at each kept step.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from sft_interaction_callback.keys import NOISE_FLOOR_KEY
from sft_interaction_callback.tracking.stopping import RESTORE_RULES, STAGE_TESTS, NoiseRiseStopper

__all__ = ["compare_rules", "rule_variants"]

#: the patience values compared (the default is 2)
PATIENCES = (1, 2, 3, 4)


def _base_rule(stopper: Any) -> NoiseRiseStopper:
    """The run's rule (unwrapped from a shadow) when it is a ``NoiseRiseStopper``, else the
    default one: variants differ from it in one setting each."""
    inner = getattr(stopper, "inner", stopper)
    return inner if isinstance(inner, NoiseRiseStopper) else NoiseRiseStopper()


def rule_variants(stopper: Any) -> dict[str, NoiseRiseStopper]:
    """``{name: fresh stopper}``: the run's rule, then its patience, restore and stage-test
    variants."""
    base = _base_rule(stopper)

    def variant(**changes: Any) -> NoiseRiseStopper:
        rule = copy.deepcopy(base)
        for key, value in changes.items():
            setattr(rule, key, value)
        rule.reset()
        return rule

    out = {"this run's rule": variant()}
    for p in PATIENCES:
        if p != base.patience:
            out[f"patience {p}"] = variant(patience=p)
    for target in RESTORE_RULES:
        if target != base.restore:
            out[f"restore {target}"] = variant(restore=target)
    for test in STAGE_TESTS:
        if test != base.stage_test:
            out[f"stage test {test}"] = variant(stage_test=test)
    return out


def _replay(points: Sequence[Mapping[str, Any]], rule: NoiseRiseStopper) -> NoiseRiseStopper:
    """As the callback feeds its stopper: the floor measured at the base point (the first),
    then every later point in step order until the rule fires."""
    if points:
        floor = points[0].get(NOISE_FLOOR_KEY)
        if isinstance(floor, (int, float)):
            rule.set_floor(float(floor))
    for r in points[1:]:
        if rule.update(int(r["step"]), r):
            break
    return rule


def compare_rules(
    records: Sequence[Mapping[str, Any]], stopper: Any, max_steps: int | None
) -> list[dict[str, Any]]:
    """One row per rule: where it stops (None: never), the step whose checkpoint it keeps,
    the confirmed stage end, and the fraction of ``max_steps`` it trains."""
    points = sorted(
        (r for r in records if not r.get("skipped") and isinstance(r.get("step"), (int, float))),
        key=lambda r: int(r["step"]),
    )
    last = int(points[-1]["step"]) if points else 0
    planned = max_steps or last or None
    rows = []
    for name, rule in rule_variants(stopper).items():
        rule = _replay(points, rule)
        stop = rule.stop_step
        trained = stop if stop is not None else last
        rows.append(
            {
                "rule": name,
                "patience": rule.patience,
                "restore": rule.restore,
                "stage_test": rule.stage_test,
                "stop_step": stop,
                "kept_step": rule.restore_step if rule.restore_step is not None else trained,
                "stage_ended_at": rule.stage_ended_at,
                "fraction_of_steps": None if not planned else round(trained / planned, 4),
                "reason": rule.reason,
            }
        )
    return rows
