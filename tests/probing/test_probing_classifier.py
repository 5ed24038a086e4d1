"""SequenceClassifierValue on the real all-MiniLM-L6-v2 encoder (random 3-class head)."""

from __future__ import annotations

import pytest
import torch

from sft_interaction_callback.probing import Probe, SequenceClassifierValue, select_players

PROMPT = "The keeper painted every stone bright blue."


@pytest.fixture(scope="module")
def probe():
    return Probe(PROMPT, "positive", select_players(PROMPT, 4), id="c")


@pytest.mark.parametrize("baseline", ["pad", "unk", "mask", "zero", "mean", "tensor"])
def test_matches_brute_force(minilm_classifier, tokenizer, reference_classifier, probe, baseline):
    """Every subset for pad / an explicit tensor; the other named baselines on 3 players."""
    if baseline not in ("pad", "tensor"):
        probe = Probe(probe.prompt, probe.target, probe.players[:3], id=probe.id)
    if baseline == "tensor":
        baseline = 0.05 * torch.randn(384, generator=torch.Generator().manual_seed(2))
    vf = SequenceClassifierValue(
        minilm_classifier, tokenizer, label=1, baseline=baseline, batch_size=11
    )
    v = vf(probe)
    size = 1 << probe.n_players
    ref = reference_classifier(minilm_classifier, tokenizer, probe, vf.baseline, range(size), 1)
    assert v.dtype == torch.float32 and v.shape == (size,)
    assert torch.allclose(v.double(), ref, atol=1e-4, rtol=0)
    assert ref.std() > 1e-3


def test_label_by_name_id_or_target(minilm_classifier, tokenizer, probe):
    by_id = SequenceClassifierValue(minilm_classifier, tokenizer, label=2)(probe, [0, 15])
    by_name = SequenceClassifierValue(minilm_classifier, tokenizer, label="Positive")(
        probe, [0, 15]
    )
    from_target = SequenceClassifierValue(minilm_classifier, tokenizer)(probe, [0, 15])
    assert torch.equal(by_id, by_name) and torch.equal(by_id, from_target)
    # an explicit label wins over the target
    explicit = SequenceClassifierValue(minilm_classifier, tokenizer, label=0)(probe, [0, 15])
    assert not torch.allclose(explicit, by_id)
    # the three log-odds come from one softmax: at most one class has p > 1/2
    all3 = torch.stack(
        [
            SequenceClassifierValue(minilm_classifier, tokenizer, label=c)(probe, [15])
            for c in range(3)
        ]
    )
    assert (all3 > 0).sum() <= 1


def test_bad_labels(minilm_classifier, tokenizer):
    with pytest.raises(ValueError, match=r"'joy' is not a label of the model.*pass label="):
        SequenceClassifierValue(minilm_classifier, tokenizer, label="joy")
    with pytest.raises(ValueError, match="out of range"):
        SequenceClassifierValue(minilm_classifier, tokenizer, label=7)
    vf = SequenceClassifierValue(minilm_classifier, tokenizer)
    bad = Probe(PROMPT, "sarcastic", [(4, 10)], id="b7")
    with pytest.raises(ValueError, match=r"probe 'b7': target 'sarcastic' is not a label"):
        vf(bad)


def test_too_long_for_encoder(minilm_classifier, tokenizer):
    vf = SequenceClassifierValue(minilm_classifier, tokenizer, label=0)
    long = Probe("stone " * 600, "positive", [(0, 5)], id="L")
    with pytest.raises(ValueError, match=r"probe 'L'.*context of 512"):
        vf(long)


def test_learn_baseline_on_classifier(minilm_classifier, tokenizer, probe):
    from sft_interaction_callback.probing import learn_baseline

    vf = SequenceClassifierValue(minilm_classifier, tokenizer, label=1)
    b = learn_baseline(vf, tokenizer, [probe], init="mask", steps=2, samples_per_probe=2)
    assert b.shape == (384,) and not torch.equal(b, vf.baseline)
    assert all(p.grad is None for p in minilm_classifier.parameters())
