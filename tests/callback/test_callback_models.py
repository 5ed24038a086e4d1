"""Reference models (object and path), sequence classifiers, and the callback's state."""

from __future__ import annotations

import json

import pytest
import torch

from sft_interaction_callback import InteractionCallback
from sft_interaction_callback.snapshots import load_tensors


@pytest.mark.parametrize("given", ["object", "path"])
def test_reference_model_gives_gamma_and_is_released(make_trainer, tmp_path, tokenizer, h, given):
    ref = h.tiny_gpt2(len(tokenizer))
    if given == "path":
        ref.save_pretrained(tmp_path / "ref")
        tokenizer.save_pretrained(tmp_path / "ref")
        ref = str(tmp_path / "ref")
    settings = {"schedule": 2, "reference_model": ref}
    trainer, cb = make_trainer(tmp_path / "out", settings, max_steps=4)
    trainer.train()

    for c in ("removed", "preserved", "emerged"):
        assert set(h.logged(trainer, f"interactions/{c}/count")) == {0, 2, 4}
    gammas = {k for e in trainer.state.log_history for k in e if k.endswith("/gamma")}
    assert gammas  # gamma is logged wherever its set is non-empty (NaN keys are left out)
    tensors, meta = load_tensors(tmp_path / "out" / "interactions" / "reference.safetensors")
    assert tensors["i_and"].shape == (2, 16) and meta["model"] == "GPT2LMHeadModel"
    assert cb.config.reference_model is None and cb.tracker.has_reference
    records = (tmp_path / "out" / "interactions" / "metrics.jsonl").read_text().splitlines()
    assert all("interactions/preserved/gamma" in json.loads(r) for r in records)


def test_step_zero_runs_with_adapters_disabled(make_trainer, tmp_path, tokenizer, h):
    import copy

    from sft_interaction_callback.probing import CausalLMValue

    model = h.tiny_llama(len(tokenizer))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=1.0)  # an adapter that already changes the output
    base = copy.deepcopy(model).unload().eval()
    trainer, cb = make_trainer(tmp_path, {"schedule": 5}, model=model, max_steps=1)
    trainer.train()
    v0, _ = load_tensors(tmp_path / "interactions" / "step-00000000.safetensors")
    expected = torch.stack([CausalLMValue(base, tokenizer)(p) for p in cb.probes])
    torch.testing.assert_close(v0["v"], expected, rtol=1e-4, atol=1e-4)
    adapted = torch.stack([CausalLMValue(model.eval(), tokenizer)(p) for p in cb.probes])
    assert not torch.allclose(adapted, expected, atol=1e-3)


def test_broken_reference_is_warned_and_ignored(make_trainer, tmp_path, h):
    with pytest.raises(ValueError, match="reference_model path .* does not exist"):
        make_trainer(tmp_path, {"reference_model": str(tmp_path / "missing")})
    broken = tmp_path / "broken"  # a model folder that exists but does not load
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    trainer, cb = make_trainer(
        tmp_path, {"schedule": 2, "reference_model": str(broken)}, max_steps=2
    )
    with pytest.warns(UserWarning, match="the reference model could not be probed"):
        trainer.train()
    assert not cb.tracker.has_reference
    assert sorted(h.logged(trainer, "interactions/noise")) == [0, 2]


def test_sequence_classifier(tmp_path, tokenizer, h):
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification, Trainer

    names = ["negative", "neutral", "positive"]
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=3,
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
        )
    )
    texts = [
        ("the movie was truly wonderful and moving tonight", 2),
        ("a dull boring film with terrible acting overall", 0),
        ("the food arrived late but tasted fine today", 1),
        ("amazing service friendly staff great prices everywhere", 2),
    ]
    rows = [{"text": t, "label": y} for t, y in texts]
    ds = Dataset.from_list(rows).map(lambda r: tokenizer(r["text"]))
    trainer = Trainer(
        model=model,
        args=h.training_args(tmp_path, max_steps=4, learning_rate=1e-3),
        train_dataset=ds,
        processing_class=tokenizer,
    )
    cb = InteractionCallback(trainer=trainer, schedule=2, **h.FAST)
    trainer.train()
    assert cb.extractor.kind == "classifier"
    assert {p.target for p in cb.probes} <= set(names)
    assert all(p.prompt in {t for t, _ in texts} for p in cb.probes)  # the raw text
    assert sorted(h.logged(trainer, "interactions/noise")) == [0, 2, 4]


def test_state_dict_round_trip(make_trainer, tmp_path, tokenizer):
    trainer, cb = make_trainer(tmp_path, {"schedule": 5}, max_steps=10)
    trainer.train()
    state = cb.state_dict()
    json.dumps({k: v for k, v in state.items() if k not in ("tracker", "tensors")})
    json.dumps(state["tracker"]["meta"])
    assert state["meta"]["probe_steps"] == [0, 5, 10] and state["meta"]["last_step"] == 10
    assert state["tensors"]["baseline"].shape == (32,)

    fresh = InteractionCallback(cb.config)
    fresh.load_state_dict(state, tokenizer=tokenizer)
    again = fresh.state_dict()
    assert again["meta"] == state["meta"] and again["stopper"] == state["stopper"]
    assert again["probes"] == state["probes"] and again["schedule"] == state["schedule"]
    for name, t in state["tracker"]["tensors"].items():
        assert torch.equal(again["tracker"]["tensors"][name], t), name
    assert torch.equal(fresh.extractor.baseline, cb.extractor.baseline)
    # The restored tracker continues exactly as the original would.
    base = state["tracker"]["tensors"]["base_interactions"]
    half = base.shape[-1] // 2
    a = cb.tracker.update(11, base[:, :half], base[:, half:])
    b = fresh.tracker.update(11, base[:, :half], base[:, half:])
    assert a.keys() == b.keys() and all(a[k] == b[k] or a[k] != a[k] for k in a)
    with pytest.raises(ValueError, match="unknown callback state format"):
        fresh.load_state_dict({"format": "other"})
