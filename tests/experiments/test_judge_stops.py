"""judge_stops.py: the per-setting verdict of issue 23, read from the committed runs."""

from __future__ import annotations

import json

import pytest

KEYS = {
    "setting",
    "seeds",
    "restore_best_minus_best_label_free",
    "runs_best_in_first_half",
    "default_stopped_before_end_in_those",
    "default_mean_fraction_of_steps_in_those",
    "rules",
}


def test_json_verdict_per_setting(load_script, capsys):
    js = load_script("judge_stops")
    assert js.main(["--json"]) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    names = [s["setting"] for s in settings]
    for word in ("demo", "minilm", "causal", "smollm"):
        assert any(word in n for n in names), word
    for s in settings:
        assert KEYS <= set(s)
        if not s["seeds"]:
            continue
        low, mean, high = s["restore_best_minus_best_label_free"]
        if len(s["seeds"]) > 1:
            assert low <= mean <= high
        else:  # one seed: a mean, no interval
            assert low is None and high is None and mean is not None
        for rule in s["rules"].values():
            assert 0 < rule["mean_fraction_of_steps"] <= 1 and rule["mean_regret_pp"] >= 0
        assert s["rules"]["best"]["mean_regret_pp"] == 0


def test_the_demo_adapter_replays_the_recorded_default(load_script):
    js = load_script("judge_stops")
    stops = load_script("stops")
    runs = [(d, r) for d in js.SETTINGS if d.demo for r in js.load_setting(d)]
    if not runs:
        pytest.skip("no stored demo runs")
    for demo, run in runs:  # each with the rule that was the default when it ran
        decision = stops.RULES[demo.recorded_rule](run)
        assert decision.used == run["recorded_restore_step"], run["run"]


def test_regret_against_compute_is_drawn(load_script, tmp_path, capsys):
    js = load_script("judge_stops")
    assert js.main(["--plot", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "r.png").stat().st_size > 10_000
    assert "(default)" in capsys.readouterr().out
