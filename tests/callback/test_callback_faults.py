"""Fault injection: a probe point that raises, returns NaN or runs out of memory is skipped."""

from __future__ import annotations

import math

import pytest
import torch

from sft_interaction_callback.extract import ValueExtractor
from sft_interaction_callback.probing import CausalLMValue
from sft_interaction_callback.snapshots import read_jsonl

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@pytest.fixture()
def inject(monkeypatch):
    """``inject({point_index: fault})``: faults by probe point (0 = step 0), inside the model.

    ``"raise"``: the value function raises; ``"nan"``: it returns NaN values; ``"oom"``:
    a CUDA out-of-memory error; ``"oom-runtime"``: a RuntimeError saying out of memory.
    """
    point = {"index": -1}
    plan: dict[int, str] = {}
    values, call = ValueExtractor.values, CausalLMValue.__call__

    def counting_values(self, model, probes):
        point["index"] += 1
        return values(self, model, probes)

    def faulty_call(self, probe, masks=None):
        fault = plan.get(point["index"])
        if fault == "raise":
            raise ValueError("injected failure")
        if fault == "oom":
            raise OOM("CUDA out of memory. Tried to allocate 2.00 GiB")
        if fault == "oom-runtime":
            raise RuntimeError("CUDA error: out of memory")
        out = call(self, probe, masks)
        return out * math.nan if fault == "nan" else out

    monkeypatch.setattr(ValueExtractor, "values", counting_values)
    monkeypatch.setattr(CausalLMValue, "__call__", faulty_call)
    return plan.update


def test_raising_and_nan_points_are_skipped(make_trainer, tmp_path, inject, h):
    inject({2: "raise", 3: "nan"})  # steps 10 and 15
    trainer, cb = make_trainer(tmp_path, {"schedule": 5})
    with pytest.warns(UserWarning, match="probe at step 10 skipped") as rec:
        trainer.train()
    assert any("probe at step 15 skipped (NonFiniteValues" in str(w.message) for w in rec)

    assert trainer.state.global_step == 20
    assert h.logged(trainer, "interactions/skipped") == {0: 0, 5: 0, 10: 1, 15: 2, 20: 2}
    assert sorted(h.logged(trainer, "interactions/noise")) == [0, 5, 20]
    assert sorted(h.logged(trainer, "loss")) == list(range(1, 21))
    root = tmp_path / "interactions"
    records = read_jsonl(root / "metrics.jsonl")
    assert [(r["step"], r["skipped"]) for r in records] == [
        (0, False),
        (5, False),
        (10, True),
        (15, True),
        (20, False),
    ]
    assert "injected failure" in records[2]["error"]
    assert not (root / "step-00000010.safetensors").exists()
    assert (root / "step-00000020.safetensors").exists()
    meta = cb.state_dict()["meta"]
    assert meta["skipped"] == 2 and meta["skipped_steps"] == [10, 15]


@pytest.mark.parametrize("fault", ["oom", "oom-runtime"])
def test_out_of_memory_is_skipped(make_trainer, tmp_path, inject, h, fault):
    inject({1: fault})
    trainer, cb = make_trainer(tmp_path, {"schedule": 2}, max_steps=4)
    with pytest.warns(UserWarning, match="probe at step 2 skipped \\(out of memory\\)"):
        trainer.train()
    assert trainer.state.global_step == 4
    assert h.logged(trainer, "interactions/skipped") == {0: 0, 2: 1, 4: 1}


def test_failed_base_point_turns_tracking_off(make_trainer, tmp_path, inject, h):
    inject({0: "raise"})
    trainer, cb = make_trainer(tmp_path, {"schedule": 2}, max_steps=4)
    with pytest.warns(UserWarning, match="interaction tracking is off for this run"):
        trainer.train()
    assert trainer.state.global_step == 4
    assert h.logged(trainer, "interactions/skipped") == {0: 1}
    assert "interactions/noise" not in str(trainer.state.log_history)
    assert cb.state_dict()["meta"]["disabled"].startswith("the step-0 (base) probe failed")


def test_failing_snapshot_writes_do_not_stop_training(make_trainer, tmp_path, monkeypatch, h):
    from sft_interaction_callback.snapshots import SnapshotDir

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(SnapshotDir, "write_step", full_disk)
    trainer, cb = make_trainer(tmp_path, {"schedule": 2}, max_steps=4)
    with pytest.warns(UserWarning, match="could not write the step snapshot"):
        trainer.train()
    assert sorted(h.logged(trainer, "interactions/noise")) == [0, 2, 4]
    assert len(read_jsonl(tmp_path / "interactions" / "metrics.jsonl")) == 3
