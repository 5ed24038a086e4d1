"""build_report on synthetic run folders: files, page contents, loading rules."""

from __future__ import annotations

import html
import json
import re

import pytest
import torch

from sft_interaction_callback.reporting.plots import PLOTS
from sft_interaction_callback.reporting.probe_steps import word_strengths
from sft_interaction_callback.reporting.report import build_report
from sft_interaction_callback.reporting.run_data import (
    NoInteractionsData,
    find_interactions_dir,
    load_run,
)

PNG = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = [p.name for p in PLOTS]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_every_plot_is_a_png_file_linked_and_each_chart_drawn_once(full_report):
    """PNG files beside the page (linked, not inlined), and each chart once, as SVG."""
    assert list(full_report.plots) == ALL_PLOTS
    page = full_report.html.read_text(encoding="utf-8")
    for name, path in full_report.plots.items():
        data = path.read_bytes()
        width, height = _png_size(data)
        assert width > 400 and height > 200 and len(data) > 5000, name
        assert path.parent == full_report.out_dir
        assert f'<a href="{name}">{name}</a>' in page
    assert "data:image/png" not in page and "<img" not in page
    figures = re.findall(r'<figure id="plot-([a-z]+)">', page)
    assert figures == ["counts", "strengths", "quality", "noise", "orders", "loss"]
    assert page.count("<svg ") == len(figures)
    assert full_report.files == [*full_report.plots.values(), full_report.html]
    assert len(page.encode()) < sum(p.stat().st_size for p in full_report.plots.values())


def test_each_probe_is_viewable_at_every_probed_step(full_report, full_run):
    page = full_report.html.read_text(encoding="utf-8")
    data = json.loads(html.unescape(re.search(r'id="probe-data">(.*?)</script>', page).group(1)))
    run = load_run(full_run.root)
    assert data["steps"] == run.snapshot_steps and data["steps"][data["focus"]] == 20
    assert len(data["probes"]) == len(full_run.probes)
    for p, per_step in enumerate(data["probes"]):
        assert len(per_step) == len(data["steps"])
        for step, (ands, ors, removed, words) in zip(data["steps"], per_step, strict=True):
            top = run.top_interactions(p, 8, step)
            assert [it[0] for it in ands] == [it.subset for it in top["and"]]
            assert [it[0] for it in ors] == [it.subset for it in top["or"]]
            assert [it[3] for it in removed] == [int(it.kind == "or") for it in top["removed"]]
            assert len(words) == run.n_players and max(words) == 100 and min(words) >= 0
    sliders = re.findall(r'<input class="step" type="range" min="0" max="(\d+)"', page)
    assert sliders == [str(len(data["steps"]) - 1)] * len(full_run.probes)


def test_words_are_coloured_by_their_interaction_strength(full_run):
    run = load_run(full_run.root)
    strengths = word_strengths(run, 20)
    i_and, i_or = full_run.tables[20]
    salient = full_run.sets["preserved"] | full_run.sets["emerged"]
    size = i_and.shape[-1]
    for p, got in enumerate(strengths):
        table = torch.cat([i_and[p], i_or[p]]).abs().double() * salient[p]
        want = []
        for i in range(run.n_players):
            total = 0.0
            for s in range(size):
                if (s >> i) & 1:
                    total += float(table[s] + table[size + s]) / bin(s).count("1")
            want.append(total)
        top = max(want)
        assert got == [round(100 * w / top) for w in want]


def test_page_is_self_contained(full_report):
    page = full_report.html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # nothing fetched from anywhere: no src, no href but anchors and the PNG files beside
    # the page, no @import, no url()
    assert not re.search(r'src="', page)
    assert not re.search(r'href="(?!#)(?![a-z_]+\.png")', page)
    assert "@import" not in page and "url(" not in page
    assert "http://" not in page and "https://" not in page


def test_summary_holds_stop_stage_and_final_metrics(full_report, full_run):
    page = full_report.html.read_text(encoding="utf-8")
    assert f"<b>step {full_run.stop_step}</b>: {html.escape(full_run.stop_reason)}" in page
    assert full_run.stop_reason not in page  # escaped: it holds "<after>"
    assert f"First stage ended</dt><dd>step {full_run.stage_end}" in page
    assert f"Metrics at step {full_run.stop_step} (stop)" in page
    assert "<th>γ</th>" in page  # a reference was used
    assert f"steps {full_run.skipped_step}" in page  # the skipped probe point is noted


def test_probe_prompts_are_escaped_with_players_highlighted(full_report, full_run):
    page = full_report.html.read_text(encoding="utf-8")
    assert "<script>alert" not in page and "</script> &" not in page
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt; &amp; <span" in page
    for probe in full_run.probes:
        for i, word in enumerate(probe.words):
            pattern = rf'<span class="pl" data-p="{i}" style="--w:[01]\.\d\d" title="player {i}: '
            assert re.search(
                pattern + rf'\d+% of the strongest word">{re.escape(html.escape(word))}</span>',
                page,
            )
        assert f'id="probe-{full_run.probes.index(probe)}"' in page
    assert page.count('class="ix-row') > 3 * len(full_run.probes)
    for cat in ("preserved", "emerged", "removed"):
        assert f'data-cat="{cat}"' in page


