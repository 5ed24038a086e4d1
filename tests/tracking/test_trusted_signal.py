"""Issue 13: debounced categories, the pooled noise signal, the plateau stage test and the
stopper's restore target, on hand-built tables with known answers (n = 3 players)."""

from __future__ import annotations

import math

import pytest
import torch

from sft_interaction_callback.keys import NOISE_DESIGN_KEY, NOISE_KEY, REMOVED_FRACTION_KEY
from sft_interaction_callback.tracking import InteractionTracker
from sft_interaction_callback.tracking import NoiseRiseStopper as _NoiseRiseStopper
from sft_interaction_callback.tracking.shadow import ShadowStopper


def NoiseRiseStopper(**kw):  # noqa: N802 - the class under test, with issue 13's rule
    """Issue 13's rule (the default of sessions 5-7): the plateau stage test and
    ``min_delta`` = 3x the floor; the knee test (session 8) is in test_knee_stage.py."""
    kw.setdefault("stage_test", "plateau")
    kw.setdefault("floor_multiple", 3.0)
    return _NoiseRiseStopper(**kw)


SIZE = 8  # 2**3 subsets; index = bit set of players


def table(*probes: dict[int, float]):
    """AND tables [num_probes, 8] from {subset: value} per probe; OR all zero."""
    i_and = torch.zeros(len(probes), SIZE, dtype=torch.float64)
    for p, terms in enumerate(probes):
        for s, x in terms.items():
            i_and[p, s] = x
    return i_and, torch.zeros_like(i_and)


def tracker(categories: str = "debounced", **kw) -> InteractionTracker:
    return InteractionTracker(None, 0.5, categories=categories, **kw)


def members(mask: torch.Tensor, probe: int = 0) -> set[int]:
    return set(mask[probe, :SIZE].nonzero().flatten().tolist())


BASE = table({1: 2.0, 3: 1.0, 6: 1.0})
FLICKER = table({1: 2.0, 3: 0.1, 6: 1.0})  # A3 dips below the threshold at one point
GONE = table({1: 2.0, 6: 1.0})  # A3 really removed
NEW = table({1: 2.0, 3: 1.0, 6: 1.0, 7: 1.0})  # A7 (order 3) appears


def test_one_flicker_changes_no_category_and_does_not_ratchet():
    design, debounced = tracker("design"), tracker()
    for tr in (design, debounced):
        tr.set_base(*BASE)
        tr.update(1, *FLICKER)
    assert members(design.last_sets()["removed"]) == {3}
    assert members(debounced.last_sets()["removed"]) == set()  # one point is not enough
    for tr in (design, debounced):
        tr.update(2, *BASE)
    # the design's ratchet: A3 is back but can only count as emerged
    assert members(design.last_sets()["emerged"]) == {3}
    assert members(debounced.last_sets()["preserved"]) == {1, 3, 6}
    assert members(debounced.last_sets()["emerged"]) == set()


def test_real_changes_count_after_two_consecutive_points():
    tr = tracker()
    tr.set_base(*BASE)
    assert tr.update(1, *GONE)["interactions/removed/count"] == 0
    m = tr.update(2, *GONE)
    assert members(tr.last_sets()["removed"]) == {3} and m["interactions/removed/count"] == 1
    assert m[REMOVED_FRACTION_KEY] == pytest.approx(1.0 / 4.0)

    tr = tracker()
    tr.set_base(*BASE)
    tr.update(1, *NEW)
    assert members(tr.last_sets()["emerged"]) == set()
    tr.update(2, *NEW)
    assert members(tr.last_sets()["emerged"]) == {7}


def test_refeeding_a_step_and_state_round_trip_keep_the_debounce():
    tr = tracker()
    tr.set_base(*BASE)
    tr.update(1, *GONE)
    tr.update(1, *GONE)  # the same point again (a resume re-probe) is not a second point
    assert members(tr.last_sets()["removed"]) == set()
    copy = tracker()
    copy.load_state_dict(tr.state_dict())
    for t in (tr, copy):
        t.update(2, *GONE)
    assert members(copy.last_sets()["removed"]) == members(tr.last_sets()["removed"]) == {3}


def test_pooled_signal_has_no_zero_floor():
    # probe 0: one emerged order-3 interaction (alone it cannot cancel: 1 - rho = 0);
    # probe 1: an empty noise set. The design signal is exactly 0, the pooled one is not.
    base = table({1: 2.0, 3: 1.0}, {1: 2.0, 3: 1.0})
    now = table({1: 2.0, 3: 1.0, 7: 1.0}, {1: 2.0, 3: 1.0})
    tr = tracker("design")  # raw categories: the noise set is there at the first point
    tr.set_base(*base)
    m = tr.update(1, *now)
    assert m[NOISE_DESIGN_KEY] == 0.0
    assert m[NOISE_KEY] == pytest.approx(1.0 / (4.0 + 3.0))  # pooled: 1 / (4 + 3)
    assert tr.last_noise().tolist() == pytest.approx([0.25, 0.0])
    design = tracker("design", noise_signal="design")
    design.set_base(*base)
    assert design.update(1, *now)[NOISE_KEY] == 0.0


def _feed(stopper, removed, noise=None, start=10, every=10):
    out = []
    for k, r in enumerate(removed):
        y = 0.5 if noise is None else noise[k]
        out.append(stopper.update(start + k * every, {REMOVED_FRACTION_KEY: r, NOISE_KEY: y}))
    return out


