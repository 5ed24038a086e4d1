"""The early stop, and interaction noise as an evaluation metric for best-model selection."""

from __future__ import annotations

import json
import math

import pytest
from transformers import EarlyStoppingCallback, TrainerCallback

from sft_interaction_callback import NoiseRiseStopper
from sft_interaction_callback.snapshots import read_jsonl


def test_custom_stopper_ends_training_with_a_checkpoint(make_trainer, tmp_path, h):
    stopper = h.StopAt(10)
    trainer, cb = make_trainer(tmp_path, {"schedule": 5, "stopper": stopper})
    trainer.train()

    assert trainer.state.global_step == 10
    assert stopper.seen == [5, 10]  # step 0 is the base point, not a decision point
    assert (tmp_path / "checkpoint-10").is_dir()  # saved although save_strategy="no"
    assert cb.stop_step == 10
    assert h.logged(trainer, "interactions/stop_step") == {10: 10.0}
    assert 10 in h.logged(trainer, "loss")

    root = tmp_path / "interactions"
    stop = json.loads((root / "stop.json").read_text())
    assert stop["stop_step"] == 10 and stop["reason"] == "StopAt(10) fired"
    last = read_jsonl(root / "metrics.jsonl")[-1]
    assert last["step"] == 10 and last["interactions/stop_step"] == 10
    assert last["interactions/stop_reason"] == "StopAt(10) fired"


def test_early_stopping_off_never_asks_the_stopper(make_trainer, tmp_path, h):
    stopper = h.StopAt(0)
    trainer, cb = make_trainer(
        tmp_path, {"schedule": 5, "stopper": stopper, "early_stopping": False}, max_steps=10
    )
    trainer.train()
    assert trainer.state.global_step == 10 and stopper.seen == [] and cb.stop_step is None
    assert not (tmp_path / "interactions" / "stop.json").exists()


def test_default_stopper_is_a_noise_rise_stopper_and_logs_its_status(make_trainer, tmp_path, h):
    trainer, cb = make_trainer(tmp_path, {"schedule": 5, "patience": 2}, max_steps=10)
    trainer.train()
    assert isinstance(cb.stopper, NoiseRiseStopper) and cb.stopper.patience == 2
    assert set(h.logged(trainer, "interactions/stopper/stage")) == {0, 5, 10}
    assert cb.state_dict()["stopper"]["last_step"] == 10


def test_a_raising_stopper_does_not_stop_training(make_trainer, tmp_path):
    class Broken:
        def update(self, step, metrics):
            raise KeyError("oops")

    trainer, cb = make_trainer(tmp_path, {"schedule": 5, "stopper": Broken()}, max_steps=10)
    with pytest.warns(UserWarning, match="the stopper raised at step 5"):
        trainer.train()
    assert trainer.state.global_step == 10 and cb.stop_step is None


class Spy(TrainerCallback):
    """Records what every later callback sees in on_evaluate."""

    def __init__(self):
        self.seen = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.seen.append((state.global_step, metrics.get("eval_interaction_noise")))