def test_top_interactions_are_the_strongest_of_each_category(full_run):
    run = load_run(full_run.root)
    assert run.focus_step == 20 and run.base_step == 0
    i_and, i_or = full_run.tables[20]
    base = torch.cat(full_run.tables[0], -1)
    size = i_and.shape[-1]
    for p in range(len(full_run.probes)):
        top = run.top_interactions(p, k=3)
        for kind, table in (("and", i_and[p]), ("or", i_or[p])):
            half = slice(0, size) if kind == "and" else slice(size, 2 * size)
            mask = (full_run.sets["preserved"] | full_run.sets["emerged"])[p, half]
            want = sorted(torch.nonzero(mask).flatten().tolist(), key=lambda s: -abs(table[s]))
            assert [it.subset for it in top[kind]] == want[:3]
            for it in top[kind]:
                assert it.value == pytest.approx(float(table[it.subset]))
                assert it.category == (
                    "preserved" if full_run.sets["preserved"][p, half][it.subset] else "emerged"
                )
                assert it.words == tuple(full_run.probes[p].words[i] for i in it.players)
        removed = torch.nonzero(full_run.sets["removed"][p]).flatten().tolist()
        want = sorted(removed, key=lambda j: -abs(base[p, j]))[:3]
        got = [it.subset + (size if it.kind == "or" else 0) for it in top["removed"]]
        assert got == want and all(it.step == 0 for it in top["removed"])


def test_order_histograms_match_the_tracker(full_run):
    hists = load_run(full_run.root).order_histograms()
    for c, h in full_run.histograms.items():
        assert hists[c]["count"] == pytest.approx(h["count"].tolist(), abs=1e-5)
        assert hists[c]["share"] == pytest.approx(h["strength_norm"].tolist(), abs=1e-5)


@pytest.mark.parametrize("logs", ["trainer_state", "checkpoint", "log_history.json"])
def test_loss_history_sources(tmp_path, make_run, logs):
    made = make_run(tmp_path, logs=logs, reference=False)
    run = load_run(made.root)
    losses = run.losses()
    assert len(losses["train"][0]) == 20 and len(losses["eval_loss"][0]) == 4
    expected = {
        "trainer_state": made.root / "trainer_state.json",
        "checkpoint": made.root / "checkpoint-20" / "trainer_state.json",  # the newest
        "log_history.json": made.interactions / "log_history.json",
    }[logs]
    assert run.log_history_source == expected
    assert run.train_steps == 20


def test_run_folder_lookup(tmp_path, make_run):
    made = make_run(tmp_path / "custom", subdir="my_snapshots", logs="trainer_state")
    assert find_interactions_dir(made.root) == (made.interactions, made.root)
    # the snapshot folder itself is accepted too, and still finds the Trainer's files
    run = load_run(made.interactions)
    assert run.interactions_dir == made.interactions and run.run_dir == made.root
    assert run.log_history_source == made.root / "trainer_state.json"

    empty = tmp_path / "empty"
    (empty / "interactions").mkdir(parents=True)
    with pytest.raises(NoInteractionsData, match="no interaction data"):
        load_run(empty)
    (empty / "interactions" / "probes.json").write_text('{"probes": []}')
    with pytest.raises(NoInteractionsData, match="no probe point"):
        build_report(empty)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_run(tmp_path / "missing")
    with pytest.raises(ValueError, match="top"):
        build_report(made.root, top=0)


def test_stop_from_metrics_when_stop_json_is_absent(tmp_path, make_run):
    made = make_run(tmp_path)
    (made.interactions / "stop.json").unlink()
    run = load_run(made.root)
    assert run.stop_step == 20 and "<after>" in run.stop["reason"]
    assert run.skipped_steps == [12] and 12 not in run.steps


def test_the_log_reaching_the_latest_step_wins(tmp_path, make_run):
    """save_strategy="no" + restore-best: the only checkpoint is an early one; the whole
    run's log_history.json (written by the callback at the end) must win over it."""
    from sft_interaction_callback.snapshots import atomic_write_json

    made = make_run(tmp_path, logs="log_history.json", reference=False)
    early = [{"step": s, "loss": 3.0 - 0.05 * s} for s in range(1, 11)]
    atomic_write_json(
        made.root / "checkpoint-10" / "trainer_state.json",
        {"global_step": 10, "log_history": early},
    )
    run = load_run(made.root)
    assert run.log_history_source == made.interactions / "log_history.json"
    assert len(run.losses()["train"][0]) == 20


def test_the_rule_comparison_is_shown_with_the_eval_loss_at_each_kept_step(tmp_path, make_run):
    from sft_interaction_callback.snapshots import atomic_write_json

    made = make_run(tmp_path, logs="trainer_state", reference=False)
    rows = [
        {"rule": "this run's rule", "stop_step": 15, "kept_step": 10, "fraction_of_steps": 0.75},
        {"rule": "patience 4", "stop_step": None, "kept_step": 20, "fraction_of_steps": 1.0},
    ]
    atomic_write_json(made.interactions / "rules.json", {"max_steps": 20, "rules": rows})
    run = load_run(made.root)
    assert [r["rule"] for r in run.rules] == ["this run's rule", "patience 4"]
    # conftest's log: eval_loss = 3.1 - 0.03 * step at steps 5, 10, 15, 20
    assert run.eval_at(10) == pytest.approx(2.8) and run.eval_at(12) == pytest.approx(2.8)
    assert run.eval_at(4) is None
    page = (build_report(made.root).html).read_text(encoding="utf-8")
    section = page[page.index('id="rules"') :]
    assert "never (trains to the end)" in section and "step 15" in section
    assert "eval loss at the kept step" in section and "2.8" in section


def test_no_rule_comparison_without_rules_json(tmp_path, make_run):
    made = make_run(tmp_path, logs="trainer_state", reference=False)
    assert load_run(made.root).rules == []
    assert 'id="rules"' not in build_report(made.root).html.read_text(encoding="utf-8")
