"""InteractionTracker on hand-built interaction tables with known answers.

Subsets of n = 3 players by index: 1={0}, 2={1}, 3={0,1}, 4={2}, 5={0,2}, 6={1,2},
7={0,1,2}. Salience uses an absolute threshold of 0.5 so the salient sets are exact.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from sft_interaction_callback.andor import fit_and_or
from sft_interaction_callback.keys import NOISE_KEY, REMOVED_FRACTION_KEY
from sft_interaction_callback.tracking.tracker import InteractionTracker

N = 3
SIZE = 1 << N


def table(and_terms: dict[int, float], or_terms: dict[int, float] | None = None, n: int = N):
    """One probe: AND and OR tensors [1, 2**n] from {subset index: value}."""
    i_and = torch.zeros(1, 1 << n, dtype=torch.float64)
    i_or = torch.zeros(1, 1 << n, dtype=torch.float64)
    for s, x in and_terms.items():
        i_and[0, s] = x
    for s, x in (or_terms or {}).items():
        i_or[0, s] = x
    return i_and, i_or


def members(mask: torch.Tensor) -> set[str]:
    """{"A3", "O6", ...} from a [1, 2 * 2**n] mask."""
    half = mask.shape[-1] // 2
    return {
        ("A" if k < half else "O") + str(k % half) for k in mask[0].nonzero().flatten().tolist()
    }


# The base has a large empty-set term (never salient) and one sub-threshold term.
BASE = table({0: 5.0, 1: 0.1, 3: 2.0, 5: 1.0, 7: -1.0}, {6: 0.8})
# t1: A7 and O6 vanish; AND {1,2} and OR {0,1,2} appear (OR {1,2} is gone while
# AND {1,2} appears: types are matched separately).
T1 = table({0: 6.0, 3: 3.0, 5: 1.5, 6: -0.7, 7: 0.2}, {7: 0.6})
# t2: A5 drops below the threshold; O6 (salient at base, removed at t1) comes back.
T2 = table({0: 6.0, 3: 3.0, 5: 0.1, 6: -0.7}, {6: 0.9, 7: 0.6})
# t3: A5 comes back too.
T3 = table({0: 6.0, 3: 3.0, 5: 1.5, 6: -0.7}, {6: 0.9, 7: 0.6})
# Reference: A3 and O7 with the same sign, A6 with the opposite sign, A7 like the base.
REF = table({3: 1.0, 6: 0.5, 7: -2.0}, {7: 0.9})


#: DESIGN.md §5 categories and §7 noise (the options kept for comparison)
DESIGN = {"categories": "design", "noise_signal": "design"}


def tracker(**kw) -> InteractionTracker:
    """The DESIGN.md §5 / §7 definitions (raw categories, design noise) unless overridden;
    the debounced categories and the pooled signal are tested in test_trusted_signal.py."""
    kw.setdefault("salient_rel", None)
    kw.setdefault("salient_abs", 0.5)
    kw.setdefault("categories", "design")
    kw.setdefault("noise_signal", "design")
    return InteractionTracker(**kw)


def test_classification_over_three_checkpoints():
    tr = tracker()
    m0 = tr.set_base(*BASE)
    sets = tr.last_sets()
    assert members(sets["preserved"]) == {"A3", "A5", "A7", "O6"}
    assert members(sets["removed"]) == members(sets["emerged"]) == set()
    assert m0["interactions/preserved/count"] == 4 and m0["interactions/emerged/count"] == 0

    tr.update(1, *T1)
    sets = tr.last_sets()
    assert members(sets["removed"]) == {"A7", "O6"}
    assert members(sets["preserved"]) == {"A3", "A5"}
    assert members(sets["emerged"]) == {"A6", "O7"}

    tr.update(2, *T2)
    sets = tr.last_sets()
    assert members(sets["removed"]) == {"A5", "A7"}
    assert members(sets["preserved"]) == {"A3"}
    # O6 was salient at the base, vanished and came back: it is new, not preserved.
    assert members(sets["emerged"]) == {"A6", "O6", "O7"}

    m3 = tr.update(3, *T3)
    sets = tr.last_sets()
    # P_3 = P_2 & Omega_3: A5 is salient at t0 and t3 but was lost at t2.
    assert members(sets["preserved"]) == {"A3"}
    assert members(sets["removed"]) == {"A7"}
    assert members(sets["emerged"]) == {"A5", "A6", "O6", "O7"}
    assert m3["interactions/removed/count"] == 1
    assert m3["interactions/preserved/count"] == 1
    assert m3["interactions/emerged/count"] == 4
    assert tr.last_step == 3


def test_hand_computed_metrics_with_reference():
    tr = tracker(reference=REF, noise_min_order=2)
    tr.set_base(*BASE)
    tr.update(1, *T1)
    m = tr.update(2, *T2)
    total_0 = 2.0 + 1.0 + 1.0 + 0.8 + 0.1  # base, empty set excluded
    total_2 = 3.0 + 0.1 + 0.7 + 0.9 + 0.6
    approx = pytest.approx

    # removed = {A5 (+1), A7 (-1)}, measured on the base interactions
    assert m["interactions/removed/count"] == 2
    assert m["interactions/removed/strength"] == approx(2.0)
    assert m["interactions/removed/strength_norm"] == approx(2.0 / total_0)
    assert m["interactions/removed/rho"] == approx(0.0)  # +1 and -1 cancel
    assert m["interactions/removed/gamma"] == approx(0.5)  # only A7 is in the reference
    assert m["interactions/removed/mean_order"] == approx(2.5)
    assert m[REMOVED_FRACTION_KEY] == approx(2.0 / 4.8)

    # preserved = {A3 (+3)}
    assert m["interactions/preserved/strength"] == approx(3.0)
    assert m["interactions/preserved/strength_norm"] == approx(3.0 / total_2)
    assert m["interactions/preserved/rho"] == approx(1.0)
    assert m["interactions/preserved/gamma"] == approx(1.0)
    assert m["interactions/preserved/mean_order"] == approx(2.0)

    # emerged = {A6 (-0.7), O6 (+0.9), O7 (+0.6)}
    assert m["interactions/emerged/strength"] == approx(2.2)
    assert m["interactions/emerged/strength_norm"] == approx(2.2 / total_2)
    assert m["interactions/emerged/rho"] == approx(0.8 / 2.2)
    # A6 has the opposite sign in the reference, O6 is not salient there: only O7 counts.
    assert m["interactions/emerged/gamma"] == approx(0.6 / 2.2)
    assert m["interactions/emerged/mean_order"] == approx(7 / 3)

    # noise-like emerged (not shared by the reference) = {A6, O6}: rho = 0.2 / 1.6
    assert members(tr.last_sets()["noise"]) == {"A6", "O6"}
    assert m[NOISE_KEY] == approx((1 - 0.2 / 1.6) * 1.6 / total_2)
    assert m["interactions/total_strength"] == approx(total_2)


def test_noise_without_reference_uses_high_orders():
    tr = tracker()  # noise_min_order = 3
    tr.set_base(*BASE)
    tr.update(1, *T1)
    m = tr.update(2, *T2)
    # Emerged {A6, O6, O7}; only O7 = {0,1,2} has order >= 3, and alone it cannot cancel.
    assert members(tr.last_sets()["noise"]) == {"O7"}
    assert m[NOISE_KEY] == 0.0
    assert "interactions/emerged/gamma" not in m
    assert set(m) == set(tr.metric_keys())

    tr2 = tracker(noise_min_order=2)
    tr2.set_base(*BASE)
    tr2.update(1, *T1)
    m2 = tr2.update(2, *T2)
    total_2 = 5.3
    assert m2[NOISE_KEY] == pytest.approx((1 - 0.8 / 2.2) * 2.2 / total_2)


def test_histograms_of_the_last_point():
    tr = tracker()
    tr.set_base(*BASE)
    tr.update(1, *T1)
    tr.update(2, *T2)
    h = tr.last_histograms()
    assert h["removed"]["count"].tolist() == [0, 0, 1, 1]  # A5 order 2, A7 order 3
    assert h["removed"]["strength"].tolist() == pytest.approx([0, 0, 1.0, 1.0])
    assert h["emerged"]["count"].tolist() == [0, 0, 2, 1]
    assert h["emerged"]["strength"].tolist() == pytest.approx([0, 0, 1.6, 0.6])
    assert h["emerged"]["strength_norm"].tolist() == pytest.approx([0, 0, 1.6 / 5.3, 0.6 / 5.3])
    assert tr.last_histograms(reduce="none")["preserved"]["count"].shape == (1, N + 1)
    history = tr.histogram_history()
    assert [e["step"] for e in history] == [0, 1, 2]
    assert history[2]["emerged"]["count"] == [0, 0, 2, 1]
    json.dumps(history, allow_nan=False)


def _high_order_noise(scale: float, signs: tuple[float, float]):
    """n = 4: fixed low-order signal plus two emerged high-order terms of given signs."""
    signal = {1: 4.0, 2: 3.0, 3: 1.0}
    base = table(signal, n=4)
    terms = {**signal, 7: signs[0] * scale, 15: signs[1] * scale}  # orders 3 and 4
    return base, table(terms, n=4)


def test_noise_rises_with_cancelling_high_order_terms_and_ignores_scale():
    values = []
    for scale in (0.0, 0.5, 1.0, 2.0):
        base, now = _high_order_noise(scale, (1.0, -1.0))
        tr = InteractionTracker(**DESIGN)  # default relative threshold
        tr.set_base(*base)
        values.append(tr.update(10, *now)[NOISE_KEY])
    assert values[0] == 0.0
    assert values[0] < values[1] < values[2] < values[3]
    assert values[2] == pytest.approx(2.0 / 10.0)  # (1 - 0) * 2 / (4 + 3 + 1 + 2)

    # Same strength, same sign: no cancellation, so it does not look like noise.
    base, now = _high_order_noise(1.0, (1.0, 1.0))
    tr = InteractionTracker(**DESIGN)
    tr.set_base(*base)
    assert tr.update(10, *now)[NOISE_KEY] == 0.0

    # Multiplying the whole checkpoint by 20 (the output scale grows) changes nothing.
    base, now = _high_order_noise(1.0, (1.0, -1.0))
    tr = InteractionTracker(**DESIGN)
    tr.set_base(*base)
    big = tr.update(10, *(20 * t for t in now))
    assert big[NOISE_KEY] == pytest.approx(values[2])
    assert big["interactions/total_strength"] == pytest.approx(200.0)


def test_probe_averages_skip_undefined_values():
    # Probe 1 has no interactions at all: its rho/order/fraction are undefined.
    a0, o0 = BASE
    a1, o1 = T1
    a2, o2 = T2
    zeros = torch.zeros_like(a0)
    tr = tracker()
    tr.set_base(torch.cat((a0, zeros)), torch.cat((o0, zeros)))
    tr.update(1, torch.cat((a1, zeros)), torch.cat((o1, zeros)))
    m = tr.update(2, torch.cat((a2, zeros)), torch.cat((o2, zeros)))
    assert m["interactions/removed/count"] == pytest.approx(1.0)  # (2 + 0) / 2
    assert m["interactions/emerged/strength"] == pytest.approx(1.1)  # (2.2 + 0) / 2
    assert m["interactions/removed/rho"] == pytest.approx(0.0)  # probe 0 only
    assert m["interactions/emerged/rho"] == pytest.approx(0.8 / 2.2)
    assert m["interactions/emerged/mean_order"] == pytest.approx(7 / 3)
    assert m[REMOVED_FRACTION_KEY] == pytest.approx(2.0 / 4.8)
    assert m["interactions/emerged/strength_norm"] == pytest.approx(2.2 / 5.3 / 2)
    # Nothing removed anywhere: undefined everywhere -> NaN, but the key is there.
    tr.set_base(torch.cat((a0, zeros)), torch.cat((o0, zeros)))
    m0 = tr.update(1, torch.cat((a0, zeros)), torch.cat((o0, zeros)))
    assert math.isnan(m0["interactions/removed/rho"])
    assert m0["interactions/removed/count"] == 0.0 and m0[NOISE_KEY] == 0.0


def test_salient_scope_type_versus_joint():
    base = table({3: 10.0}, {6: 0.2})
    per_type = InteractionTracker(salient_rel=0.05)
    per_type.set_base(*base)
    assert members(per_type.last_sets()["preserved"]) == {"A3", "O6"}
    joint = InteractionTracker(salient_rel=0.05, salient_scope="joint")
    joint.set_base(*base)
    assert members(joint.last_sets()["preserved"]) == {"A3"}  # 0.2 < 0.05 * 10


def test_accepts_andor_interactions_objects():
    torch.manual_seed(0)
    v = torch.randn(2, 1 << 4, dtype=torch.float64)
    a = fit_and_or(v, iterations=200)
    b = fit_and_or(v + 0.5 * torch.randn_like(v), iterations=200)
    t1, t2 = InteractionTracker(reference=b), InteractionTracker(reference=(b.i_and, b.i_or))
    assert t1.set_base(a) == t2.set_base(a.i_and, a.i_or)
    assert t1.update(5, b) == t2.update(5, b.i_and, b.i_or)
    m = t1.update(6, b)
    assert m["interactions/removed/count"] + m["interactions/preserved/count"] == pytest.approx(
        float(t1.last_sets()["removed"].sum() + t1.last_sets()["preserved"].sum()) / 2
    )
    # The reference against itself: everything emerged is shared.
    assert m["interactions/emerged/gamma"] == pytest.approx(1.0)
    assert m[NOISE_KEY] == 0.0


def _assert_same(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k], k


def test_state_dict_round_trip_continues_identically(tmp_path):
    from safetensors.torch import load_file, save_file

    straight = tracker(reference=REF)
    straight.set_base(*BASE)
    straight.update(1, *T1)
    expected = [straight.update(2, *T2), straight.update(3, *T3)]

    first = tracker(reference=REF)
    first.set_base(*BASE)
    first.update(1, *T1)
    state = first.state_dict()
    save_file(state["tensors"], str(tmp_path / "tracker.safetensors"))
    (tmp_path / "tracker.json").write_text(json.dumps(state["meta"], allow_nan=False))

    resumed = tracker()  # no reference given: it comes back from the state
    resumed.load_state_dict(
        {
            "tensors": load_file(str(tmp_path / "tracker.safetensors")),
            "meta": json.loads((tmp_path / "tracker.json").read_text()),
        }
    )
    assert resumed.has_reference and resumed.last_step == 1
    assert resumed.last_histograms() is None
    got = [resumed.update(2, *T2), resumed.update(3, *T3)]
    for g, e in zip(got, expected, strict=True):
        _assert_same(g, e)
    assert members(resumed.last_sets()["preserved"]) == {"A3"}
    assert resumed.histogram_history() == straight.histogram_history()


def test_load_state_adopts_saved_settings_with_a_warning():
    tr = tracker()
    tr.set_base(*BASE)
    other = InteractionTracker(salient_rel=0.1)
    with pytest.warns(UserWarning, match="salient_rel"):
        other.load_state_dict(tr.state_dict())
    assert other.salient_rel is None and other.salient_abs == 0.5
    with pytest.raises(ValueError, match="format"):
        other.load_state_dict({"tensors": {}, "meta": {"format": "nope"}})


def test_input_validation():
    tr = tracker()
    with pytest.raises(RuntimeError, match="set_base"):
        tr.update(1, *T1)
    tr.set_base(*BASE)
    with pytest.raises(ValueError, match="probes"):
        tr.update(1, torch.cat(T1[:1] * 2), torch.cat(T1[1:] * 2))
    with pytest.raises(ValueError, match="players"):
        tr.update(1, *table({3: 1.0}, n=4))
    with pytest.raises(ValueError, match="2\\*\\*n"):
        tr.update(1, torch.zeros(1, 6), torch.zeros(1, 6))
    with pytest.raises(ValueError, match="NaN"):
        tr.update(1, torch.full((1, SIZE), math.nan), torch.zeros(1, SIZE))
    with pytest.raises(TypeError):
        tr.update(1, T1[0])
    tr.update(5, *T1)
    with pytest.raises(ValueError, match="go back"):
        tr.update(4, *T1)
    with pytest.raises(ValueError, match="players"):
        tr.set_reference(*table({3: 1.0}, n=4))
    with pytest.raises(ValueError):
        InteractionTracker(salient_rel=None, salient_abs=None)
    with pytest.raises(ValueError):
        InteractionTracker(salient_scope="both")
    with pytest.raises(ValueError):
        InteractionTracker(noise_min_order=0)


@pytest.mark.parametrize("scope", ["joint", "type"])
def test_empty_set_does_not_set_the_relative_threshold(scope):
    # A language model's I_and({}) = v({}) is the whole masked output (here -10), far above
    # every real interaction; the threshold must come from the non-empty subsets only.
    i_and, i_or = table({0: -10.0, 1: 0.3, 3: 0.2, 7: 0.004}, {6: 0.1})
    tr = InteractionTracker(salient_scope=scope)
    tr.set_base(i_and, i_or)
    assert members(tr.last_sets()["preserved"]) == {"A1", "A3", "O6"}


def test_match_type_false_tracks_subsets_across_types():
    from sft_interaction_callback.tracking import InteractionTracker

    size = 8
    i_and = torch.zeros(1, size)
    i_or = torch.zeros(1, size)
    i_and[0, 3] = 1.0  # {0, 1} as AND at step 0
    moved_and, moved_or = torch.zeros(1, size), torch.zeros(1, size)
    moved_or[0, 3] = 1.0  # the same subset as OR later
    by_type = InteractionTracker(0.05, **DESIGN)
    by_type.set_base(i_and, i_or)
    m = by_type.update(10, moved_and, moved_or)
    assert m["interactions/removed/count"] == 1 and m["interactions/emerged/count"] == 1
    by_subset = InteractionTracker(0.05, match_type=False, **DESIGN)
    by_subset.set_base(i_and, i_or)
    m = by_subset.update(10, moved_and, moved_or)
    assert m["interactions/removed/count"] == 0 and m["interactions/emerged/count"] == 0
    assert m["interactions/preserved/count"] == 1
