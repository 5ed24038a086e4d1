"""``sft-interactions demo --quick`` end to end, in process: files, summary.json, printout."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from sft_interaction_callback.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SUMMARY_KEYS = {
    "run_dir",
    "settings",
    "seed",
    "mode",
    "max_steps",
    "stop",
    "accuracy",
    "eval_loss",
    "train_loss",
    "removal",
    "emerged",
    "noise",
    "planted",
    "checks",
    "stage1",
    "timing",
    "report",
}


def _run_dir(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, f"expected one run folder under {out}, found {runs}"
    return runs[0]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick demo run shared by the tests below: (run folder, stdout, seconds)."""
    out = tmp_path_factory.mktemp("demo")
    import contextlib
    import io

    buf = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        code = main(["demo", "--quick", "--output-dir", str(out), "--seed", "0"])
    seconds = time.perf_counter() - start
    assert code == 0, buf.getvalue()[-3000:]
    return _run_dir(out), buf.getvalue(), seconds


def test_quick_demo_is_quick(quick_run):
    _, _, seconds = quick_run
    assert seconds < 120, f"demo --quick took {seconds:.0f} s (budget: 2 minutes)"


def test_run_folder_contents(quick_run):
    run_dir, _, _ = quick_run
    snaps = run_dir / "interactions"
    steps = sorted(snaps.glob("step-*.safetensors"))
    assert [p.name for p in steps] == [f"step-{s:08d}.safetensors" for s in (0, 20, 40, 60)]
    records = [json.loads(line) for line in (snaps / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 20, 40, 60]
    assert all("interactions/noise" in r and "interactions/removed/fraction" in r for r in records)
    probes = json.loads((snaps / "probes.json").read_text())
    assert len(probes["probes"]) == 2 and probes["n_players"] == 6
    assert (run_dir / "pretrained" / "config.json").is_file()
    assert (run_dir / "pretrained" / "tokenizer.json").is_file()
    assert (run_dir / "adapter-final" / "adapter_config.json").is_file()
    state = json.loads((run_dir / "trainer_state.json").read_text())
    evals = [h for h in state["log_history"] if "eval_accuracy" in h]
    assert [h["step"] for h in evals] == [0, 20, 40, 60]
    assert all("eval_loss" in h for h in evals)


def test_summary_json(quick_run):
    run_dir, _, _ = quick_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert Path(summary["run_dir"]) == run_dir
    assert summary["max_steps"] == 60
    stop = summary["stop"]
    assert {"step", "reason", "fired", "before_last_step", "denoising_stage_ended_at"} <= set(stop)
    assert {"restore_step", "noise_floor", "min_delta"} <= set(stop)
    assert isinstance(stop["reason"], str) and stop["reason"]
    acc = summary["accuracy"]
    for key in ("step0", "stop", "restored", "stage_end", "best", "best_step", "end", "end_step"):
        assert key in acc
    if stop["restore_step"] is not None:  # restore-best reads the accuracy of that checkpoint
        assert stop["restore_step"] >= stop["denoising_stage_ended_at"]
        assert acc["restored"] == acc["by_step"][str(acc["restored_step"])]
    assert set(acc["by_step"]) == {"0", "20", "40", "60"}
    assert all(0.0 <= v <= 1.0 for v in acc["by_step"].values())
    assert acc["end_step"] == 60 and acc["end"] == acc["by_step"]["60"]
    assert acc["best"] == max(acc["by_step"].values())
    assert {"removed_strength_at_stop", "removed_strength_at_end", "share_before_stop"} <= set(
        summary["removal"]
    )
    assert summary["removal"]["removed_strength_at_end"] is not None
    assert "grew_after_stop" in summary["emerged"]
    assert set(summary["checks"]) == {
        "stopped_before_last_step",
        "removal_mostly_before_stop",
        "emerged_grew_after_stop",
        "accuracy_at_stop_ge_end",
        "restored_within_2pp_of_best",
    }
    planted = {p["type"]: p for p in summary["planted"]}
    assert planted["AND"]["words"] == ["silver", "key"]
    assert planted["OR"]["words"] == ["storm", "flood"]
    for p in planted.values():
        assert len(p["probes"]) == 1  # quick: one AND probe and one OR probe
        assert re.fullmatch(r"\d+/1", p["salient_step0"])
        assert "step0" in p["probes"][0] and "end" in p["probes"][0]
    timing = summary["timing"]
    assert timing["wall_seconds"] > 0 and timing["cpu_seconds"] > 0
    if stop["fired"]:  # the summary is consistent with the stop decision
        assert stop["step"] in {0, 20, 40, 60}
        assert os.path.isfile(run_dir / "interactions" / "stop.json")


def test_printed_summary(quick_run):
    run_dir, text, _ = quick_run
    assert "=== demo summary ===" in text
    tail = text[text.index("=== demo summary ===") :]
    for needle in (
        "denoising stage:",
        "stop:",
        "reason:",
        "restore-best:",
        "held-out accuracy: step 0",
        "removed strength:",
        "newly emerged strength",
        "planted AND pattern {silver AND key}",
        "planted OR pattern {storm OR flood}",
        "checks:",
        f"run folder: {run_dir}",
    ):
        assert needle in tail, f"{needle!r} missing from the summary:\n{tail}"
    # progress lines: one per probe point
    assert len(re.findall(r"^  step +\d+ +train loss", text, flags=re.M)) == 4


def test_demo_argument_errors(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--report-to", "tensorboard"])


def test_quick_demo_logs_to_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["demo", "--quick", "--output-dir", str(tmp_path), "--report-to", "wandb"])
    assert code == 0, buf.getvalue()[-3000:]
    run_dir = _run_dir(tmp_path)
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "expected one offline W&B run under the run folder"
    assert list(runs[0].glob("run-*.wandb")), "the offline run has no transaction log"
    assert "WANDB_DIR" not in os.environ  # the demo restored the environment


def test_a_validation_split_changes_nothing_but_adds_val_metrics(quick_run, tmp_path):
    """``val_size``: the same training, held-out accuracy and interactions as without it,
    plus ``val_loss`` / ``val_accuracy`` at every evaluation (the input of a fair eval-loss
    stop in the studies)."""
    from dataclasses import replace

    from sft_interaction_callback.demo.run import run_demo
    from sft_interaction_callback.demo.settings import QUICK

    run_dir, _, _ = quick_run
    plain = json.loads((run_dir / "summary.json").read_text())
    result = run_demo(
        replace(QUICK, val_size=50), output_dir=tmp_path, seed=0, threads=1, log=lambda _: None
    )
    with_val = result.summary
    history = json.loads((result.run_dir / "trainer_state.json").read_text())["log_history"]
    plain_history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]

    def losses(h):
        return [(x["step"], x["loss"]) for x in h if "loss" in x]

    assert losses(history) == losses(plain_history) and losses(history)
    assert with_val["accuracy"]["by_step"] == plain["accuracy"]["by_step"]
    assert with_val["eval_loss"] == plain["eval_loss"]
    assert with_val["noise"] == plain["noise"]
    assert plain["val_loss"]["by_step"] == {}
    steps = set(with_val["eval_loss"]["by_step"])
    assert set(with_val["val_loss"]["by_step"]) == steps
    assert set(with_val["val_accuracy"]["by_step"]) == steps
    assert all(0.0 <= v <= 1.0 for v in with_val["val_accuracy"]["by_step"].values())
    # a different split: its loss is not the held-out one
    assert with_val["val_loss"]["by_step"] != with_val["eval_loss"]["by_step"]
