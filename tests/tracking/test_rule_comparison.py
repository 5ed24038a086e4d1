"""Where other stop rules would have stopped: an exact replay of the recorded probe points."""

from __future__ import annotations

from sft_interaction_callback import NoiseRiseStopper, ShadowStopper
from sft_interaction_callback.keys import NOISE_FLOOR_KEY, NOISE_KEY, REMOVED_FRACTION_KEY
from sft_interaction_callback.tracking.rule_comparison import compare_rules, rule_variants


def _records(noise: list[float], removed: list[float], floor: float = 0.001) -> list[dict]:
    out = [{"step": 0, NOISE_KEY: 0.0, REMOVED_FRACTION_KEY: 0.0, NOISE_FLOOR_KEY: floor}]
    for i, (n, r) in enumerate(zip(noise, removed, strict=True), start=1):
        out.append({"step": 10 * i, NOISE_KEY: n, REMOVED_FRACTION_KEY: r})
    return out


# removal saturates by step 40 (the plateau test confirms the stage end at 70), then the
# noise rises from its post-stage minimum
NOISE = [0.30, 0.25, 0.20, 0.15, 0.10, 0.14, 0.18, 0.22, 0.26, 0.30, 0.34, 0.38]
REMOVED = [0.20, 0.40, 0.50, 0.52, 0.52, 0.52, 0.51, 0.52, 0.52, 0.52, 0.52, 0.52]


def test_longer_patience_stops_later_and_every_row_is_a_replay():
    records = _records(NOISE, REMOVED)
    rows = {r["rule"]: r for r in compare_rules(records, NoiseRiseStopper(), max_steps=200)}
    stops = [rows[f"patience {p}"]["stop_step"] for p in (1, 3, 4)]
    ours = rows["this run's rule"]
    assert ours["patience"] == 2 and ours["stage_ended_at"] is not None
    assert stops[0] < ours["stop_step"] < stops[1] < stops[2]
    others = {t for t in ("plateau", "rate", "knee") if t != ours["stage_test"]}
    assert {rows[f"stage test {t}"]["stage_test"] for t in others} == others
    for r in rows.values():  # each row is exactly what that rule does when fed the same points
        rule = NoiseRiseStopper(
            patience=r["patience"], restore=r["restore"], stage_test=r["stage_test"]
        )
        rule.set_floor(0.001)
        for rec in records[1:]:
            if rule.update(rec["step"], rec):
                break
        assert r["stop_step"] == rule.stop_step
        assert r["kept_step"] == (rule.restore_step or rule.stop_step)
        assert r["fraction_of_steps"] == r["stop_step"] / 200


def test_a_rule_that_never_fires_trains_to_the_last_point():
    # removal keeps growing (as on real data), so no stage end is confirmed
    growing = [0.02 * 1.4**i for i in range(1, len(NOISE) + 1)]
    rows = compare_rules(_records(NOISE, growing), NoiseRiseStopper(), max_steps=120)
    assert all(r["stop_step"] is None and r["fraction_of_steps"] == 1.0 for r in rows)


def test_variants_follow_the_run_s_own_rule_also_in_shadow_mode():
    mine = NoiseRiseStopper(patience=3, min_delta=0.05, restore="min")
    names = set(rule_variants(ShadowStopper(mine)))
    assert (
        "patience 3" not in names and {"patience 1", "patience 2", "restore removal_peak"} <= names
    )
    variants = rule_variants(mine)
    assert all(v.min_delta_setting == 0.05 for v in variants.values())
    assert variants["this run's rule"] is not mine and mine.patience == 3
