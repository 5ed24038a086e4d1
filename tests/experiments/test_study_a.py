"""Study A's entry point (scripts/experiments/study_a_demo.py): analysis and a tiny run."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def study(load_script):
    return load_script("study_a_demo")


def _summary(stop: int | None) -> dict:
    acc = {0: 0.8, 10: 0.9, 20: 0.95, 30: 0.97, 40: 0.96, 50: 0.94, 60: 0.93, 70: 0.9, 80: 0.85}
    loss = {0: 0.5, 10: 0.4, 20: 0.3, 30: 0.2, 40: 0.25, 50: 0.21, 60: 0.22, 70: 0.3, 80: 0.4}
    planted_row = {
        "probe": "and-0",
        "step0": {"category": "salient", "rank": 4},
        "stop": {"category": "preserved", "rank": 1} if stop else None,
        "end": {"category": "emerged", "rank": 2},
    }
    return {
        "seed": 7,
        "max_steps": 80,
        "settings": {},
        "stop": {"step": stop, "fired": stop is not None, "reason": "r"},
        "accuracy": {"by_step": {str(k): v for k, v in acc.items()}},
        "eval_loss": {"by_step": {str(k): v for k, v in loss.items()}},
        "planted": [{"type": "AND", "words": ["a", "b"], "probes": [planted_row]}],
        "timing": {"finetune_seconds": 100.0, "eval_seconds": 10.0},
    }


def _metrics() -> list[dict]:
    frac = {0: 0.0, 10: 0.5, 20: 0.8, 40: 0.9, 60: 1.0, 80: 0.95}
    return [
        {
            "step": s,
            "skipped": False,
            "interactions/removed/fraction": f,
            "interactions/probe_seconds": 2.0,
            "interactions/noise": s / 100,
            "interactions/emerged/rho": 0.1,
        }
        for s, f in frac.items()
    ]


def test_analysis_of_a_run_that_stopped(study):
    r = study.analyse(_summary(stop=40), _metrics(), eval_every=10)
    m = r["methods"]
    # eval losses on the grid 10..80: best 0.2 at 30, then 0.25, 0.21, 0.22 -> stop at 60
    assert m["eval_loss_patience3"]["steps"] == 60
    assert m["eval_loss_patience3"]["accuracy"] == 0.93
    assert m["eval_loss_patience3_best"]["model_step"] == 30
    assert m["eval_loss_patience3_best"]["accuracy"] == 0.97
    assert m["interaction_stop"] == {
        "steps": 40,
        "model_step": 40,
        "accuracy": 0.96,
        "regret_vs_best": pytest.approx(0.01),
    }
    assert m["best"]["steps"] == 30 and m["best"]["regret_vs_best"] == 0
    assert m["end"]["accuracy"] == 0.85
    rem = r["removal"]
    assert rem["fraction_at_stop"] == 0.9 and rem["fraction_peak"] == 1.0
    assert rem["step_reaching_90pct_of_peak"] == 40
    assert r["rho"]["stop"]["emerged"] == 0.1
    assert r["noise"] == {"stop": 0.4, "end": 0.8}
    planted = r["planted"][0]
    assert planted["stop_preserved"] == planted["end_emerged"] == planted["step0_salient"] == 1
    cost = r["cost"]
    assert cost["probe_points"] == 6 and cost["probe_seconds_total"] == 12.0
    assert cost["overhead_share"] == pytest.approx(12.0 / (100.0 - 12.0 - 10.0))


def test_a_rule_that_never_fired_counts_as_training_to_the_end(study):
    r = study.analyse(_summary(stop=None), _metrics(), eval_every=10)
    assert r["methods"]["interaction_stop"]["steps"] == 80
    assert r["removal"]["fraction_at_stop"] == 0.95
    assert r["planted"][0]["stop_emerged"] == 1  # the end's category stands in
    text = study.tables([r, study.analyse(_summary(stop=40), _metrics(), eval_every=10)])
    assert "| interaction stop (ours, stop only) | 60 ± 28 |" in text
    assert "| interaction stop + restore-best (ours, default) | 60 ± 28 |" in text


def test_tiny_study_runs_end_to_end(study, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = tmp_path / "out"
    code = study.main(
        ["--tiny", "--seeds", "0", "--out", str(out), "--work-dir", str(tmp_path / "w")]
        + ["--eval-every", "10"]
    )
    assert code == 0
    for name in ("runs.json", "runs.csv", "table.md", "stops.png"):
        assert (out / name).stat().st_size > 0, name
    (run,) = json.loads((out / "runs.json").read_text())["runs"]
    loss = {int(k): v for k, v in run["curves"]["eval_loss"].items()}
    grid = {s: v for s, v in loss.items() if s > 0 and s % 10 == 0}
    assert set(grid) == {10, 20, 30, 40, 50, 60}
    import compare  # scripts/experiments/compare.py, on sys.path once the study is loaded

    patience_stop = compare.patience_stop

    assert run["methods"]["eval_loss_patience3"]["steps"] == (patience_stop(grid) or 60)
    for m in run["methods"].values():
        assert 0 <= m["steps"] <= 60 and 0.0 <= m["accuracy"] <= 1.0
        assert m["regret_vs_best"] >= 0
    assert run["cost"]["probe_points"] == 4 and run["cost"]["probe_seconds_total"] > 0
    assert "| stop | steps used |" in (out / "table.md").read_text()
