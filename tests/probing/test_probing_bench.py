"""scripts/bench_probe.py --quick runs and its engine agrees with the naive path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_probe.py"


def test_bench_quick(capsys):
    spec = importlib.util.spec_from_file_location("bench_probe", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "values equal to 1e-4: yes" in out and "masks/s" in out
