"""learn_baseline lowers the low-order interaction objective of DESIGN §2."""

from __future__ import annotations

import random

import torch

from sft_interaction_callback.probing import CausalLMValue, Probe, learn_baseline, select_players
from sft_interaction_callback.probing.baselines import interaction_loss, random_triples

PROMPTS = [
    "The keeper painted every stone blue before the long winter storms.",
    "Sailors trusted the bright coast lights during stormy nights.",
]


def test_random_triples_are_disjoint_and_small():
    rng = random.Random(0)
    for s1, s2, s3 in random_triples(6, 200, order=2, rng=rng):
        assert s1 and s2 and not (s1 & s2) and not (s1 & s3) and not (s2 & s3)
        assert max(bin(s).count("1") for s in (s1, s2, s3)) <= 2
        assert (s1 | s2 | s3) < 64


def test_learned_baseline_reduces_objective(make_tiny, tokenizer):
    model = make_tiny("llama")
    probes = [Probe(p, " yes", select_players(p, 4), id=str(i)) for i, p in enumerate(PROMPTS)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    vf = CausalLMValue(model, tokenizer, baseline="pad")
    b = learn_baseline(vf, tokenizer, probes, init="pad", steps=10, lr=0.05, samples_per_probe=4)
    assert b.shape == vf.baseline.shape and b.dtype == vf.baseline.dtype
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())

    rng = random.Random(123)  # fresh held-out subsets
    triples = {p.id: random_triples(4, 64, order=2, rng=rng) for p in probes}
    with torch.no_grad():
        loss0 = sum(interaction_loss(vf, p, vf.baseline, triples[p.id]) for p in probes)
        loss1 = sum(interaction_loss(vf, p, b, triples[p.id]) for p in probes)
    assert loss1 < 0.75 * loss0
    # the learned vector is usable as a baseline
    learned = CausalLMValue(model, tokenizer, baseline=b)(probes[0])
    assert torch.isfinite(learned).all()


def test_learn_baseline_from_model(make_tiny, tokenizer):
    model = make_tiny("qwen2")
    probes = [Probe(PROMPTS[0], " yes", select_players(PROMPTS[0], 3))]
    b = learn_baseline(model, tokenizer, probes, init="mean", steps=2)
    assert b.shape == (model.config.hidden_size,)
