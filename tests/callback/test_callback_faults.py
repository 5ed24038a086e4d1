"""Fault injection: a probe point that raises, returns NaN or runs out of memory is skipped."""

from __future__ import annotations

import math

import pytest
import torch

from sft_interaction_callback.andor import AndOrInteractions
from sft_interaction_callback.engine.extractor import ValueExtractor
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
    # no step-0 floor probe: it would be one more measurement and shift the fault index
    trainer, cb = make_trainer(tmp_path, {"schedule": 5, "floor_perturbation": None})
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
    trainer, cb = make_trainer(tmp_path, {"schedule": 2, "floor_perturbation": None}, max_steps=4)
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


# ---------------------------------------------------------------------- OOM back-off
@pytest.fixture()
def tight_memory(monkeypatch):
    """``tight_memory(error)``: the prefix-tree engine raises ``error`` above batch size 2.

    Also counts ``free_memory`` calls made by the extractor and the callback.
    """
    from sft_interaction_callback.callback import recording as cbmod
    from sft_interaction_callback.engine import extractor as exmod

    freed = {"n": 0}
    real_free = exmod.free_memory

    def counting_free():
        freed["n"] += 1
        real_free()

    monkeypatch.setattr(exmod, "free_memory", counting_free)
    monkeypatch.setattr(cbmod, "free_memory", counting_free)
    real_compute = CausalLMValue._compute

    def install(make_error, limit=2, when=lambda: True):
        def compute(self, prep, masks, batch):
            if batch > limit and when():
                raise make_error()
            return real_compute(self, prep, masks, batch)

        monkeypatch.setattr(CausalLMValue, "_compute", compute)
        return freed

    return install


@pytest.mark.parametrize(
    "error",
    [
        lambda: OOM("CUDA out of memory. Tried to allocate 2.00 GiB"),  # the engine halves
        lambda: RuntimeError("CUDA error: out of memory"),  # the extractor halves
    ],
    ids=["engine", "extractor"],
)
def test_out_of_memory_halves_the_batch_and_keeps_it(
    make_trainer, tmp_path, tight_memory, error, h
):
    freed = tight_memory(error)
    trainer, cb = make_trainer(tmp_path, {"schedule": 2, "probe_batch_size": 16}, max_steps=4)
    with pytest.warns(UserWarning, match="retrying with batch_size=2") as rec:
        trainer.train()
    retries = [str(w.message) for w in rec if "retrying with batch_size" in str(w.message)]
    assert [m.rsplit("=", 1)[1] for m in retries] == ["8", "4", "2"]  # once, at step 0
    assert cb.extractor.batch_size == 2  # later points start from what fitted
    assert freed["n"] >= 1  # memory handed back after the OOM
    assert sorted(h.logged(trainer, "interactions/noise")) == [0, 2, 4]
    assert h.logged(trainer, "interactions/skipped") == {0: 0, 2: 0, 4: 0}


def test_out_of_memory_down_to_one_skips_the_point(make_trainer, tmp_path, tight_memory, h):
    from transformers import TrainerCallback

    window = {"on": False}
    freed = tight_memory(lambda: OOM("CUDA out of memory"), limit=0, when=lambda: window["on"])

    class OnlyAtStep2(TrainerCallback):  # nothing fits while step 2 is probed
        def on_step_begin(self, args, state, control, **kwargs):
            window["on"] = state.global_step == 1

    trainer, cb = make_trainer(
        tmp_path, {"schedule": 2, "probe_batch_size": 4}, max_steps=4, callbacks=[OnlyAtStep2()]
    )
    with pytest.warns(UserWarning, match="probe at step 2 skipped \\(out of memory\\)") as rec:
        trainer.train()
    messages = [str(w.message) for w in rec]
    assert [m.rsplit("=", 1)[1] for m in messages if "retrying" in m] == ["2", "1"]
    assert freed["n"] >= 1 and trainer.state.global_step == 4
    assert h.logged(trainer, "interactions/skipped") == {0: 0, 2: 1, 4: 1}
    assert sorted(h.logged(trainer, "interactions/noise")) == [0, 4]


# ---------------------------------------------------------------------- W&B failing
def test_wandb_raising_on_log_never_stops_training(make_trainer, tmp_path, monkeypatch, h):
    """The real HF ``WandbCallback`` whose W&B module raises on every interaction log."""
    pytest.importorskip("wandb")
    from transformers.integrations import WandbCallback

    from sft_interaction_callback.reporting import wandb_log

    class Down:
        """Stands in for the ``wandb`` module: up for loss lines, down for ours."""

        class run:  # noqa: N801
            summary: dict = {}

            @staticmethod
            def log(payload):
                raise ConnectionError("W&B is down (tables)")

        def log(self, payload):
            if any("interactions" in k for k in payload):
                raise ConnectionError("W&B is down")

    integration = WandbCallback()
    integration._wandb, integration._initialized = Down(), True
    monkeypatch.setattr(wandb_log, "wandb_run", lambda args: Down.run)
    trainer, cb = make_trainer(tmp_path, {"schedule": 2}, max_steps=4, callbacks=[integration])
    with pytest.warns(UserWarning, match="logging the interaction metrics failed") as rec:
        trainer.train()
    messages = [str(w.message) for w in rec]
    assert sum("logging the interaction metrics failed" in m for m in messages) == 1
    assert sum("W&B logging of interaction tables failed" in m for m in messages) == 1
    assert trainer.state.global_step == 4
    assert sorted(h.logged(trainer, "interactions/noise")) == [0, 2, 4]  # still in log_history
    records = read_jsonl(tmp_path / "interactions" / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 2, 4]


# ---------------------------------------------------------------------- killed writes
_KILL_SCRIPT = """
import os, signal, sys, torch
from sft_interaction_callback import snapshots

real_fsync = os.fsync
def die(fd):
    real_fsync(fd)
    os.kill(os.getpid(), signal.SIGKILL)   # killed after the data, before the rename
os.fsync = die
from sft_interaction_callback.andor import AndOrInteractions
v, i_and, i_or, p, q = torch.zeros(5, 2, 1 << 12)
inter = AndOrInteractions(v=v, i_and=i_and, i_or=i_or, p=p, q=q, n_players=12)
snapshots.SnapshotDir(sys.argv[1]).write_step(3, inter)
"""


def test_a_write_killed_midway_leaves_no_partial_file(tmp_path):
    import os
    import subprocess
    import sys

    from sft_interaction_callback.snapshots import SnapshotDir

    root = tmp_path / "interactions"
    snaps = SnapshotDir(root)
    v, i_and, i_or, p, q = torch.ones(5, 2, 16)
    snaps.write_step(2, AndOrInteractions(v=v, i_and=i_and, i_or=i_or, p=p, q=q, n_players=4))
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(root)], timeout=120)
    assert proc.returncode == -9  # SIGKILL
    names = sorted(p.name for p in root.iterdir())
    assert "step-00000003.safetensors" not in names  # never half a file under its name
    assert any(n.startswith(".step-00000003.safetensors.") for n in names)  # the orphan
    assert snaps.steps() == [2]
    snaps.rewind(5)  # what a resume does: orphans go
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002.safetensors"]
    umask = os.umask(0o022)
    os.umask(umask)
    mode = (root / "step-00000002.safetensors").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask  # like open(), not mkstemp's 0600
