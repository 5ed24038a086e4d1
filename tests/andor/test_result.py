"""AndOrInteractions as a self-describing result: save/load, top-k, lookup by words."""

from __future__ import annotations

import pytest
import torch

from sft_interaction_callback.andor import AndOrInteractions, fit_and_or

from .games import random_planted


def _fitted() -> AndOrInteractions:
    games = [random_planted(4, 2, 1, seed=s, noise=0.01) for s in range(3)]
    r = fit_and_or(torch.stack([g for g, _, _ in games]))
    r.probe_ids = ["a", "b", "c"]
    r.words = [["the", "cat", "sat", "mat"], ["x", "y", "z", "w"], ["ä", "ö", "[NAME]", "ü"]]
    r.step = 40
    return r


def test_save_load_round_trips_every_tensor_and_the_words_exactly(tmp_path):
    r = _fitted()
    r.lower_bound = r.objective() * 0.999
    r.gap = torch.full((3,), 1e-3, dtype=torch.float64)
    extra = {"salient": torch.rand(3, 32) > 0.5}
    path = r.save(tmp_path / "s.safetensors", extra=extra, meta={"seconds": 1.5})
    back = AndOrInteractions.load(path)
    for name in ("v", "i_and", "i_or", "p", "q", "lower_bound", "gap"):
        a, b = getattr(r, name), getattr(back, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert back.words == r.words and back.probe_ids == r.probe_ids
    assert back.step == 40 and back.n_players == 4
    assert back.meta == {"solver": "exact", "noise_bound": 0.02, "seconds": 1.5}
    extras, meta = AndOrInteractions.read_extras(path)
    assert torch.equal(extras["salient"], extra["salient"]) and meta == back.meta
    assert not list(tmp_path.glob("*.tmp")), "the atomic write leaves no temporary file"


def test_uncertified_results_round_trip_without_bounds(tmp_path):
    r = _fitted()
    r.lower_bound = r.gap = None
    back = AndOrInteractions.from_bytes(r.to_bytes())
    assert back.lower_bound is None and back.gap is None
    assert torch.equal(back.i_or, r.i_or)


def test_lookup_by_words_and_indices_agree():
    r = _fitted()
    s = 0b0110  # players 1 and 2
    assert r.lookup(0, ("cat", "sat")) == float(r.i_and[0, s])
    assert r.lookup(0, (1, 2), kind="or") == float(r.i_or[0, s])
    with pytest.raises(KeyError, match="not a player"):
        r.lookup(0, ("dog",))
    with pytest.raises(ValueError, match="kind"):
        r.lookup(0, ("cat",), kind="xor")


def test_top_k_ranks_by_strength_and_names_the_words():
    r = _fitted()
    top = r.top_k(5, probe=2)
    strengths = [abs(t.value) for t in top]
    assert strengths == sorted(strengths, reverse=True) and len(top) == 5
    both = r.concatenated()[2].abs()
    both[0] = both[16] = 0  # the empty set is left out
    assert strengths[0] == pytest.approx(float(both.max()))
    for t in top:
        table = r.i_and if t.kind == "and" else r.i_or
        assert t.value == float(table[2, t.subset]) and t.subset != 0
        assert t.words == tuple(r.words[2][i] for i in t.players)
    pooled = r.top_k(4)
    assert abs(pooled[0].value) >= max(abs(t.value) for t in top)


def test_indexing_keeps_metadata_aligned():
    r = _fitted()
    sub = r[torch.tensor([2, 0])]
    assert sub.probe_ids == ["c", "a"] and sub.words[0][2] == "[NAME]"
    assert torch.equal(sub.v[0], r.v[2])
    assert r[1:].probe_ids == ["b", "c"] and r[1].probe_ids == ["b"]
