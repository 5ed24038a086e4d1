"""floor_spread.py: the spread summary, and a clean skip without the model or the data."""

from __future__ import annotations

import statistics

import pytest


def test_spread_summarises_draws(load_script):
    fs = load_script("floor_spread")
    xs = [0.02, 0.04, 0.03, 0.05]
    got = fs.spread(xs)
    assert got["mean"] == pytest.approx(0.035)
    assert got["sd"] == pytest.approx(statistics.stdev(xs))
    assert got["cv"] == pytest.approx(statistics.stdev(xs) / 0.035)
    assert got["max_over_min"] == pytest.approx(2.5)
    assert fs.spread([0.0, 0.0])["max_over_min"] == float("inf")


def test_skips_without_the_data(load_script, tmp_path, capsys):
    fs = load_script("floor_spread")
    out = tmp_path / "f.json"
    assert fs.main(["--out", str(out), "--data-dir", str(tmp_path / "none")]) == 0
    assert "skipped" in capsys.readouterr().out and not out.exists()
