"""Replaying the stops people use today on logged curves (scripts/experiments/compare.py)."""

from __future__ import annotations

import math

import pytest
import torch


@pytest.fixture(scope="module")
def compare(load_script):
    """scripts/experiments/compare.py (the studies' helpers; not part of the package)."""
    return load_script("compare")


def test_patience_counts_evaluations_without_improvement(compare):
    losses = {10: 1.0, 20: 0.8, 30: 0.9, 40: 0.85, 50: 0.7, 60: 0.75, 70: 0.8, 80: 0.9}
    assert compare.patience_stop(losses, patience=3) == 80
    assert compare.patience_stop(losses, patience=2) == 40
    assert compare.patience_stop(losses, patience=4) is None


def test_threshold_blocks_small_improvements_but_best_still_moves(compare):
    # 0.95 improves on 1.0 by less than the threshold: the counter grows, yet the best
    # becomes 0.95, so 0.91 (0.04 below it) does not reset the counter either.
    losses = {1: 1.0, 2: 0.95, 3: 0.91, 4: 0.5}
    assert compare.patience_stop(losses, patience=2, threshold=0.06) == 3
    assert compare.patience_stop(losses, patience=3, threshold=0.06) is None


def test_greater_is_better_and_nan(compare):
    acc = {1: 0.5, 2: 0.6, 3: math.nan, 4: 0.55}
    assert compare.patience_stop(acc, patience=2, greater_is_better=True) == 4
    assert compare.best_step(acc) == 2
    assert compare.best_step(acc, greater_is_better=False) == 1
    assert compare.best_step(acc, until=1) == 1
    assert compare.best_step({}) is None


def test_value_at_is_the_last_evaluation_not_after_the_step(compare):
    s = {0: 0.1, 10: 0.2, 20: 0.3}
    assert compare.value_at(s, 15) == 0.2
    assert compare.value_at(s, 20) == 0.3
    assert compare.value_at(s, None) is None
    assert compare.value_at({5: 1.0}, 3) is None


def test_best_step_takes_the_earliest_tie(compare):
    assert compare.best_step({3: 1.0, 1: 1.0, 2: 0.5}) == 1


def test_mean_sd(compare):
    m, sd, n = compare.mean_sd([1.0, 2.0, 3.0, None, math.nan])
    assert (m, n) == (2.0, 3) and sd == pytest.approx(1.0)
    assert compare.mean_sd([4.0]) == (4.0, 0.0, 1)
    assert math.isnan(compare.mean_sd([])[0])


def test_patience_rejects_zero(compare):
    with pytest.raises(ValueError, match="patience"):
        compare.patience_stop({1: 1.0}, patience=0)


class _Wobble(torch.nn.Module):
    """A one-parameter model; evaluation reports a scripted metric sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, labels=None):
        out = x * self.w
        return {"loss": ((out - labels) ** 2).mean(), "logits": out}


@pytest.mark.parametrize("patience,threshold", [(2, 0.0), (3, 0.0), (2, 0.05)])
def test_replay_matches_the_real_early_stopping_callback(tmp_path, patience, threshold, compare):
    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

    script = [1.0, 0.9, 0.92, 0.88, 0.87, 0.95, 0.99, 0.6, 0.61, 0.7, 0.8, 0.9] + [1.0] * 8
    seen: dict[int, float] = {}

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {"x": torch.tensor([1.0]), "labels": torch.tensor([0.5])}

    trainer: Trainer | None = None

    def metrics(_pred):
        step = trainer.state.global_step
        seen[step] = script[len(seen)]
        return {"wobble": seen[step]}

    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=len(script),
        per_device_train_batch_size=2,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="no",
        metric_for_best_model="wobble",
        greater_is_better=False,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=_Wobble(),
        args=args,
        train_dataset=Data(),
        eval_dataset=Data(),
        compute_metrics=metrics,
        callbacks=[EarlyStoppingCallback(patience, threshold)],
    )
    trainer.train()
    stopped = trainer.state.global_step
    assert stopped < len(script), "the scripted metric should have stopped the run"
    replayed = compare.patience_stop(
        dict(enumerate(script, start=1)), patience=patience, threshold=threshold
    )
    assert replayed == stopped
    assert seen == {s: script[s - 1] for s in range(1, stopped + 1)}


def test_interaction_summary_reads_probe_points_at_stop_and_end(compare):
    from sft_interaction_callback.tracking.shadow import ProbePoints

    rows = [
        {"step": 0, "interactions/removed/strength": 0.0, "interactions/noise": 0.1},
        {"step": 10, "interactions/removed/strength": 3.0, "interactions/emerged/count": 2},
        {"step": 15, "skipped": True, "interactions/removed/strength": 99.0},
        {"step": 20, "interactions/removed/strength": 4.0, "interactions/noise": 0.5},
    ]
    points = ProbePoints(rows)
    assert points.steps == [0, 10, 20] and points.last == 20
    out = compare.interaction_summary(points, 10, points.last)
    assert out["removal"]["share_before_stop"] == 0.75
    assert out["removal"]["removed_strength_at_end"] == 4.0
    assert out["categories"]["emerged"]["stop"]["count"] == 2.0
    assert out["categories"]["emerged"]["end"]["count"] is None
    assert out["noise"] == {"stop": None, "end": 0.5}
    never = compare.interaction_summary(points, None, points.last)
    assert never["removal"]["share_before_stop"] is None  # no stop: no share
    assert points.removal(15) == (None, 4.0, None)  # a skipped point is not a probe point
