"""Snapshot files (atomic writes, round trips) and the do-no-harm guards, without training."""

from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import pytest
import torch

from sft_interaction_callback.andor import AndOrInteractions
from sft_interaction_callback.engine.runtime import (
    adapters_disabled,
    free_memory,
    is_out_of_memory,
    preserved_training_state,
)
from sft_interaction_callback.probing import Probe
from sft_interaction_callback.snapshots import (
    SnapshotDir,
    atomic_write_json,
    atomic_write_text,
    json_safe,
    read_jsonl,
    step_filename,
)

PROMPT = "Question: what colour is the big house near the river today?"


# ---------------------------------------------------------------------- snapshots
def test_atomic_write_leaves_no_temp_files_and_replaces(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "x.txt", "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert sorted(os.listdir(path.parent)) == ["x.txt"]


def test_failed_replace_keeps_the_old_file(tmp_path, monkeypatch):
    path = atomic_write_text(tmp_path / "x.json", "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.json"]


def test_json_is_strict_with_nan_as_null(tmp_path):
    data = {"a": math.nan, "b": [1.0, math.inf], "t": torch.tensor([1, 2]), "s": (1, "x")}
    assert json_safe(data) == {"a": None, "b": [1.0, None], "t": [1, 2], "s": [1, "x"]}
    path = atomic_write_json(tmp_path / "d.json", data)
    assert json.loads(path.read_text())["a"] is None


def test_snapshot_dir_round_trip(tmp_path):
    snaps = SnapshotDir(tmp_path / "interactions")
    probe = Probe(PROMPT, " red", [(15, 21), (29, 32)], id="p0")
    snaps.write_probes([probe], {"n_players": 2})
    data = json.loads(snaps.probes_path.read_text())
    assert data["probes"][0]["words"] == ["colour", "big"] and data["n_players"] == 2
    assert snaps.read_probes() == [probe]

    v, i_and, i_or, p, q = torch.randn(1, 4), *torch.zeros(4, 1, 4)  # four distinct tensors
    inter = AndOrInteractions(v=v, i_and=i_and, i_or=i_or, p=p, q=q, n_players=2)
    tensors = {"v": v, "salient": torch.tensor([[True, False] * 4])}
    path = snaps.write_step(7, inter, {"salient": tensors["salient"]}, {"n_players": 2})
    assert path.name == step_filename(7) == "step-00000007.safetensors"
    back, meta = snaps.read_step(7)
    assert torch.equal(back["v"], tensors["v"]) and back["salient"].dtype == torch.bool
    assert meta["step"] == "7" and meta["n_players"] == "2"
    assert snaps.steps() == [7]

    snaps.append_metrics({"step": 0, "x": 1.0})
    snaps.append_metrics({"step": 5, "x": math.nan})
    snaps.append_metrics({"step": 5, "x": 2.0})  # the same step again replaces it
    assert read_jsonl(snaps.metrics_path) == [{"step": 0, "x": 1.0}, {"step": 5, "x": 2.0}]
    fresh = SnapshotDir(snaps.root)
    assert fresh.load_metrics() == read_jsonl(snaps.metrics_path)

    snaps.write_stop({"stop_step": 5, "reason": "why"})
    assert json.loads(snaps.stop_path.read_text())["stop_step"] == 5


# ---------------------------------------------------------------------- runtime guards
def test_guard_restores_rngs_modes_cache_and_grads(h, tokenizer):
    model = h.tiny_llama(len(tokenizer), lora=False)
    model.train()
    model.model.layers[0].eval()  # a mixed state must come back exactly
    model.config.use_cache = False
    p = next(model.parameters())
    p.grad = torch.ones_like(p)
    grad = p.grad
    modes = [m.training for m in model.modules()]
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with preserved_training_state(model):
        assert not torch.is_grad_enabled()
        random.random(), np.random.rand(), torch.rand(5)
        model.eval()
        model.config.use_cache = True
        p.grad = None
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])
    assert [m.training for m in model.modules()] == modes
    assert model.config.use_cache is False and p.grad is grad
    assert torch.is_grad_enabled()


def test_guard_restores_even_when_the_body_raises(h, tokenizer):
    model = h.tiny_llama(len(tokenizer), lora=False).train()
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    with pytest.raises(RuntimeError, match="inside"), preserved_training_state(model):
        torch.rand(3)
        model.eval()
        raise RuntimeError("inside")
    assert model.training and torch.equal(torch.rand(1), expected)


def test_adapters_disabled_gives_the_base_model(h, tokenizer):
    model = h.tiny_llama(len(tokenizer))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=1.0)  # a trained-looking adapter
    ids = torch.tensor([[101, 2054, 3609, 102]])
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with adapters_disabled(model) as disabled:
            base = model(input_ids=ids).logits
            assert disabled
        again = model(input_ids=ids).logits
        plain = model.get_base_model()
        with adapters_disabled(torch.nn.Linear(2, 2)) as nothing:
            assert not nothing
    assert not torch.allclose(adapted, base) and torch.equal(adapted, again)
    del plain


def test_out_of_memory_errors_are_recognised():
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    assert is_out_of_memory(oom("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))
    free_memory()  # a no-op on CPU, must not fail


def test_solver_gap_is_logged_only_when_the_fit_certifies_one():
    from sft_interaction_callback.callback.recording import solver_gap_metrics
    from sft_interaction_callback.keys import SOLVER_GAP_MAX

    v, i_and, i_or, p, q = torch.zeros(5, 3, 4)
    inter = AndOrInteractions(v=v, i_and=i_and, i_or=i_or, p=p, q=q, n_players=2)
    assert solver_gap_metrics(inter) == {}
    inter.gap = torch.tensor([0.0, 0.25, 0.1])
    assert solver_gap_metrics(inter) == {SOLVER_GAP_MAX: 0.25}


def test_probing_threads_raise_cpu_threads_and_restore_them():
    import torch

    from sft_interaction_callback.engine.runtime import probing_threads, usable_cpus

    before = torch.get_num_threads()
    model = torch.nn.Linear(2, 2)
    with probing_threads(model, None) as used:
        assert used == before == torch.get_num_threads()  # None: the training's count
    with probing_threads(model, usable_cpus()) as used:
        assert used == usable_cpus() == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with probing_threads(model, 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    try:
        with probing_threads(model, 1):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert torch.get_num_threads() == before


def test_config_refuses_bad_probe_threads():
    import pytest

    from sft_interaction_callback.config import InteractionConfig

    with pytest.raises(ValueError, match="probe_threads"):
        InteractionConfig(probe_threads=0)
    assert InteractionConfig(probe_threads=2).probe_threads == 2
