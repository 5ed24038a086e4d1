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


def test_restore_min_goes_back_to_the_lowest_signal_after_the_stage_end(replay):
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
    got = replay.replay(run, replay.Rule("r", {"min_delta": 0.0, "restore": "min"}))
    assert got["stage_end"] == 30 and got["stop"] == 70 and got["model_step"] == 50
    assert got["regret_pp"] == pytest.approx(0.0)
    assert "| eval-loss patience 3 + load best (stored) |" in replay.stored_table()


def test_shipped_curves_are_the_design_tracker_on_the_snapshots(replay, tmp_path):
    """A regenerated study stores the shipped signal next to the new one: it must be what
    the DESIGN.md tracker (§5 categories, §7 signal) gives on the run's own snapshots."""
    import torch

    from sft_interaction_callback.andor import fit_and_or
    from sft_interaction_callback.callback.state import make_tracker
    from sft_interaction_callback.config import InteractionConfig
    from sft_interaction_callback.keys import NOISE_KEY, REMOVED_FRACTION_KEY
    from sft_interaction_callback.snapshots import SnapshotDir, write_probe_point

    gen = torch.Generator().manual_seed(0)
    snaps = SnapshotDir(tmp_path)
    tables = {}
    for step in (0, 5, 10, 20):
        inter = fit_and_or(torch.randn(3, 32, generator=gen, dtype=torch.float64))
        tables[step] = inter
        record = {"step": step, **({"interactions/noise_floor": 0.01} if step == 0 else {})}
        write_probe_point(snaps, step, inter, None, record)
    got = replay.shipped_curves(tmp_path)
    tracker = make_tracker(InteractionConfig(categories="design", noise_signal="design"))
    for step, inter in tables.items():
        m = tracker.set_base(inter) if step == 0 else tracker.update(step, inter)
        assert got["noise_shipped"][str(step)] == pytest.approx(m[NOISE_KEY])
        assert got["removed_fraction_shipped"][str(step)] == pytest.approx(m[REMOVED_FRACTION_KEY])
    assert got["noise_floor"] == 0.01


def test_regenerated_files_let_each_rule_read_its_own_signal(replay, tmp_path, monkeypatch):
    """With ``noise_shipped`` stored, the shipped rule reads it and the new rule ``noise``:
    a shipped signal that never rises and a new one that does give different stops."""
    steps = [0, 10, 20, 30, 40, 50, 60, 70, 80]
    curves = {
        "accuracy": {str(s): (0.9 if s == 40 else 0.8) for s in steps},
        # removal peaks at 40 (the default restore target), the stage end confirmed at 70
        "removed_fraction": {
            str(s): v
            for s, v in zip(steps, [0, 0.2, 0.4, 0.45, 0.5, 0.48, 0.48, 0.48, 0.48], strict=True)
        },
        "noise": {
            str(s): v
            for s, v in zip(steps, [0, 0.5, 0.5, 0.5, 0.1, 0.3, 0.4, 0.5, 0.6], strict=True)
        },
        "emerged_strength_norm": {str(s): 0.0 for s in steps},
        "noise_shipped": {str(s): 0.0 for s in steps},
        "removed_fraction_shipped": {str(s): 0.5 for s in steps},
        "noise_floor": 0.0,
    }
    record = {
        "seed": 0,
        "max_steps": 80,
        "curves": curves,
        "methods": {"eval_loss_patience3_best": {"accuracy": 0.9}},
    }
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"runs": [record]}))
    monkeypatch.setattr(replay, "STORED", {"synthetic": [str(path)]})
    table = replay.stored_table()
    assert "Regenerated files" in table
    shipped = next(line for line in table.splitlines() if line.startswith("| shipped"))
    restored = next(line for line in table.splitlines() if "+ restore-best" in line)
    assert "| end/80 |" in shipped  # its own flat signal never fires
    assert "/40 |" in restored and "| 0.00 ± 0.00 |" in restored
