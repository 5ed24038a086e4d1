"""tune_stop_rule.py ceiling: the oracles bound the rule from below, each over the
checkpoints its row names (fast: synthetic curves, no training)."""

from __future__ import annotations

import pytest

STEPS = list(range(10, 201, 10))
# removal rises to a plateau (stage end at 90, see the test) and peaks once more at 120
REMOVED = [0.1, 0.3, 0.6, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.97]
REMOVED += [0.95] * (len(STEPS) - len(REMOVED))
# noise: lowest at 100, then rising from 130 (two bad points stop the run at 140)
NOISE = {s: 0.01 for s in STEPS} | {100: 0.0, 110: 0.0, 120: 0.0, 130: 0.2, 140: 0.3}
# held-out accuracy: best (1.0) at 40, before the stage end; 0.95 at 100; 0.9 elsewhere
ACCURACY = {0: 0.5} | {s: 0.9 for s in STEPS} | {40: 1.0, 100: 0.95}


@pytest.fixture(scope="module")
def tune(load_script):
    return load_script("tune_stop_rule")


def _run(tune):
    curves = {"noise": dict(NOISE), "removed_fraction": dict(zip(STEPS, REMOVED, strict=True))}
    return tune.Run("synthetic", curves, dict(ACCURACY), 200)


def test_ceiling_rows_bound_the_rule_by_the_checkpoints_each_row_allows(tune):
    run = _run(tune)
    replayed = tune.replay(run, tune.Rule("min", {"restore": "min"}))
    assert (replayed["stage_end"], replayed["stop"], replayed["model_step"]) == (90, 140, 100)
    assert tune.replay(run, tune.Rule("peak", {}))["model_step"] == 120  # the default target
    rows = tune.ceiling_rows([run], [1.5])
    assert rows["eval-loss patience 3 + load best"] == [1.5]
    # the removal peak (0.97 at 120, accuracy 0.9); the noise minimum since the stage end
    assert rows["restore-best, target removal_peak (default from session 6)"] == pytest.approx(
        [10.0]
    )
    assert rows["restore-best, target min (default before)"] == pytest.approx([5.0])
    # target min may only pick 90..140: its best is step 100 (0.95), not step 40 (1.0)
    assert rows["oracle: stage end .. stop (what target min may pick)"] == pytest.approx([5.0])
    assert rows["oracle: any probe point up to the stop (removal_peak may pick)"] == [0.0]
    assert rows["oracle: any probe point"] == pytest.approx([0.0])
    # the noise minimum from the first point with removal >= 90% of its plateau at the
    # stage end (0.9 * 0.95: step 40)
    assert rows["retro 90%, noise min (explored, not adopted)"] == pytest.approx([5.0])


def test_ceiling_table_reports_paired_differences_from_eval_loss(tune, tmp_path, monkeypatch):
    run = _run(tune)
    monkeypatch.setattr(tune, "_ceiling_set", lambda path: ([run, run], [1.0, 3.0]))
    out = tmp_path / "ceiling.md"
    tune.ceiling(["set=ignored"], str(out))
    text = out.read_text()
    assert "| set (n=2) |" in text
    assert "| eval-loss patience 3 + load best | 2.00 ± 1.41 |" in text
    # target min: 5.0 on both runs minus eval-loss 1.0 / 3.0: paired mean +3.00
    assert "| restore-best, target min (default before) | 5.00 ± 0.00; +3.00 [" in text
