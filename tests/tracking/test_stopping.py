"""NoiseRiseStopper on synthetic curves, and the Stopper protocol."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sft_interaction_callback.keys import NOISE_KEY, REMOVED_FRACTION_KEY
from sft_interaction_callback.tracking import (
    InteractionTracker,
    Stopper,
)
from sft_interaction_callback.tracking import NoiseRiseStopper as _NoiseRiseStopper


def NoiseRiseStopper(**kw):  # noqa: N802 - the class under test, with the earlier defaults
    """The stopper with the previous stage test ("rate"), min_delta 0 and patience 3: these
    curves test that rule; the plateau test and the floor are in test_trusted_signal.py."""
    kw.setdefault("stage_test", "rate")
    kw.setdefault("min_delta", 0.0)
    kw.setdefault("patience", 3)
    return _NoiseRiseStopper(**kw)


def feed(stopper, steps, removed, noise):
    """Feed the curves point by point; return the decisions."""
    out = []
    for s, r, y in zip(steps, removed, noise, strict=True):
        metrics = {}
        if r is not None:
            metrics[REMOVED_FRACTION_KEY] = r
        if y is not None:
            metrics[NOISE_KEY] = y
        out.append(stopper.update(s, metrics))
    return out


# Removal saturates at step 40 and 50 (no growth for two points): stage 1 ends at 50.
STEPS = list(range(0, 200, 10))
REMOVED = [0.0, 0.5, 0.8, 0.9] + [0.9] * 16
# Noise rises strongly during stage 1 (must be ignored), is lowest at 60, then rises.
NOISE = [1.0, 2.0, 3.0, 4.0, 5.0, 0.2, 0.1, 0.15, 0.2, 0.25, 0.3] + [0.3] * 9


def test_stops_exactly_at_the_patience_th_rise_after_stage_one():
    stopper = NoiseRiseStopper(patience=3)
    decisions = feed(stopper, STEPS, REMOVED, NOISE)
    assert stopper.stage_ended_at == 50
    assert stopper.best == 0.1 and stopper.best_step == 60
    # Points 70, 80, 90 are above the minimum 0.1: the third one stops.
    assert decisions.index(True) == STEPS.index(90)
    assert all(decisions[STEPS.index(90) :])
    assert stopper.stop_step == 90
    assert "step 90" in stopper.reason and "70, 80, 90" in stopper.reason
    assert "ended at step 50" in stopper.stage_reason


def test_never_stops_while_removal_keeps_going():
    # Removal grows linearly (never saturates) while noise climbs all the time.
    steps = list(range(0, 1000, 10))
    removed = [min(1.0, 0.001 * s) for s in steps]
    noise = [0.01 * k for k in range(len(steps))]
    stopper = NoiseRiseStopper(patience=1)
    assert not any(feed(stopper, steps, removed, noise))
    assert stopper.in_first_stage and stopper.stop_step is None
    # Once removal stops (plateau at 1.0 from step 1000), the stage ends and it can stop.
    more = list(range(1000, 1100, 10))
    decisions = feed(stopper, more, [1.0] * len(more), [5 + 0.1 * k for k in range(len(more))])
    # 1000 still grows at the old rate; 1010 and 1020 are flat: two saturated points.
    assert stopper.stage_ended_at == 1020
    assert decisions.index(True) == more.index(1030)


def test_never_stops_if_nothing_is_removed():
    steps = list(range(0, 300, 10))
    stopper = NoiseRiseStopper(patience=1)
    assert not any(feed(stopper, steps, [0.0] * 30, [0.1 * k for k in range(30)]))
    assert "stage_min_fraction" in stopper.stage_reason


def test_stage_end_step_forces_the_end_of_stage_one():
    steps = list(range(0, 300, 10))
    stopper = NoiseRiseStopper(patience=2, stage_end_step=100)
    decisions = feed(stopper, steps, [0.0] * 30, [0.1 * k for k in range(30)])
    assert stopper.stage_ended_at == 100
    assert decisions.index(True) == steps.index(120)


def test_min_delta_counts_only_clear_rises():
    tail = [0.2, 0.25, 0.28, 0.31, 0.35, 0.4, 0.45]
    steps = STEPS[: 5 + len(tail)]
    noise = NOISE[:5] + tail
    stopper = NoiseRiseStopper(patience=3, min_delta=0.1)
    decisions = feed(stopper, steps, REMOVED[: len(steps)], noise)
    # min is 0.2 at step 50; 0.25 and 0.28 are within min_delta, 0.31/0.35/0.4 are not.
    assert stopper.stop_step == steps[5 + 5] == 100
    assert decisions.index(True) == 10


def test_patience_resets_on_a_return_to_the_minimum():
    tail = [0.2, 0.3, 0.3, 0.2, 0.3, 0.3, 0.3]  # bad, bad, back to min, bad x3
    steps = STEPS[: 5 + len(tail)]
    stopper = NoiseRiseStopper(patience=3)
    decisions = feed(stopper, steps, REMOVED[: len(steps)], NOISE[:5] + tail)
    assert stopper.stop_step == steps[-1] == 110
    assert decisions.count(True) == 1
    assert stopper.bad_steps == [90, 100, 110]


def test_nan_and_missing_values_neither_count_nor_reset():
    tail = [0.2, 0.3, 0.3, math.nan, None, float("inf"), 0.3]
    steps = STEPS[: 5 + len(tail)]
    stopper = NoiseRiseStopper(patience=3)
    decisions = feed(stopper, steps, REMOVED[: len(steps)], NOISE[:5] + tail)
    assert stopper.stop_step == steps[-1]
    assert decisions[:-1] == [False] * (len(steps) - 1)

    # A NaN removed fraction is no saturated point: the stage ends one point later.
    removed = [0.0, 0.5, 0.8, 0.9, math.nan, 0.9, 0.9]
    stopper = NoiseRiseStopper()
    feed(stopper, STEPS[:7], removed, [0.0] * 7)
    assert stopper.stage_ended_at == 60


def test_warmup_points_delay_the_end_of_stage_one():
    steps = list(range(0, 100, 10))
    removed = [0.0] + [0.9] * 9  # saturated from the first probe on
    early = NoiseRiseStopper(warmup_points=2)
    feed(early, steps, removed, [0.0] * 10)
    assert early.stage_ended_at == 30  # 10 is the jump; 20 and 30 are flat
    late = NoiseRiseStopper(warmup_points=5)
    feed(late, steps, removed, [0.0] * 10)
    assert late.stage_ended_at == 50


@pytest.mark.parametrize("amplitude", [0.06, 0.3, 1.0])
@pytest.mark.parametrize("spacing", [5, 25, 100])
def test_stage_end_tracks_saturation_independent_of_amplitude_and_spacing(amplitude, spacing):
    tau = 300.0
    steps = list(range(0, 6000, spacing))
    removed = [amplitude * (1 - math.exp(-s / tau)) for s in steps]
    stopper = NoiseRiseStopper()
    feed(stopper, steps, removed, [0.0] * len(steps))
    end = stopper.stage_ended_at
    assert end is not None
    saturation = 1 - math.exp(-end / tau)
    assert 0.9 <= saturation <= 0.995, (end, saturation)


def test_repeated_or_older_steps_are_ignored():
    stopper = NoiseRiseStopper(patience=3)
    feed(stopper, STEPS[:8], REMOVED[:8], NOISE[:8])  # through step 70: one bad point
    assert stopper.bad_steps == [70]
    assert stopper.update(70, {REMOVED_FRACTION_KEY: 0.9, NOISE_KEY: 9.0}) is False
    assert stopper.update(20, {REMOVED_FRACTION_KEY: 0.9, NOISE_KEY: 9.0}) is False
    assert stopper.bad_steps == [70]


def test_state_dict_round_trip_continues_identically():
    straight = NoiseRiseStopper(patience=3)
    expected = feed(straight, STEPS, REMOVED, NOISE)

    first = NoiseRiseStopper(patience=3)
    head = feed(first, STEPS[:8], REMOVED[:8], NOISE[:8])
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    resumed = NoiseRiseStopper(patience=3)
    resumed.load_state_dict(state)
    # A point fed again after the resume (same step) is ignored.
    assert resumed.update(STEPS[7], {REMOVED_FRACTION_KEY: 0.9, NOISE_KEY: 5.0}) is False
    tail = feed(resumed, STEPS[8:], REMOVED[8:], NOISE[8:])
    assert head + tail == expected
    assert resumed.stop_step == straight.stop_step == 90
    assert resumed.reason == straight.reason

    # Mid-stage-one state too (the saturation bookkeeping must survive).
    first = NoiseRiseStopper()
    feed(first, STEPS[:5], REMOVED[:5], NOISE[:5])  # step 40 saturated, 50 not yet fed
    resumed = NoiseRiseStopper()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    feed(resumed, STEPS[5:6], REMOVED[5:6], NOISE[5:6])
    assert resumed.stage_ended_at == 50

    with pytest.raises(ValueError, match="format"):
        resumed.load_state_dict({"format": "other"})


def test_status_is_loggable():
    stopper = NoiseRiseStopper()
    assert stopper.status()["stopper/stage"] == 1.0
    assert math.isnan(stopper.status()["stopper/best"])
    feed(stopper, STEPS[:8], REMOVED[:8], NOISE[:8])
    assert stopper.status() == {
        "stopper/stage": 2.0,
        "stopper/bad_points": 1.0,
        "stopper/best": 0.1,
        "stopper/min_delta": 0.0,
    }


def test_protocol():
    class EveryTen:
        def update(self, step, metrics):
            return step >= 10

    assert isinstance(NoiseRiseStopper(), Stopper)
    assert isinstance(EveryTen(), Stopper)
    assert not isinstance(object(), Stopper)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patience": 0},
        {"patience": 1.5},
        {"min_delta": -0.1},
        {"warmup_points": -1},
        {"stage_end_fraction": 0.0},
        {"stage_end_fraction": 1.5},
        {"stage_points": 0},
        {"stage_slowdown": -1},
        {"stage_min_fraction": 2.0},
        {"stage_end_step": -5},
        {"metric": 3},
    ],
)
def test_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        NoiseRiseStopper(**kwargs)


def _signal_and_noise(step: int):
    """n = 4, one probe: base noise fades by step 40, new cancelling noise grows after 100."""
    i_and = torch.zeros(1, 16, dtype=torch.float64)
    i_or = torch.zeros(1, 16, dtype=torch.float64)
    i_and[0, [1, 2, 4, 3]] = torch.tensor(
        [4.0, 3.0, 2.0, 1.0], dtype=torch.float64
    )  # low-order signal
    fade = max(0.0, 1 - step / 40)
    i_and[0, 7], i_and[0, 14], i_or[0, 11] = 1.5 * fade, -1.0 * fade, -0.5 * fade
    grow = max(0.0, (step - 100) / 50)
    i_and[0, 13], i_and[0, 15], i_or[0, 15] = 0.6 * grow, -0.6 * grow, 0.3 * grow
    return i_and, i_or


def test_tracker_and_stopper_together():
    tracker = InteractionTracker(categories="design", noise_signal="design")
    stopper = NoiseRiseStopper(patience=3)
    tracker.set_base(*_signal_and_noise(0))
    stopped = None
    for step in range(10, 400, 10):
        metrics = tracker.update(step, *_signal_and_noise(step))
        if stopper.update(step, metrics):
            stopped = step
            break
    # The base noise stays salient until it vanishes at 40 (removed fraction 0 -> 1), then
    # 50 and 60 are flat: stage 1 ends at 60. At 110 only OR {0,1,2,3} has emerged (alone,
    # it cannot cancel: noise 0); the AND pair passes the 0.05 * 4 threshold from 120 on.
    assert stopper.stage_ended_at == 60
    assert stopped == 140
    assert stopper.bad_steps == [120, 130, 140]
