"""Resume: the callback's state travels with checkpoints and comes back on resume.

An uninterrupted run is compared with one killed after a checkpoint (an exception in a
later step) and resumed from it, once with the user's own callback object and once with
``restore_callback_states_from_checkpoint=True`` and a brand-new callback object.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import TrainerCallback

from sft_interaction_callback import InteractionCallback
from sft_interaction_callback.callback.resume import STATE_FILE, SnapshotError
from sft_interaction_callback.snapshots import read_jsonl

MAX_STEPS = 12
SCHEDULE = 2  # probe points 0, 2, 4, ..., 12
SAVE_STEPS = 4  # checkpoints 4, 8, 12
KILL_AT = 7  # after the probe point 6, before the checkpoint 8
STOP_AFTER = 5  # the stopper fires at its 5th decision point: step 10


class Killed(RuntimeError):
    """Stands in for a SIGKILL / preemption in the middle of training."""


class KillAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed(f"killed at step {state.global_step}")


class CountingStopper:
    """Stops at its ``n``-th decision point; its count must survive a resume."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.reason = None

    def update(self, step, metrics):
        self.count += 1
        if self.count >= self.n:
            self.reason = f"CountingStopper: decision point {self.count}"
            return True
        return False

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = int(state["count"])


def _args(**kw):
    return {
        "max_steps": MAX_STEPS,
        "save_strategy": "steps",
        "save_steps": SAVE_STEPS,
        **kw,
    }


def _callback(trainer, h, **kw):
    return InteractionCallback(
        trainer=trainer,
        **{**h.FAST, "schedule": SCHEDULE, "stopper": CountingStopper(STOP_AFTER), **kw},
    )


def _records(root):
    """metrics.jsonl without the wall-clock seconds."""
    out = []
    for r in read_jsonl(root / "interactions" / "metrics.jsonl"):
        out.append({k: v for k, v in r.items() if "seconds" not in k})
    return out


def _same_records(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys(), ra["step"]
        for k, va in ra.items():
            vb = rb[k]
            if isinstance(va, float) and isinstance(vb, float):
                assert math.isclose(va, vb, rel_tol=1e-6, abs_tol=1e-7), (ra["step"], k, va, vb)
            else:
                assert va == vb, (ra["step"], k, va, vb)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tokenizer, sft_dataset, h):
    """The uninterrupted reference run (once for the module)."""
    from transformers import Trainer

    out = tmp_path_factory.mktemp("straight")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(
            model=h.tiny_llama(len(tokenizer)),
            args=h.training_args(out, **_args()),
            train_dataset=sft_dataset,
            data_collator=h.make_collator(tokenizer),
            processing_class=tokenizer,
        )
        cb = _callback(trainer, h)
        trainer.train()
    finally:
        torch.set_num_threads(threads)
    return out, cb, trainer


def _interrupted(make_trainer, out, h):
    trainer, cb = make_trainer(out, callbacks=[KillAt(KILL_AT)], **_args())
    cb = _callback(trainer, h)
    with pytest.raises(Killed):
        trainer.train()
    root = out / "interactions"
    assert [r["step"] for r in read_jsonl(root / "metrics.jsonl")] == [0, 2, 4, 6]
    assert (out / "checkpoint-4" / STATE_FILE).is_file()
    assert not (out / "checkpoint-8").exists()
    return trainer, cb


def test_checkpoints_carry_the_state(straight):
    out, cb, trainer = straight
    assert trainer.state.global_step == 10 and cb.stop_step == 10
    for step in (4, 8, 10):  # 10: the checkpoint forced by the stop
        assert (out / f"checkpoint-{step}" / STATE_FILE).is_file(), step
    # nothing of ours in trainer_state.json (not an ExportableState): no pile-up there
    ts = json.loads((out / "checkpoint-10" / "trainer_state.json").read_text())
    assert "InteractionCallback" not in ts["stateful_callbacks"]
    from safetensors import safe_open

    with safe_open(str(out / "checkpoint-8" / STATE_FILE), "pt") as fh:
        doc = json.loads(fh.metadata()["state"])
        names = set(fh.keys())
    assert doc["global_step"] == 8 and doc["callback"]["meta"]["last_step"] == 8
    assert doc["callback"]["stopper"] == {"count": 4}
    assert doc["snapshots"]["base"]["file"] == "step-00000000.safetensors"
    assert "tracker/preserved_mask" in names and "tracker/base_interactions" not in names


