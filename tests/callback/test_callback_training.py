"""End-to-end: a tiny LoRA SFT run with the callback under Trainer, SFTTrainer and W&B."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from sft_interaction_callback import InteractionCallback
from sft_interaction_callback.snapshots import load_tensors, read_jsonl

CORE_KEYS = [
    f"interactions/{c}/{m}"
    for c in ("removed", "preserved", "emerged")
    for m in ("count", "strength", "strength_norm")
] + [
    "interactions/noise",
    "interactions/total_strength",
    "interactions/removed/fraction",
    "interactions/probe_seconds",
    "interactions/skipped",
]
PROBE_STEPS = [0, 5, 10, 15, 20]


def _losses(trainer):
    history = trainer.state.log_history
    return [(e["step"], e["loss"], e["grad_norm"]) for e in history if "loss" in e]


def _check_logged_keys(trainer, steps):
    for step in steps:
        entries = [e for e in trainer.state.log_history if e["step"] == step]
        probe = [e for e in entries if "interactions/noise" in e]
        assert len(probe) == 1, f"step {step}: {len(probe)} interaction log entries"
        missing = [k for k in CORE_KEYS if k not in probe[0]]
        assert not missing, f"step {step}: missing {missing}"
        values = [v for k, v in probe[0].items() if k.startswith("interactions/")]
        assert all(isinstance(v, float) and v == v for v in values)  # NaN left out


def _check_snapshots(root, steps, n_players=4, num_probes=2):
    probes = json.loads((root / "probes.json").read_text())
    assert len(probes["probes"]) == num_probes and probes["n_players"] == n_players
    for p in probes["probes"]:
        assert len(p["words"]) == n_players and p["target"].strip() and p["id"]
        assert [p["prompt"][s:e] for s, e in p["players"]] == p["words"]
    for step in steps:
        t, _ = load_tensors(root / f"step-{step:08d}.safetensors")
        assert t["v"].shape == t["i_and"].shape == t["i_or"].shape == (num_probes, 1 << n_players)
        for k in ("salient", "removed", "preserved", "emerged"):
            assert t[k].dtype == torch.bool and t[k].shape == (num_probes, 2 << n_players)
        assert torch.equal(t["salient"], t["preserved"] | t["emerged"])
    records = read_jsonl(root / "metrics.jsonl")
    assert [r["step"] for r in records] == steps
    assert all(r["skipped"] is False and "interactions/noise" in r for r in records)
    assert not [p.name for p in root.iterdir() if p.name.endswith(".tmp")]


def test_lora_run_is_unchanged_by_the_callback(make_trainer, tmp_path):
    plain, _ = make_trainer(tmp_path / "plain")
    plain.train()
    tracked, cb = make_trainer(tmp_path / "tracked", {"schedule": 5, "early_stopping": False})
    tracked.train()

    # Bit-for-bit the same training: every loss and grad norm, and the final weights.
    assert _losses(tracked) == _losses(plain)
    assert [s for s, _, _ in _losses(tracked)] == list(range(1, 21))  # loss kept on probe steps
    for (name, a), (_, b) in zip(
        plain.model.named_parameters(), tracked.model.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    assert tracked.model.training == plain.model.training

    _check_logged_keys(tracked, PROBE_STEPS)
    _check_snapshots(tmp_path / "tracked" / "interactions", PROBE_STEPS)
    assert cb.state_dict()["meta"]["probe_steps"] == PROBE_STEPS
    assert tracked.callback_handler.callbacks[0] is cb


def test_gradient_checkpointing_stays_on(make_trainer, tmp_path):
    settings = {"schedule": 2}
    trainer, cb = make_trainer(tmp_path, settings, max_steps=4, activation_checkpointing=True)
    trainer.train()
    base = trainer.model.get_base_model()
    assert base.is_activation_checkpointing
    assert cb.state_dict()["meta"]["probe_steps"] == [0, 2, 4]


def test_sft_trainer(tmp_path, tokenizer, raw_sft_dataset, h):
    trl = pytest.importorskip("trl")
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        max_steps=10,
        per_device_train_batch_size=2,
        learning_rate=5e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
        eos_token="[SEP]",  # the MiniLM tokenizer has no EOS token of its own
    )
    trainer = trl.SFTTrainer(
        model=h.tiny_llama(len(tokenizer)),
        args=args,
        train_dataset=raw_sft_dataset,
        processing_class=tokenizer,
        callbacks=[InteractionCallback(schedule=5, **h.FAST)],  # found via the trainer
    )
    trainer.train()
    _check_logged_keys(trainer, [0, 5, 10])
    _check_snapshots(tmp_path / "interactions", [0, 5, 10])
    assert [s for s, _, _ in _losses(trainer)] == list(range(1, 11))
    # TRL's own per-step metrics stay on its loss lines, none leak onto the probe lines.
    for entry in trainer.state.log_history:
        if "loss" in entry:
            assert "mean_token_accuracy" in entry and "num_tokens" in entry, entry
        if "interactions/noise" in entry:
            assert not any(k in entry for k in ("mean_token_accuracy", "num_tokens", "entropy"))
    probes = json.loads((tmp_path / "interactions" / "probes.json").read_text())["probes"]
    rows = {r["prompt"]: r["completion"] for r in h.sft_rows()}
    assert all(rows[p["prompt"]] + "[SEP]" == p["target"] for p in probes)  # as trained


def test_wandb_offline_run_holds_the_interaction_metrics(
    make_trainer, tmp_path, monkeypatch, wandb_history
):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "sft-interactions-test")
    trainer, cb = make_trainer(
        tmp_path / "out", {"schedule": 5}, max_steps=10, report_to=["wandb"], run_name="t"
    )
    try:
        trainer.train()
        run_dir = wandb.run.dir
    finally:
        wandb.finish()
    rows = wandb_history(tmp_path / "wandb")
    noise = {r["train/global_step"]: r for r in rows if "train/interactions/noise" in r}
    assert sorted(noise) == [0, 5, 10]
    for r in noise.values():
        for key in CORE_KEYS:
            assert f"train/{key}" in r
    loss_steps = sorted(r["train/global_step"] for r in rows if "train/loss" in r)
    assert loss_steps == list(range(1, 11))
    tables = {r["train/global_step"]: r for r in rows if "interactions/top_interactions/_type" in r}
    assert sorted(tables) == [0, 5, 10]
    assert all(r["interactions/order_histogram/_type"] == "table-file" for r in tables.values())
    assert run_dir.startswith(str(tmp_path))


def test_wandb_errors_are_warned_once(make_trainer, tmp_path, monkeypatch):
    from sft_interaction_callback.reporting import wandb_log

    class BrokenRun:
        summary: dict = {}

        def log(self, payload):
            raise RuntimeError("W&B is down")

    monkeypatch.setattr(wandb_log, "wandb_run", lambda args: BrokenRun())
    trainer, cb = make_trainer(tmp_path, {"schedule": 2}, max_steps=4)
    with pytest.warns(UserWarning, match="W&B logging of interaction tables failed") as rec:
        trainer.train()
    assert sum("W&B logging" in str(w.message) for w in rec) == 1
    assert trainer.state.global_step == 4 and cb.state_dict()["meta"]["probe_steps"] == [0, 2, 4]


def test_nothing_wandb_specific_runs_without_wandb(make_trainer, tmp_path, monkeypatch, recwarn):
    wandb = pytest.importorskip("wandb")
    from sft_interaction_callback.reporting.wandb_log import wandb_run

    def forbidden(*args, **kwargs):
        raise AssertionError("W&B used although the run does not report to it")

    monkeypatch.setattr(wandb, "Table", forbidden)
    trainer, _ = make_trainer(tmp_path, {"schedule": 2}, max_steps=2, report_to=[])
    trainer.train()
    assert not [w for w in recwarn if "W&B" in str(w.message)]
    assert wandb_run(trainer.args) is None

    class Args:
        report_to = ["wandb"]

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    assert wandb_run(Args()) is None


def test_trainer_found_without_attach_and_no_duplicates(tmp_path, tokenizer, sft_dataset, h):
    from transformers import Trainer

    cb = InteractionCallback(schedule=2, **h.FAST)
    trainer = Trainer(
        model=h.tiny_llama(len(tokenizer)),
        args=h.training_args(tmp_path, max_steps=4),
        train_dataset=sft_dataset,
        data_collator=h.make_collator(tokenizer),
        processing_class=tokenizer,
        callbacks=[cb],
    )
    assert cb.trainer is trainer  # found in on_init_end
    trainer.add_callback(cb)  # registered twice by mistake
    trainer.train()
    assert sum(c is cb for c in trainer.callback_handler.callbacks) == 1
    _check_logged_keys(trainer, [0, 2, 4])
