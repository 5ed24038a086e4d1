"""ProbeSchedule: the default rule, explicit specs and validation."""

from __future__ import annotations

import pytest

from sft_interaction_callback.tracking.schedule import ProbeSchedule


def test_default_without_run_length_is_dense_early_sparse_later():
    sched = ProbeSchedule()
    expected = (
        [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
        + [75, 100, 125, 150, 175, 200, 225, 250, 275, 300]
        + [400, 500, 600]
    )
    assert sched.steps(600) == expected
    assert sched.should_probe(0)
    assert sched.should_probe(1200) and not sched.should_probe(1250)
    assert not sched.should_probe(3) and not sched.should_probe(60)


@pytest.mark.parametrize("total", [8, 10, 20, 37, 50, 100, 300, 1000, 3000])
def test_default_gives_short_runs_enough_points_and_ends_on_the_last_step(total):
    steps = ProbeSchedule(None, max_steps=total).steps(total)
    assert steps[0] == 0 and steps[-1] == total
    assert len(steps) - 1 >= 8, steps
    assert steps == sorted(set(steps))


@pytest.mark.parametrize("total", [3000, 10_000, 50_000, 300_000, 2_000_000])
def test_default_does_not_let_probing_dominate_long_runs(total):
    sched = ProbeSchedule(None, max_steps=total)
    steps = sched.steps(total)
    assert len(steps) <= 100, len(steps)
    # The first (denoising) stage lives in absolute steps: the dense start is kept.
    assert steps[:6] == [0, 5, 10, 15, 20, 25]
    assert steps[-1] == total


def test_default_short_run_is_shrunk_not_truncated():
    # A 300-step run is scaled by 0.1: every step up to 5, every 3 up to 30, every 10 after.
    steps = ProbeSchedule(None, max_steps=300).steps(300)
    assert steps[:9] == [0, 1, 2, 3, 4, 5, 6, 9, 12]
    assert steps[-3:] == [280, 290, 300]
    # A 5-step run is probed at every step.
    assert ProbeSchedule(None, max_steps=5).steps(5) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("total", [None, 7, 120, 999, 4321])
def test_steps_and_should_probe_agree(total):
    sched = ProbeSchedule(None, max_steps=total)
    limit = 5000
    assert sched.steps(limit) == [s for s in range(limit + 1) if sched.should_probe(s)]


def test_every_k_steps():
    sched = ProbeSchedule(7)
    assert sched.steps(30) == [0, 7, 14, 21, 28]
    assert sched.should_probe(0) and sched.should_probe(70) and not sched.should_probe(71)
    assert ProbeSchedule(1).steps(3) == [0, 1, 2, 3]


def test_explicit_list_gives_exactly_those_steps_plus_the_base():
    sched = ProbeSchedule([30, 10, 10, 500])
    assert sched.steps(100) == [0, 10, 30]
    assert sched.steps(1000) == [0, 10, 30, 500]
    assert not sched.should_probe(20) and sched.should_probe(500)
    assert ProbeSchedule(range(3, 10, 3)).steps(10) == [0, 3, 6, 9]
    assert ProbeSchedule([]).steps(10) == [0]


def test_negative_steps_are_never_probed():
    assert not ProbeSchedule().should_probe(-5)
    assert not ProbeSchedule(5).should_probe(-5)


def test_bind_scales_the_default():
    sched = ProbeSchedule().bind(20)
    assert sched == ProbeSchedule(None, max_steps=20)
    assert sched.steps(20) == list(range(21))
    assert ProbeSchedule(4).bind(20).steps(20) == [0, 4, 8, 12, 16, 20]


@pytest.mark.parametrize("spec", [0, -3, True, 2.5, "5", [1, -2], [1.0, 2], [True], object()])
def test_invalid_specs_say_what_to_pass(spec):
    with pytest.raises(ValueError, match="int|list|None"):
        ProbeSchedule(spec)


@pytest.mark.parametrize("bad", [-1, 2.0, "10"])
def test_invalid_max_steps(bad):
    with pytest.raises(ValueError, match="max_steps"):
        ProbeSchedule(None, max_steps=bad)
    with pytest.raises(ValueError, match="max_steps"):
        ProbeSchedule().steps(bad)
