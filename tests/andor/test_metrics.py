"""Salience, classification, rho, gamma and order histograms on hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from sft_interaction_callback.andor import (
    classify,
    generalizability,
    order_histogram,
    salient,
    strength,
    uncancelled_ratio,
)


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_salient_relative_threshold_never_marks_empty_set():
    # n = 2: subsets {}, {0}, {1}, {0,1}
    # the empty set (100) neither counts nor sets the threshold: tau = 0.05 * 1.0
    i = t(100.0, 1.0, -0.04, 0.05)
    assert salient(i).tolist() == [False, True, False, True]
    i = t(0.0, 1.0, -0.04, 0.05)
    assert salient(i).tolist() == [False, True, False, True]  # 0.05 >= 0.05 * 1
    assert salient(i, rel=0.5).tolist() == [False, True, False, False]


def test_salient_absolute_and_combined_thresholds():
    i = t(0.0, 1.0, -0.3, 0.2)
    assert salient(i, rel=None, abs=0.25).tolist() == [False, True, True, False]
    # both: the larger threshold wins (0.5 * 1.0 = 0.5 > 0.25)
    assert salient(i, rel=0.5, abs=0.25).tolist() == [False, True, False, False]
    with pytest.raises(ValueError, match="threshold"):
        salient(i, rel=None, abs=None)


def test_salient_on_concatenated_and_or_skips_both_empty_sets():
    i = torch.cat([t(5.0, 1.0, 1.0, 1.0), t(5.0, 0.0, 0.0, 1.0)])
    assert salient(i, rel=0.1, concatenated=True).tolist() == [
        False,
        True,
        True,
        True,
        False,
        False,
        False,
        True,
    ]
    # as one table of 3 players only index 0 is the empty set
    assert salient(i, rel=0.1)[4].item()


def test_all_zero_probe_has_no_salient_subset():
    assert not salient(torch.zeros(2, 8)).any()


def test_uncancelled_ratio_hand_computed():
    i = t(0.0, 3.0, -1.0, 2.0)
    mask = torch.tensor([False, True, True, True])
    assert uncancelled_ratio(i, mask).item() == pytest.approx(4.0 / 6.0)
    cancel = torch.tensor([False, False, True, False]) | torch.tensor([False, True, False, False])
    assert uncancelled_ratio(t(0.0, 1.0, -1.0, 0.0), cancel).item() == pytest.approx(0.0)
    assert math.isnan(uncancelled_ratio(i, torch.zeros(4, dtype=torch.bool)).item())
    assert strength(i, mask).item() == pytest.approx(6.0)


def test_generalizability_hand_computed():
    i = t(0.0, 3.0, -1.0, 2.0)
    mask = torch.tensor([False, True, True, True])
    ref = t(0.0, 5.0, 1.0, 0.5)  # {0}: same sign; {1}: opposite; {0,1}: same sign
    ref_mask = torch.tensor([False, True, True, False])  # {0,1} not salient for the reference
    # only {0} is shared with the same sign: gamma = 3 / 6
    assert generalizability(i, mask, ref, ref_mask).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same players"):
        generalizability(i, mask, t(1.0, 2.0), torch.ones(2, dtype=torch.bool))


def test_order_histogram_counts_and_strengths():
    # n = 3; orders: 0:{} 1:{0} 1:{1} 2:{0,1} 1:{2} 2:{0,2} 2:{1,2} 3:{0,1,2}
    i = t(9.0, 1.0, -2.0, 3.0, 0.0, -4.0, 0.5, 6.0)
    mask = torch.tensor([True, True, True, True, False, True, False, True])
    counts, strengths = order_histogram(i, mask)
    assert counts.tolist() == [1.0, 2.0, 2.0, 1.0]
    assert strengths.tolist() == [9.0, 3.0, 7.0, 6.0]
    both_counts, _ = order_histogram(torch.cat([i, i]), torch.cat([mask, mask]), concatenated=True)
    assert both_counts.tolist() == [2.0, 4.0, 4.0, 2.0]


def test_classify_follows_design_recursion():
    base = torch.tensor([False, True, True, True, False])
    # checkpoint 1: {1} disappears, {4} emerges
    cur1 = torch.tensor([False, True, False, True, True])
    r1, p1, e1 = classify(base, base, cur1)
    assert r1.tolist() == [False, False, True, False, False]
    assert p1.tolist() == [False, True, False, True, False]
    assert e1.tolist() == [False, False, False, False, True]
    # checkpoint 2: {2} reappears -> emerged again, not preserved; {3} drops out
    cur2 = torch.tensor([False, True, True, False, True])
    r2, p2, e2 = classify(base, p1, cur2)
    assert r2.tolist() == [False, False, False, True, False]
    assert p2.tolist() == [False, True, False, False, False]
    assert e2.tolist() == [False, False, True, False, True]
    with pytest.raises(ValueError, match="one shape"):
        classify(base, base, cur1[:3])


def test_metrics_are_batched_per_probe():
    i = torch.stack([t(0.0, 1.0, 1.0, 0.0), t(0.0, 1.0, -1.0, 0.0)])
    mask = salient(i)
    assert uncancelled_ratio(i, mask).tolist() == pytest.approx([1.0, 0.0])


def test_classify_by_subset_keeps_an_interaction_that_changes_type():
    n = 2
    size = 1 << n
    base = torch.zeros(1, 2 * size, dtype=torch.bool)
    now = torch.zeros_like(base)
    base[0, 3] = True  # {0, 1} salient as AND at step 0
    now[0, size + 3] = True  # ... and as OR now
    now[0, 1] = True  # {0} newly salient
    r, p, e = classify(base, base, now)
    assert r[0, 3] and e[0, size + 3] and not p.any()
    r, p, e = classify(base, base, now, by_subset=True)
    assert not r.any() and p[0, size + 3] and not p[0, 3]
    assert e[0, 1] and int(e.sum()) == 1