def test_resume_with_the_same_callback_object(straight, make_trainer, tmp_path, h, monkeypatch):
    _, _, ref_trainer = straight
    out = tmp_path
    trainer, cb = _interrupted(make_trainer, out, h)
    # The step-0 interactions must come back from the snapshot, not from the model.
    import sft_interaction_callback.callback.events as cbmod

    def no_rebase(*a, **k):
        raise AssertionError("the base point was recomputed on resume")

    monkeypatch.setattr(cbmod.InteractionCallback, "_base_point", no_rebase)
    trainer2, _ = make_trainer(out, **_args())
    cb.attach(trainer2)
    trainer2.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    assert trainer2.state.global_step == 10 and cb.stop_step == 10
    assert cb.stopper.count == STOP_AFTER
    _same_records(_records(out), _records(straight[0]))
    # log_history comes back from the checkpoint (0, 2, 4); 6 is probed again (its first
    # result came after the checkpoint), and no step is logged twice
    steps = [e["step"] for e in trainer2.state.log_history if "interactions/noise" in e]
    assert steps == [0, 2, 4, 6, 8, 10]
    noise = h.logged(trainer2, "interactions/noise")
    ref = h.logged(ref_trainer, "interactions/noise")
    assert all(math.isclose(noise[s], ref[s], rel_tol=1e-6, abs_tol=1e-7) for s in noise)


def test_resume_with_a_new_callback_and_restore_flag(straight, make_trainer, tmp_path, h):
    out = tmp_path
    _interrupted(make_trainer, out, h)
    trainer2, _ = make_trainer(out, **_args(restore_callback_states_from_checkpoint=True))
    fresh = _callback(trainer2, h)
    trainer2.train(resume_from_checkpoint=True)  # the last checkpoint: 4
    assert fresh in trainer2.callback_handler.callbacks  # not replaced by the Trainer
    assert trainer2.state.global_step == 10 and fresh.stop_step == 10
    assert fresh.stopper.count == STOP_AFTER
    _same_records(_records(out), _records(straight[0]))
    stop = json.loads((out / "interactions" / "stop.json").read_text())
    assert stop["stop_step"] == 10


def test_truncated_snapshot_on_resume(make_trainer, tmp_path, h):
    out = tmp_path
    _interrupted(make_trainer, out, h)
    base = out / "interactions" / "step-00000000.safetensors"
    base.write_bytes(base.read_bytes()[:100])  # a torn write from some other tool

    trainer2, _ = make_trainer(out, **_args())
    _callback(trainer2, h)
    with pytest.raises(SnapshotError, match="step-00000000.safetensors is corrupt") as err:
        trainer2.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    assert 'on_missing_snapshot="rebuild"' in str(err.value)

    trainer3, _ = make_trainer(out, **_args())
    cb = _callback(trainer3, h, on_missing_snapshot="rebuild")
    with pytest.warns(UserWarning, match="REBUILT the step-0 interactions") as rec:
        trainer3.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    # LoRA over frozen weights: the rebuilt base is the pretrained model's, exactly
    assert any("match the saved checksum" in str(w.message) for w in rec)
    assert trainer3.state.global_step == 10 and cb.stop_step == 10
    from sft_interaction_callback.snapshots import load_tensors

    tensors, meta = load_tensors(base)  # rewritten whole
    assert meta["rebuilt"] == "True" and tensors["i_and"].shape == (2, 16)


def test_missing_state_file_is_an_error_when_the_run_had_one(make_trainer, tmp_path, h):
    out = tmp_path
    _interrupted(make_trainer, out, h)
    (out / "checkpoint-4" / STATE_FILE).unlink()
    trainer2, _ = make_trainer(out, **_args())
    _callback(trainer2, h)
    with pytest.raises(SnapshotError, match=f"{STATE_FILE} is missing"):
        trainer2.train(resume_from_checkpoint=str(out / "checkpoint-4"))


def test_resume_into_a_new_output_dir(straight, make_trainer, tmp_path, h):
    first, second = tmp_path / "first", tmp_path / "second"
    _interrupted(make_trainer, first, h)
    trainer2, _ = make_trainer(second, **_args())
    cb = _callback(trainer2, h)
    trainer2.train(resume_from_checkpoint=str(first / "checkpoint-4"))
    assert cb.stop_step == 10
    # the new folder is complete: probes, step-0 snapshot, and the metrics continued
    root = second / "interactions"
    assert (root / "probes.json").is_file() and (root / "step-00000000.safetensors").is_file()
    _same_records(_records(second), _records(straight[0]))
    assert [r["step"] for r in read_jsonl(first / "interactions" / "metrics.jsonl")] == [
        0,
        2,
        4,
        6,
    ]  # the old folder is left alone


def test_bad_settings_are_refused():
    from sft_interaction_callback import InteractionConfig

    with pytest.raises(ValueError, match="on_missing_snapshot='ignore'"):
        InteractionConfig(on_missing_snapshot="ignore")
    with pytest.raises(ValueError, match="distributed_probing='fsdp'"):
        InteractionConfig(distributed_probing="fsdp")
    assert InteractionConfig().on_missing_snapshot == "error"
