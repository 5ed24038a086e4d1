"""scripts/gpu_check.py, the prepared device check, rehearsed on the CPU at tiny sizes.

The script is run the way it will be run on a lent GPU (a subprocess, its last stdout
line one JSON object), so that the day a device is lent, the only untested thing is the
device itself. Timings are not checked (unit tests never time anything); that every
section produced its rows, and that the correctness checks passed, is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(320)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("peft")
    out = tmp_path_factory.mktemp("gpucheck")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    return proc, out


def test_exits_cleanly_with_one_json_line_last(tiny_run):
    proc, _ = tiny_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    last = proc.stdout.strip().splitlines()[-1]
    result = json.loads(last)
    for key in ("device", "versions", "values", "fit", "train", "overhead", "skipped"):
        assert key in result, key
    assert {"torch", "transformers", "peft"} <= set(result["versions"])
    assert result["mode"] == "tiny" and result["correct"] is True
    # nothing failed silently: a section that could not run says so, never with an error
    assert isinstance(result["skipped"], list)
    errors = [s for s in result["skipped"] if s["reason"].startswith("error")]
    assert not errors, errors


def test_correctness_checks_passed(tiny_run):
    result = json.loads(tiny_run[0].stdout.strip().splitlines()[-1])
    values = result["values"]["correctness"]
    for path in ("full", "prefix"):  # device (here the CPU again) vs CPU
        check = values["device_vs_cpu"][path]
        assert check["passed"] and check["max_abs"] <= check["tolerance"]
    for where in ("device", "cpu"):  # prefix tree vs full passes
        check = values["prefix_vs_full"][where]
        assert check["passed"] and check["max_abs"] <= check["tolerance"]
    bf16 = values["bf16_vs_fp32"]
    assert bf16["max_abs"] >= 0 and 0 <= bf16["salient_jaccard_min"] <= 1
    fit = result["fit"]["correctness"]
    assert fit["passed"] and fit["max_rel_diff"] <= fit["tolerance"]
    losses = result["train"]["losses"]
    assert losses["losses_identical"] and losses["weights_identical"] and losses["passed"]
    assert losses["probe_points_skipped"] == 0 and len(losses["probe_steps"]) >= 2


def test_every_timing_section_produced_rows(tiny_run):
    result = json.loads(tiny_run[0].stdout.strip().splitlines()[-1])
    timings = result["values"]["timings"]
    assert {t["path"] for t in timings} == {"prefix", "full"}
    assert all(t["masks_per_s"] > 0 and t["peak_gib"] is None for t in timings)  # no CUDA
    assert {t["model"] for t in result["train"]["steps"]} == {m["model"] for m in result["models"]}
    assert {t["games"] for t in result["fit"]["timings"]} == {"random", "model"}
    overlap = result["fit"]["overlap"]
    assert overlap["serial_seconds_per_point"] > 0 and overlap["overlapped_seconds_per_point"] > 0
    overhead = result["overhead"]
    assert overhead["max_steps"] == 3000 and overhead["points"] > 0 and overhead["rows"]
    for row in overhead["rows"]:
        expected = row["points"] * (row["probe_seconds_per_point"] + row["fit_seconds_per_point"])
        assert row["overhead"] == pytest.approx(expected / (3000 * row["seconds_per_step"]))


def test_report_files_were_written(tiny_run):
    proc, out = tiny_run
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    md = out / f"gpu_check_{result['date']}.md"
    js = out / f"gpu_check_{result['date']}.json"
    assert md.exists() and js.exists()
    assert json.loads(js.read_text())["values"] == result["values"]
    text = md.read_text()
    assert "| check |" in text and "## Overhead of the default schedule" in text
    assert text.strip() in proc.stdout  # the same markdown was printed
