"""restore_best: the weights after ``train()`` are those of the best checkpoint after the
stage end (LoRA and full fine-tuning), a resumed run keeps the best-so-far, and the floor
measurement leaves the model, its gradients and every RNG exactly as they were."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from support import PickStep

from sft_interaction_callback import NoiseRiseStopper
from sft_interaction_callback.callback.noise_floor import perturbed_weights
from sft_interaction_callback.keys import REMOVED_FRACTION_KEY
from sft_interaction_callback.tracking.shadow import ShadowStopper


def _saved(folder, lora: bool) -> dict[str, torch.Tensor]:
    name = "adapter_model.safetensors" if lora else "model.safetensors"
    return load_file(str(folder / name))


def _current(model, lora: bool) -> dict[str, torch.Tensor]:
    if lora:
        from peft import get_peft_model_state_dict

        return {k: v.detach() for k, v in get_peft_model_state_dict(model).items()}
    return {k: v.detach() for k, v in model.state_dict().items()}


def _same(saved: dict, now: dict) -> bool:
    return all(torch.equal(saved[k], now[k]) for k in saved)


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_train_ends_with_the_weights_of_the_best_checkpoint(
    make_trainer, tokenizer, tmp_path, h, lora
):
    model = h.tiny_llama(len(tokenizer), lora=lora)
    trainer, cb = make_trainer(
        tmp_path, {"schedule": 5, "stopper": PickStep(best=10, stop=15)}, model=model, max_steps=20
    )
    trainer.train()
    assert trainer.state.global_step == 15 and cb.stop_step == 15
    best, last = tmp_path / "checkpoint-10", tmp_path / "checkpoint-15"
    assert best.is_dir() and last.is_dir()  # saved at the best point although save_strategy="no"
    now = _current(trainer.model, lora)
    assert _same(_saved(best, lora), now)
    assert not _same(_saved(last, lora), now)  # training moved on after step 10
    assert cb.restored_step == 10
    note = json.loads((tmp_path / "interactions" / "restore.json").read_text())
    assert note["restore_step"] == 10


def test_no_restore_and_no_extra_checkpoint_when_off(make_trainer, tmp_path):
    trainer, cb = make_trainer(
        tmp_path, {"schedule": 5, "stopper": PickStep(10, 15), "restore_best": False}, max_steps=20
    )
    trainer.train()
    assert not (tmp_path / "checkpoint-10").exists()  # no extra checkpoint either
    assert getattr(cb, "restored_step", None) is None


@pytest.mark.parametrize("restore", ["min", "removal_peak"])
def test_resume_keeps_the_best_so_far(make_trainer, tmp_path, h, restore):
    kw = {"schedule": 5, "min_delta": 0.0}
    first_stopper = NoiseRiseStopper(stage_end_step=5, patience=100, restore=restore)
    trainer, cb = make_trainer(
        tmp_path, {**kw, "stopper": first_stopper}, save_strategy="steps", save_steps=5
    )
    trainer.train()
    target = cb.restored_step
    if restore == "min":
        assert target is not None and 5 <= target < 15  # before the resume point below
        noise = h.logged(trainer, "interactions/noise")
        assert noise[target] == min(v for s, v in noise.items() if s >= 5)
    else:  # the earliest peak of the removed share over every probe point after step 0
        removed = h.logged(trainer, "interactions/removed/fraction")
        peak = max(v for s, v in removed.items() if s > 0)
        assert target == min(s for s, v in removed.items() if s > 0 and v == peak)
    expected = _current(trainer.model, True)

    # Resume from step 15: the best so far may be before it; it is still the one restored.
    again, cb2 = make_trainer(
        tmp_path,
        {**kw, "stopper": NoiseRiseStopper(stage_end_step=5, patience=100, restore=restore)},
        save_strategy="steps",
        save_steps=5,
    )
    again.train(resume_from_checkpoint=str(tmp_path / "checkpoint-15"))
    assert cb2.restored_step == target
    assert _same(expected, _current(again.model, True))


def test_perturbed_weights_restore_bit_exactly_and_touch_no_rng(tokenizer, h):
    model = h.tiny_llama(len(tokenizer), lora=False)
    model.lm_head.weight.grad = torch.ones_like(model.lm_head.weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    with perturbed_weights(model, 1e-3, seed=3):
        moved = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        assert moved  # the weights did move
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert torch.equal(model.lm_head.weight.grad, torch.ones_like(model.lm_head.weight))


def test_floor_is_logged_at_step_0_and_sets_min_delta(make_trainer, tmp_path, h):
    """The floor goes to the stopper; ``min_delta`` is ``floor_multiple`` x it (0 by
    default since session 8; 3 here, the earlier default, so the link is seen)."""
    kw = {"schedule": 5, "floor_perturbation": 0.2, "stopper": NoiseRiseStopper(floor_multiple=3.0)}
    trainer, cb = make_trainer(tmp_path, kw, max_steps=5)
    trainer.train()
    floor = h.logged(trainer, "interactions/noise_floor")
    assert list(floor) == [0] and floor[0] > 0
    assert cb.stopper.floor == pytest.approx(floor[0])
    assert cb.stopper.min_delta == pytest.approx(3 * floor[0])
    assert h.logged(trainer, "interactions/stopper/min_delta")[5] == pytest.approx(3 * floor[0])
    default, dcb = make_trainer(tmp_path / "default", {"schedule": 5}, max_steps=5)
    default.train()
    assert dcb.stopper.min_delta == 0.0  # the default: any rise above the minimum counts


def test_pooled_floor_is_the_mean_of_its_draws(make_trainer, tmp_path, h):
    """floor_draws=3 (the default since session 8): the logged floor is the mean of the
    three single-draw floors (seeds 0, 1, 2), their sd is logged, min_delta follows."""
    import statistics

    kw0 = {"schedule": 5, "floor_perturbation": 0.2}  # large enough for the draws to differ
    pooled, cb = make_trainer(
        tmp_path / "pooled",
        {**kw0, "seed": 0, "floor_draws": 3, "stopper": NoiseRiseStopper(floor_multiple=3.0)},
        max_steps=5,
    )
    pooled.train()
    singles = []
    for seed in range(3):  # one draw each, same probes, perturbation seeds 0, 1, 2
        kw = {**kw0, "seed": seed, "probes": cb.probes, "floor_draws": 1}
        one, _ = make_trainer(tmp_path / f"one{seed}", kw, max_steps=5)
        one.train()
        singles.append(h.logged(one, "interactions/noise_floor")[0])
    floor = h.logged(pooled, "interactions/noise_floor")[0]
    assert floor == pytest.approx(statistics.fmean(singles), abs=1e-6)
    sd = h.logged(pooled, "interactions/noise_floor_sd")[0]
    assert sd == pytest.approx(statistics.stdev(singles), abs=1e-6)
    assert sd > 0  # the draws differ: the pooling is seen
    assert cb.stopper.min_delta == pytest.approx(3 * floor)
    assert not h.logged(one, "interactions/noise_floor_sd")  # one draw: no sd logged


def test_eval_value_is_the_worst_value_before_the_stage_end():
    from sft_interaction_callback.callback.restore_best import eval_value

    stopper = NoiseRiseStopper(restore="min")
    cb = SimpleNamespace(
        progress=SimpleNamespace(last_noise=0.2, last_noise_step=30), stopper=stopper
    )
    lower, higher = (
        SimpleNamespace(greater_is_better=False),
        SimpleNamespace(greater_is_better=True),
    )
    assert eval_value(cb, lower) == math.inf and eval_value(cb, higher) == -math.inf
    stopper.stage_ended_at = 20
    assert eval_value(cb, lower) == 0.2
    cb.progress.last_noise_step = 10  # a value measured before the stage end
    assert eval_value(cb, lower) == math.inf
    cb.progress.last_noise = None
    assert eval_value(cb, lower) is None


def test_eval_value_keeps_the_stage_end_best_under_restore_stage_end():
    from sft_interaction_callback.callback.restore_best import eval_value

    stopper = ShadowStopper(NoiseRiseStopper(restore="stage_end"))  # wrapped, as in shadow mode
    cb = SimpleNamespace(
        progress=SimpleNamespace(last_noise=0.3, last_noise_step=20), stopper=stopper
    )
    lower, higher = (
        SimpleNamespace(greater_is_better=False),
        SimpleNamespace(greater_is_better=True),
    )
    stopper.inner.stage_ended_at = 20
    assert eval_value(cb, lower) == 0.3  # the stage-end point itself
    cb.progress.last_noise, cb.progress.last_noise_step = 0.1, 30  # lower, but later
    assert eval_value(cb, lower) == math.inf and eval_value(cb, higher) == -math.inf


def test_restore_score_orders_checkpoints_as_restore_best_does():
    from sft_interaction_callback.callback.restore_best import restore_score

    lower, higher = (
        SimpleNamespace(greater_is_better=False),
        SimpleNamespace(greater_is_better=True),
    )
    progress = SimpleNamespace(last_noise=0.2, last_noise_step=30, last_removed=None)
    peak = SimpleNamespace(progress=progress, stopper=ShadowStopper(NoiseRiseStopper()))
    assert restore_score(peak, lower) is None  # no probe point yet
    progress.last_removed = 0.6
    assert restore_score(peak, lower) == -0.6 and restore_score(peak, higher) == 0.6
    # "min": the noise, worst before the stage end, oriented for greater_is_better too
    by_min = SimpleNamespace(progress=progress, stopper=NoiseRiseStopper(restore="min"))
    assert restore_score(by_min, lower) == math.inf
    assert restore_score(by_min, higher) == -math.inf
    by_min.stopper.stage_ended_at = 20
    assert restore_score(by_min, lower) == 0.2 and restore_score(by_min, higher) == -0.2


class Moving:
    """A stopper whose candidate moves to every probe point up to ``last`` (never fires)."""

    def __init__(self, last: int) -> None:
        self.last_seen, self.last = 0, last
        self.stage_ended_at = 0
        self.reason = None

    @property
    def keep_step(self):
        return min(self.last_seen, self.last) or None

    @property
    def restore_step(self):
        return self.keep_step

    def update(self, step, metrics):
        self.last_seen = step
        return False


@pytest.mark.parametrize("strategy", ["no", "steps"])
def test_superseded_candidate_checkpoints_are_deleted(make_trainer, tmp_path, strategy):
    # candidates at 5, 10, 15 (the last one): only checkpoints saved for restore-best
    # alone are deleted once superseded; the user's own (every 10 steps, and the last
    # step) are never touched
    saving = {"save_strategy": strategy} | ({"save_steps": 10} if strategy == "steps" else {})
    trainer, cb = make_trainer(
        tmp_path, {"schedule": 5, "stopper": Moving(last=15)}, max_steps=20, **saving
    )
    trainer.train()
    kept = sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("checkpoint-*"))
    assert kept == ([15] if strategy == "no" else [10, 15, 20])
    assert cb.restored_step == 15
    assert _same(_saved(tmp_path / "checkpoint-15", True), _current(trainer.model, True))
    assert cb.progress.extra_checkpoints == [15]  # the candidate stays recorded


def test_a_failing_delete_warns_and_training_goes_on(make_trainer, tmp_path, monkeypatch):
    import sft_interaction_callback.callback.restore_best as rb

    def refuse(path):
        raise PermissionError(f"read-only: {path}")

    monkeypatch.setattr(rb.shutil, "rmtree", refuse)
    trainer, cb = make_trainer(
        tmp_path, {"schedule": 5, "stopper": Moving(last=15)}, max_steps=20, save_strategy="no"
    )
    with pytest.warns(UserWarning, match="deleting a superseded checkpoint failed"):
        trainer.train()
    assert trainer.state.global_step == 20 and cb.restored_step == 15
    assert sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("checkpoint-*")) == [5, 10, 15]


class ScriptedRemoval(NoiseRiseStopper):
    """The default rule fed a scripted removed share (the real noise is kept)."""

    SCRIPT = {5: 0.4, 10: 0.9, 15: 0.8, 20: 0.85}

    def update(self, step, metrics):
        return super().update(step, {**metrics, REMOVED_FRACTION_KEY: self.SCRIPT.get(step)})


def test_removal_peak_before_the_confirmed_stage_end_is_restored(make_trainer, tmp_path, h):
    # the peak (step 10) comes before the stage end is confirmed (step 15): its
    # checkpoint was kept from the start, the earlier candidate (step 5) deleted
    stopper = ScriptedRemoval(stage_end_step=15, patience=100)
    trainer, cb = make_trainer(
        tmp_path, {"schedule": 5, "stopper": stopper}, max_steps=20, save_strategy="no"
    )
    trainer.train()
    assert stopper.stage_ended_at == 15 and stopper.restore_step == 10
    assert cb.restored_step == 10
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-10"]
    assert _same(_saved(tmp_path / "checkpoint-10", True), _current(trainer.model, True))
    note = json.loads((tmp_path / "interactions" / "restore.json").read_text())
    assert note["restore_step"] == 10 and note["restore_target"] == "removal_peak"


def test_the_end_of_a_run_is_recorded_for_the_report(make_trainer, tmp_path):
    """save_strategy="no": the restored step is logged, the whole log is kept beside the
    snapshots (the report then draws every step), and a fired shadow stop gets stop.json."""
    from sft_interaction_callback.keys import RESTORE_STEP_KEY
    from sft_interaction_callback.reporting.run_data import load_run

    shadow = ShadowStopper(PickStep(best=10, stop=15))
    trainer, cb = make_trainer(tmp_path, {"schedule": 5, "stopper": shadow}, max_steps=20)
    trainer.train()
    assert trainer.state.global_step == 20 and shadow.stop_step == 15  # shadow: no stop
    assert cb.restored_step == 10
    logged = [h for h in trainer.state.log_history if RESTORE_STEP_KEY in h]
    assert [h[RESTORE_STEP_KEY] for h in logged] == [10.0]
    stop = json.loads((tmp_path / "interactions" / "stop.json").read_text())
    assert stop["shadow"] is True and stop["stop_step"] == 15 and stop["restore_step"] == 10
    run = load_run(tmp_path)
    assert run.log_history_source == tmp_path / "interactions" / "log_history.json"
    assert max(h["step"] for h in run.log_history) == 20  # not cut at checkpoint-10


def test_write_shadow_stop_takes_a_str_folder(tmp_path):
    from sft_interaction_callback.tracking.shadow import write_shadow_stop

    shadow = ShadowStopper(PickStep(best=5, stop=5))
    shadow.update(5, {})
    write_shadow_stop(str(tmp_path), shadow)
    assert json.loads((tmp_path / "stop.json").read_text())["stop_step"] == 5


def test_the_callback_writes_the_comparison_and_its_own_row_matches(make_trainer, tmp_path):
    stopper = NoiseRiseStopper(stage_end_step=5, patience=1, min_delta=0.0)
    trainer, cb = make_trainer(tmp_path, {"schedule": 5, "stopper": stopper}, max_steps=30)
    trainer.train()
    doc = json.loads((tmp_path / "interactions" / "rules.json").read_text())
    assert doc["max_steps"] == 30
    ours = doc["rules"][0]
    assert ours["rule"] == "this run's rule"
    assert ours["stop_step"] == cb.stop_step and ours["kept_step"] == cb.restored_step