@pytest.mark.parametrize("restore", ["min", "stage_end"])
def test_interaction_noise_selects_the_best_model(make_trainer, tmp_path, h, restore):
    spy = Spy()
    early = EarlyStoppingCallback(early_stopping_patience=100)
    # The stage ends at step 10 (forced here): no checkpoint before it can become "best".
    stopper = NoiseRiseStopper(stage_end_step=10, patience=100, restore=restore)
    trainer, cb = make_trainer(
        tmp_path,
        {"schedule": 5, "early_stopping": False, "stopper": stopper},
        callbacks=[early, spy],  # registered before the interaction callback
        eval_strategy="steps",
        eval_steps=5,
        save_strategy="steps",
        save_steps=5,
        metric_for_best_model="interaction_noise",
        greater_is_better=False,
        load_best_model_at_end=True,
        eval_on_start=True,
    )
    trainer.train()

    noise = h.logged(trainer, "interactions/noise")
    evals = h.logged(trainer, "eval_interaction_noise")
    assert sorted(evals) == [0, 5, 10, 15, 20] and sorted(noise) == [0, 5, 10, 15, 20]
    assert stopper.stage_ended_at == 10
    # before the stage end the metric is the worst value; from it on, the probe point's
    # noise ("min"), or only at the stage-end point ("stage_end": the restore target)
    assert evals[0] == evals[5] == math.inf
    after = [10, 15, 20] if restore == "min" else [10]
    assert [evals[s] for s in after] == [noise[s] for s in after]
    if restore == "stage_end":
        assert evals[15] == evals[20] == math.inf
    assert spy.seen == sorted(evals.items())
    best = min(v for s, v in noise.items() if s in after)
    assert trainer.state.best_metric == pytest.approx(best)
    best_step = min(s for s, v in noise.items() if s in after and v == best)
    assert best_step == stopper.restore_step  # the Trainer's best is restore-best's target
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    assert trainer.state.best_global_step == best_step >= 10
    assert trainer.callback_handler.callbacks[0] is cb
    # The stock EarlyStoppingCallback got the metric: replay its counter on the values.
    best, counter = None, 0
    for step, value in sorted(evals.items()):
        counter = 0 if best is None or value < best else counter + 1
        if step > 0 and (best is None or value < best):  # eval_on_start picks no best
            best = value
    assert early.early_stopping_patience_counter == counter


def test_restore_score_makes_the_trainer_pick_the_removal_peak(make_trainer, tmp_path, h):
    # the default target: load_best_model_at_end on the restore score keeps the checkpoint
    # restore-best would load (its own restore is off when load_best_model_at_end is set)
    stopper = NoiseRiseStopper(stage_end_step=10, patience=100)
    assert stopper.restore == "removal_peak"
    trainer, cb = make_trainer(
        tmp_path,
        {"schedule": 5, "stopper": stopper},
        eval_strategy="steps",
        eval_steps=5,
        save_strategy="steps",
        save_steps=5,
        metric_for_best_model="interaction_restore_score",
        load_best_model_at_end=True,
    )
    assert trainer.args.greater_is_better  # the Trainer's default for a non-loss name
    trainer.train()
    removed = h.logged(trainer, "interactions/removed/fraction")
    scores = h.logged(trainer, "eval_interaction_restore_score")
    assert sorted(scores) == [5, 10, 15, 20]
    assert all(scores[s] == pytest.approx(removed[s]) for s in scores)  # higher is better
    peak = max(removed[s] for s in scores)
    peak_step = min(s for s in scores if removed[s] == peak)
    assert stopper.restore_step == peak_step
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{peak_step}")
    assert getattr(cb, "restored_step", None) is None  # the Trainer restored, not the callback


def test_eval_metric_is_nan_when_needed_but_never_probed(make_trainer, tmp_path, h):
    trainer, cb = make_trainer(
        tmp_path,
        {"schedule": 5},
        max_steps=4,
        eval_strategy="steps",
        eval_steps=2,
        metric_for_best_model="interaction_noise",
        greater_is_better=False,
    )
    cb.progress.last_noise = None
    metrics = {"eval_loss": 1.0, "eval_runtime": 0.1, "eval_samples_per_second": 1.0}
    cb.on_log(trainer.args, trainer.state, trainer.control, logs=metrics)
    assert math.isnan(metrics["eval_interaction_noise"])
    plain = {"eval_loss": 1.0, "eval_runtime": 0.1, "eval_samples_per_second": 1.0}
    trainer.args.metric_for_best_model = "loss"
    cb.on_log(trainer.args, trainer.state, trainer.control, logs=plain)
    assert "eval_interaction_noise" not in plain
    named = {"eval_a_loss": 1.0, "eval_a_runtime": 0.1, "eval_a_samples_per_second": 1.0}
    cb.progress.last_noise = 0.25
    cb.on_evaluate(trainer.args, trainer.state, trainer.control, metrics=named)
    assert named["eval_a_interaction_noise"] == 0.25
    train_end = {"train_runtime": 1.0, "train_samples_per_second": 1.0}
    cb.on_log(trainer.args, trainer.state, trainer.control, logs=train_end)
    assert "train_interaction_noise" not in train_end
