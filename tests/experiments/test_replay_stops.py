"""replay_stops.py: its replay of the shipped rule reproduces the stops stored by Study A and
B, and the stored-curves table compares the rules it says it compares (fast: no training)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "experiments" / "replay_stops.py"


@pytest.fixture(scope="module")
def replay():
    spec = importlib.util.spec_from_file_location("replay_stops", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["replay_stops"] = module
    spec.loader.exec_module(module)
    return module


def test_shipped_rule_replays_the_stored_study_a_stops(replay):
    runs = replay.load_stored(["docs/results/study_a/runs.json"])
    stored = json.loads((ROOT / "docs/results/study_a/runs.json").read_text())["runs"]
    for run, record in zip(runs, stored, strict=True):
        got = replay.replay(run, replay.SHIPPED)
        assert got["stop"] == record["methods"]["interaction_stop"]["steps"]
        assert got["regret_pp"] == pytest.approx(
            100 * record["methods"]["interaction_stop"]["regret_vs_best"]
        )


def test_shipped_rule_replays_the_stored_study_b_stops(replay):
    runs = replay.load_stored(["docs/results/study_b/runs.json"])
    stored = json.loads((ROOT / "docs/results/study_b/runs.json").read_text())["runs"]
    for run, record in zip(runs, stored, strict=True):
        assert replay.replay(run, replay.SHIPPED)["stop"] == record["stop"]["interaction"]["step"]


def test_restore_best_goes_back_to_the_lowest_signal_after_the_stage_end(replay):
    steps = [10, 20, 30, 40, 50, 60, 70, 80]
    run = replay.Run(
        "synthetic",
        {
            "noise": dict(zip(steps, [0.5, 0.5, 0.5, 0.2, 0.1, 0.3, 0.4, 0.5], strict=True)),
            "removed_fraction": {s: 0.5 for s in steps},
        },
        {s: 0.9 if s == 50 else 0.8 for s in [0, *steps]},
        80,
    )
    got = replay.replay(run, replay.Rule("r", {"min_delta": 0.0}))
    assert got["stage_end"] == 30 and got["stop"] == 70 and got["model_step"] == 50
    assert got["regret_pp"] == pytest.approx(0.0)
    assert "| eval-loss patience 3 + load best (stored) |" in replay.stored_table()
