"""Files written before the package was regrouped (issue 21) still load and resume.

``tests/fixtures/layout_v1_run`` holds a run made with the flat layout of commit e73381b
(``make_run.py`` there says how): the callback state in ``checkpoint-4`` and the
``interactions/`` folder of a run killed at step 5. Nothing in those files names a module,
so the move of the modules must not matter; these tests prove it on the files themselves.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from sft_interaction_callback.andor import AndOrInteractions
from sft_interaction_callback.callback.resume import STATE_FILE, plan_resume
from sft_interaction_callback.callback.state import CallbackState
from sft_interaction_callback.reporting.run_data import load_run
from sft_interaction_callback.snapshots import read_jsonl

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "layout_v1_run"
OLD_STEPS = [0, 2, 4]


@pytest.fixture()
def old_run(tmp_path):
    out = tmp_path / "run"
    shutil.copytree(FIXTURE, out, ignore=shutil.ignore_patterns("*.py"))
    return out


def test_old_snapshots_load(old_run):
    root = old_run / "interactions"
    assert [r["step"] for r in read_jsonl(root / "metrics.jsonl")] == OLD_STEPS
    base = AndOrInteractions.load(root / "step-00000000.safetensors")
    assert base.i_and.shape == (2, 2**4) and torch.isfinite(base.i_and).all()
    run = load_run(old_run)
    assert run.steps == OLD_STEPS
    assert [p.words for p in run.probes] == [
        p["words"] for p in json.loads((root / "probes.json").read_text())["probes"]
    ]


def test_old_checkpoint_state_round_trips(old_run, tokenizer, h):
    plan = plan_resume(old_run / "checkpoint-4", old_run / "interactions", "error")
    assert plan.step == 4 and not plan.rebuild
    from sft_interaction_callback.config import InteractionConfig

    cfg = InteractionConfig.from_kwargs(None, **{**h.FAST, "schedule": 2})
    state = CallbackState.from_state_dict(plan.state, cfg, tokenizer)
    assert state.progress.last_step == 4
    again = state.state_dict()
    assert again["meta"] == plan.state["meta"]
    old_stopper = plan.state["stopper"]
    assert {k: again["stopper"][k] for k in old_stopper} == old_stopper
    # fields added since (session 8): the knee test's history comes back empty, and the
    # settings the stopper runs with are saved beside its state
    added = set(again["stopper"]) - set(old_stopper)
    assert added == {"r_history", "settings"} and again["stopper"]["r_history"] == []
    assert again["probes"] == plan.state["probes"]
    for name, table in plan.state["tracker"]["tensors"].items():
        assert torch.equal(again["tracker"]["tensors"][name], table), name


def test_an_old_run_resumes_with_the_new_layout(old_run, make_trainer, h, monkeypatch):
    import sft_interaction_callback.callback.events as events

    def no_rebase(*a, **k):
        raise AssertionError("the base point was recomputed on resume")

    monkeypatch.setattr(events.InteractionCallback, "_base_point", no_rebase)
    before = read_jsonl(old_run / "interactions" / "metrics.jsonl")
    trainer, cb = make_trainer(
        old_run, {"schedule": 2}, max_steps=12, save_strategy="steps", save_steps=4
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train(resume_from_checkpoint=str(old_run / "checkpoint-4"))
    assert not [w for w in caught if "afresh" in str(w.message) or "REBUILT" in str(w.message)]
    assert trainer.state.global_step == 12
    after = read_jsonl(old_run / "interactions" / "metrics.jsonl")
    assert [r["step"] for r in after] == [0, 2, 4, 6, 8, 10, 12]
    assert after[: len(OLD_STEPS)] == before  # the old points are kept as written
    assert (old_run / "checkpoint-12" / STATE_FILE).is_file()
