"""The knee stage test (issue 23): the denoising stage ends once the run has gone on for
``stage_multiple`` times as long as removal took to reach ``stage_knee`` of its max."""

from __future__ import annotations

import json

import pytest

from sft_interaction_callback.keys import NOISE_KEY, REMOVED_FRACTION_KEY
from sft_interaction_callback.tracking import NoiseRiseStopper


def feed(stopper, steps, removed, noise=None):
    noise = noise or [0.0] * len(steps)
    out = []
    for s, r, y in zip(steps, removed, noise, strict=True):
        metrics = {NOISE_KEY: y}
        if r is not None:
            metrics[REMOVED_FRACTION_KEY] = r
        out.append(stopper.update(s, metrics))
    return out


def knee(**kw):
    kw.setdefault("stage_test", "knee")
    kw.setdefault("min_delta", 0.0)
    return NoiseRiseStopper(**kw)


def brute_force_stage_end(steps, removed, q, k, warmup=2, min_fraction=0.05):
    """The definition, point by point, with nothing carried between points."""
    for i, t in enumerate(steps):
        seen = [(s, r) for s, r in zip(steps[: i + 1], removed[: i + 1], strict=True) if s > 0]
        if len(seen) < warmup or t <= 0:
            continue
        m = max(r for _, r in seen)
        if m < min_fraction:
            continue
        first = min(s for s, r in seen if r >= q * m)
        if t >= k * first:
            return t
    return None


def test_creeping_removal_still_hands_over():
    # real data (a MiniLM tuning run): removal jumps early, then keeps creeping up, so the
    # running max never levels off and the plateau test never ends the stage
    steps = [0, 5, 10, 20, 30, 45, 60, 90, 120, 150]
    removed = [0, 0, 0.036, 0.121, 0.243, 0.26, 0.294, 0.302, 0.334, 0.409]
    st = knee(stage_knee=0.8, stage_multiple=3.0)
    feed(st, steps, removed)
    # at step 90 the max is 0.302 and 0.243 >= 0.8 x 0.302: the knee is step 30
    assert st.stage_ended_at == 90
    assert "knee at step 30" in st.stage_reason
    plateau = NoiseRiseStopper(stage_test="plateau")
    feed(plateau, steps, removed)
    assert plateau.stage_ended_at is None


@pytest.mark.parametrize("q", [0.6, 0.8, 0.9])
@pytest.mark.parametrize("k", [1.5, 2.0, 3.0])
def test_matches_the_definition_on_random_curves(q, k):
    import random

    rng = random.Random(int(100 * q + 10 * k))
    for _ in range(50):
        steps = [0] + sorted(rng.sample(range(5, 400, 5), 12))
        removed = [0.0] + [max(0.0, rng.gauss(0.3, 0.2)) for _ in steps[1:]]
        st = knee(stage_knee=q, stage_multiple=k)
        feed(st, steps, removed)
        assert st.stage_ended_at == brute_force_stage_end(steps, removed, q, k)


def test_a_late_jump_moves_the_knee():
    steps = [0, 10, 20, 30, 40, 50, 60]
    removed = [0, 0.3, 0.3, 0.3, 0.3, 0.9, 0.9]
    st = knee(stage_knee=0.8, stage_multiple=10.0)
    feed(st, steps, removed)
    assert st.knee_step == 50 and st.stage_ended_at is None


def test_stage_points_does_not_delay_the_knee_test():
    steps = [0, 10, 20, 30, 40]
    removed = [0, 0.5, 0.5, 0.5, 0.5]
    for p in (1, 5):
        st = knee(stage_points=p, stage_multiple=3.0)
        feed(st, steps, removed)
        assert st.stage_ended_at == 30


def test_stops_after_the_stage_on_a_noise_rise():
    steps = [0, 10, 20, 30, 40, 60, 80]
    removed = [0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    noise = [0, 0.3, 0.3, 0.2, 0.1, 0.2, 0.3]
    st = knee(stage_knee=0.8, stage_multiple=3.0, patience=2)
    decisions = feed(st, steps, removed, noise)
    assert st.stage_ended_at == 30  # 30 >= 3 x 10
    assert st.best_step == 40
    assert decisions.index(True) == steps.index(80) and st.stop_step == 80


def test_state_round_trip_mid_stage():
    steps = [0, 10, 20, 30, 40, 60, 80]
    removed = [0, 0.2, 0.5, 0.5, 0.5, 0.5, 0.5]
    whole = knee()
    feed(whole, steps, removed)
    first = knee()
    feed(first, steps[:3], removed[:3])
    second = knee()
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    feed(second, steps[3:], removed[3:])
    assert second.stage_ended_at == whole.stage_ended_at == 80  # 4 x the knee at 20
    assert second.state_dict() == whole.state_dict()


def test_the_defaults_are_the_session_8_choice():
    st = NoiseRiseStopper()
    assert (st.stage_test, st.stage_knee, st.stage_multiple) == ("knee", 0.7, 4.0)
    assert st.floor_multiple == 0.0 and st.patience == 2 and st.restore == "removal_peak"
    st.set_floor(0.05)
    assert st.min_delta == 0.0


def test_old_state_without_history_loads():
    st = knee()
    state = st.state_dict()
    del state["r_history"]
    other = knee()
    other.load_state_dict(state)
    assert other.knee_step is None


@pytest.mark.parametrize(
    "kw",
    [{"stage_knee": 0.0}, {"stage_knee": 1.5}, {"stage_multiple": 0.5}, {"stage_test": "nope"}],
)
def test_refuses_bad_settings(kw):
    with pytest.raises(ValueError):
        NoiseRiseStopper(**kw)


def test_resuming_under_other_settings_warns_and_names_them():
    old = NoiseRiseStopper(stage_test="plateau", floor_multiple=3.0)
    feed(old, [0, 10, 20], [0, 0.3, 0.5])
    state = json.loads(json.dumps(old.state_dict()))
    assert state["settings"]["stage_test"] == "plateau"
    new = NoiseRiseStopper()
    with pytest.warns(UserWarning, match=r"stage_test='plateau' \(now 'knee'\)") as rec:
        new.load_state_dict(state)
    assert "floor_multiple=3.0 (now 0.0)" in str(rec[0].message)
    assert new.stage_test == "knee" and new.last_step == 20  # current settings, old state
    same = NoiseRiseStopper(stage_test="plateau", floor_multiple=3.0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same.load_state_dict(state)  # same settings: silent