def test_removal_peak_is_kept_from_the_first_point_and_restored_after_the_stage_end():
    # removal peaks at step 50 (0.9; 0.9 again at 80: the earliest wins), before the
    # plateau test confirms the stage end; a higher value after the stop does not count
    removed = [0.2, 0.6, 0.85, 0.88, 0.9, 0.86, 0.87, 0.9, 0.88, 0.88, 0.88, 0.95]
    noise = [0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.4, 0.5, 0.6, 0.7]
    s = NoiseRiseStopper(patience=2, min_delta=0.05)
    keep, restore = [], []
    for k, (r, y) in enumerate(zip(removed, noise, strict=True)):
        s.update(10 + 10 * k, {REMOVED_FRACTION_KEY: r, NOISE_KEY: y})
        keep.append(s.keep_step)
        restore.append(s.restore_step)
    assert keep[:5] == [10, 20, 30, 40, 50]  # a new candidate at every new maximum
    assert s.stage_ended_at == 70  # confirmed after the peak at 50
    assert restore[:6] == [None] * 6 and restore[6] == 50
    assert s.stop_step == 100 and s.restore_step == 50 and s.removal_peak == 0.9
    assert s.best_step == 70  # the stop still reads the noise minimum since the stage end
    resumed = NoiseRiseStopper(patience=2, min_delta=0.05)
    resumed.load_state_dict(s.state_dict())
    assert (resumed.removal_peak_step, resumed.restore_step) == (50, 50)
    # a state saved before session 6 (no removal peak) loads with no candidate yet
    old = s.state_dict()
    del old["removal_peak"], old["removal_peak_step"]
    resumed.load_state_dict(old)
    assert resumed.removal_peak_step is None and resumed.restore_step is None
    # the other targets keep their meaning; keep_step is their restore step
    by_min = NoiseRiseStopper(patience=2, min_delta=0.05, restore="min")
    _feed(by_min, removed, noise)
    assert by_min.restore_step == by_min.keep_step == 70


def test_plateau_stage_end_ignores_a_single_dip():
    smooth = [0.2, 0.4, 0.55, 0.6, 0.6, 0.61, 0.61, 0.61, 0.61, 0.61, 0.61]
    dipped = list(smooth)
    dipped[4] = 0.2  # one noisy point far below the plateau, before the stage ends
    ends = []
    for curve in (smooth, dipped):
        s = NoiseRiseStopper(patience=100)
        _feed(s, curve)
        ends.append(s.stage_ended_at)
    assert ends[0] is not None and ends[0] == ends[1]
    # the previous rule resets on the dip and ends the stage later
    rate = [NoiseRiseStopper(patience=100, stage_test="rate") for _ in range(2)]
    for s, curve in zip(rate, (smooth, dipped), strict=True):
        _feed(s, curve)
    assert rate[1].stage_ended_at > rate[0].stage_ended_at


def test_plateau_waits_while_removal_keeps_growing():
    s = NoiseRiseStopper()
    _feed(s, [0.1 * k for k in range(1, 11)])
    assert s.stage_ended_at is None


def test_min_delta_is_a_multiple_of_the_floor_and_the_restore_step():
    s = NoiseRiseStopper(patience=2, restore="last_good")
    assert s.min_delta == 0.0
    s.set_floor(0.01)
    assert s.min_delta == pytest.approx(0.03) and s.status()["stopper/min_delta"] == 0.03
    s.set_floor(math.nan)  # ignored
    assert s.floor == 0.01
    removed = [0.5] * 12
    noise = [0.9, 0.9, 0.9, 0.9, 0.2, 0.1, 0.12, 0.125, 0.2, 0.25, 0.3, 0.3]
    decisions = _feed(s, removed, noise)
    assert s.stage_ended_at == 30  # two saturated points (20, 30) after the warm-up
    # the last point within min_delta of the running minimum (0.1 at step 60) before the rise
    assert s.restore_step == 80 and s.best_step == 60
    # 0.12 and 0.125 stay within min_delta of 0.1: not bad; 0.2 and 0.25 are
    assert s.stop_step == 100 and decisions.index(True) == 9
    restored = NoiseRiseStopper(patience=2, restore="last_good")
    restored.load_state_dict(s.state_dict())
    assert restored.floor == 0.01 and restored.restore_step == 80
    by_min = NoiseRiseStopper(patience=2, restore="min")
    by_min.set_floor(0.01)
    _feed(by_min, removed, noise)
    assert by_min.restore_step == 60  # the minimum itself
    assert NoiseRiseStopper().restore == "removal_peak"  # the default (session 6)
    at_stage_end = NoiseRiseStopper(patience=2, restore="stage_end")
    at_stage_end.set_floor(0.01)
    _feed(at_stage_end, removed, noise)
    assert at_stage_end.stop_step == 100 and at_stage_end.restore_step == 30  # the stage end
    with pytest.raises(ValueError, match="restore must be one of"):
        NoiseRiseStopper(restore="best")


def test_shadow_stopper_records_the_restore_step_at_the_stop():
    shadow = ShadowStopper(NoiseRiseStopper(patience=1, min_delta=0.0, restore="min"))
    removed = [0.5] * 8
    noise = [0.9, 0.9, 0.9, 0.9, 0.1, 0.2, 0.05, 0.3]
    assert not any(_feed(shadow, removed, noise))
    assert shadow.stop_step == 60 and shadow.restore_step == 50
    assert shadow.stage_ended_at == 30
