"""The cost entry point (scripts/experiments/cost.py): FLOP arithmetic and its outputs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest


@pytest.fixture(scope="module")
def cost(load_script):
    return load_script("cost")


def test_flops_per_mask_by_hand(cost):
    toy = cost.Transformer("toy", block_params=100, layers=1, d_model=2, vocab=3)
    a = cost.Assumptions(n_players=1, prompt_tokens=4, target_tokens=2)
    # context (4 + 2) / 2 = 3: 2 * 100 + 4 * 1 * 3 * 2 = 224 per token; head 2 * 2 * 3 = 12
    # naive: 6 tokens through blocks and head; engine: 2 * 4 / 2 + 2 = 6 tokens, head on 2
    assert cost.probe_flops_per_mask(toy, a, engine=False) == 6 * 224 + 6 * 12
    assert cost.probe_flops_per_mask(toy, a, engine=True) == 6 * 224 + 2 * 12


def test_prefix_tree_token_count_matches_a_brute_force_count(cost):
    # players at evenly spaced positions; count the prompt tokens a prefix tree computes
    n, p = 6, 70
    seg = p // (n + 1)
    exact = sum(2**j * seg for j in range(n + 1))  # segment j computed once per prefix state
    approx = 2**n * 2.0 * p / (n + 1)
    assert abs(exact - approx) / approx < 2.0 / 2**n


def test_projection_is_consistent(cost):
    from sft_interaction_callback.tracking import ProbeSchedule

    a = cost.Assumptions()
    p = cost.project(cost.QWEN25_7B, a)
    assert p["masked_inputs"] == 16 * 1024
    assert p["engine"]["flops_per_point"] < p["naive"]["flops_per_point"]
    overheads = [r["engine_overhead"] for r in p["runs"]]
    assert overheads == sorted(overheads, reverse=True)  # longer runs amortise the probe
    for r in p["runs"]:
        assert r["probe_points"] == len(ProbeSchedule(None, max_steps=r["steps"]).steps(r["steps"]))
    halved = cost.project(cost.QWEN25_7B, replace(a, probes=8))
    ratio = halved["engine"]["flops_per_point"] / p["engine"]["flops_per_point"]
    assert ratio == pytest.approx(0.5)


def test_entry_point_with_the_quick_benches(cost, tmp_path):
    assert cost.main(["--out", str(tmp_path), "--tiny", "--bench", "--threads", "1"]) == 0
    result = json.loads((tmp_path / "projection.json").read_text())
    assert set(result) >= {"projection", "bench_prediction", "sensitivity", "bench_seconds"}
    assert "Projection (arithmetic, not measured)" in (tmp_path / "table.md").read_text()
    for name in ("bench_probe.txt", "bench_andor.txt"):
        text = (tmp_path / name).read_text()
        assert "# exit 0" in text, text[:500]
    assert "values equal to 1e-4: yes" in (tmp_path / "bench_probe.txt").read_text()
    assert "Solver: default (exact LP) vs admm-pdhg" in (tmp_path / "bench_andor.txt").read_text()
