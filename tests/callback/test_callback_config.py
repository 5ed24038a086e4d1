"""InteractionConfig validation and the callback's constructor / attach API."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sft_interaction_callback import InteractionCallback, InteractionConfig
from sft_interaction_callback.probing import Probe

PROMPT = "Question: what colour is the big house near the river today?"


def test_top_level_exports_are_lazy_and_work():
    import sft_interaction_callback as pkg

    assert pkg.InteractionCallback is InteractionCallback
    assert pkg.InteractionConfig is InteractionConfig


def test_defaults_and_help():
    cfg = InteractionConfig()
    assert (cfg.num_probes, cfg.n_players, cfg.noise_bound, cfg.salient_rel) == (8, 8, 0.02, 0.05)
    assert cfg.salient_scope == "joint" and cfg.early_stopping and cfg.patience == 2
    assert cfg.output_subdir == "interactions" and cfg.baseline == "pad" and cfg.log_tables
    text = InteractionConfig.help()
    for f in dataclasses.fields(InteractionConfig):
        assert f.metadata.get("help"), f"field {f.name} has no help"
        assert f"\n{f.name} (default" in f"\n{text}"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_players": 21}, "n_players=21: use an int between 1 and 20"),
        ({"n_players": 0}, "n_players=0"),
        ({"n_players": True}, "n_players=True"),
        ({"num_probes": 0}, "num_probes=0: use an int >= 1"),
        ({"schedule": 0}, "schedule=0: a probe interval must be an int >= 1"),
        ({"schedule": "often"}, "schedule='often'"),
        ({"schedule": [5, -1]}, "non-negative ints"),
        ({"noise_bound": -0.1}, "noise_bound=-0.1: use a number >= 0"),
        ({"salient_rel": 0.0}, r"salient_rel=0.0: use a fraction in \(0, 1\]"),
        ({"salient_rel": 1.5}, "salient_rel=1.5"),
        ({"salient_abs": -1.0}, "salient_abs=-1.0"),
        ({"salient_scope": "both"}, "salient_scope='both'"),
        ({"stopper": object()}, "has no update\\(step, metrics\\) method"),
        ({"patience": 0}, "patience=0"),
        ({"min_delta": -1}, "min_delta=-1"),
        ({"baseline": "random"}, "baseline='random'"),
        ({"baseline": torch.zeros(2, 2)}, "1-D tensor"),
        ({"output_subdir": ""}, "output_subdir=''"),
        ({"output_subdir": "/abs"}, "relative folder"),
        ({"probe_batch_size": 0}, "probe_batch_size=0"),
        ({"solver": "magic"}, "solver='magic'"),
        ({"solver_options": 3}, "solver_options=3"),
        ({"reference_model": 3}, "reference_model=int"),
        ({"probes": []}, r"probes=\[\]"),
        ({"probes": "a prompt"}, "list of Probe objects"),
        ({"probes": [{"prompt": PROMPT}]}, r"probes\[0\] has no target"),
        ({"probes": [{"prompt": PROMPT, "target": "  "}]}, r"probes\[0\] has no target"),
        ({"probes": [{"target": "red"}]}, r"probes\[0\] has no prompt"),
        ({"probes": [42]}, r"probes\[0\] is a int"),
        ({"probes": [{"prompt": PROMPT, "target": "red", "players": [(0, 3)]}]}, "not a word"),
    ],
)
def test_misconfiguration_is_refused_with_a_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InteractionConfig(**kwargs)
    with pytest.raises(ValueError, match=match):
        InteractionCallback(**kwargs)


def test_probes_with_different_player_counts_are_refused():
    a = Probe(PROMPT, " red", [(15, 21), (29, 32)], id="a")
    b = Probe(PROMPT, " red", [(15, 21)], id="b")
    with pytest.raises(ValueError, match=r"different numbers of players \[1, 2\]"):
        InteractionConfig(probes=[a, b])
    assert InteractionConfig(probes=[a, {"prompt": PROMPT, "target": "red"}]).probes[0] is a


def test_stopper_needs_only_update():
    class Minimal:
        def update(self, step, metrics):
            return False

    assert isinstance(InteractionConfig(stopper=Minimal()).stopper, Minimal)


def test_unknown_override_names_the_closest_field():
    with pytest.raises(TypeError, match="'n_player' \\(did you mean 'n_players'\\?\\)"):
        InteractionCallback(n_player=4)


def test_config_and_overrides_make_a_new_validated_config():
    base = InteractionConfig(n_players=6, seed=3)
    cb = InteractionCallback(base, num_probes=2)
    assert (cb.config.n_players, cb.config.seed, cb.config.num_probes) == (6, 3, 2)
    assert base.num_probes == 8 and cb.config is not base
    with pytest.raises(ValueError, match="num_probes=0"):
        InteractionCallback(base, num_probes=0)
    with pytest.raises(TypeError, match="must be an InteractionConfig"):
        InteractionCallback({"n_players": 4})


def test_attach_registers_once_and_first(make_trainer, tmp_path):
    from transformers import DefaultFlowCallback

    trainer, _ = make_trainer(tmp_path)
    cb = InteractionCallback(n_players=4)
    assert cb.attach(trainer) is cb
    callbacks = trainer.callback_handler.callbacks
    assert callbacks[0] is cb and any(isinstance(c, DefaultFlowCallback) for c in callbacks)
    cb.attach(trainer)
    trainer.add_callback(cb)  # a user adding it again as well: kept once at train time
    from sft_interaction_callback.callback.trainer_link import put_first

    put_first(callbacks, cb)
    assert sum(c is cb for c in callbacks) == 1 and callbacks[0] is cb


def test_no_tokenizer_raises_at_train_begin(tmp_path, sft_dataset, tokenizer, h):
    from transformers import Trainer

    trainer = Trainer(
        model=h.tiny_llama(len(tokenizer)),
        args=h.training_args(tmp_path, max_steps=2),
        train_dataset=sft_dataset,
        data_collator=h.make_collator(tokenizer),
    )
    InteractionCallback(trainer=trainer, **h.FAST)
    with pytest.raises(ValueError, match="no tokenizer reachable.*processing_class=tokenizer"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_unusable_dataset_is_refused_when_attached(tmp_path, tokenizer, h):
    """Columns the callback cannot read are refused before training (and W&B) starts."""
    from datasets import Dataset
    from transformers import Trainer

    rows = Dataset.from_list([{"question": "why paint stones blue", "answer": "storms"}] * 4)
    trainer = Trainer(
        model=h.tiny_llama(len(tokenizer)),
        args=h.training_args(tmp_path, max_steps=2),
        train_dataset=rows,
        data_collator=h.make_collator(tokenizer),
        processing_class=tokenizer,
    )
    with pytest.raises(
        ValueError, match=r"columns are \['answer', 'question'\].*probes=\[\.\.\.\]"
    ):
        InteractionCallback(trainer=trainer, **h.FAST)
    assert trainer.state.global_step == 0
