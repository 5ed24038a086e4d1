"""tune_stage2_signal.py: the issue's other stage-2 signals, replayed as the stopper sees them."""

from __future__ import annotations

import pytest


def test_derived_signals_are_signed_copies(load_script):
    ts = load_script("tune_stage2_signal")
    runs = {"x": [{"points": {"10": {"interactions": {
        "interactions/emerged/rho": 0.4, "interactions/emerged/mean_order": 2.5,
        "interactions/emerged/strength_norm": 0.3, "interactions/noise": 0.1}}}}]}  # fmt: skip
    out = ts.with_derived_signals(runs)
    m = out["x"][0]["points"]["10"]["interactions"]
    assert m["emerged_rho_fall"] == pytest.approx(-0.4)  # a fall is a rise of the negation
    assert m["emerged_order_rise"] == pytest.approx(2.5)
    assert m["emerged_share_rise"] == pytest.approx(0.3)
    assert "emerged_rho_fall" not in runs["x"][0]["points"]["10"]["interactions"]  # a copy


def test_a_rho_fall_fires_the_stopper(load_script):
    """The negated rho makes the stopper's rise test a fall test (after stage 1)."""
    from sft_interaction_callback.tracking.stopping import NoiseRiseStopper

    ts = load_script("tune_stage2_signal")
    kw = ts.signal_grid()["emerged rho fall k2 p1 stage_end"]
    st = NoiseRiseStopper(**kw)
    rho = {10: 0.8, 20: 0.8, 40: 0.8, 80: 0.7}
    fired = [st.update(s, {"interactions/removed/fraction": 0.5, kw["metric"]: -rho[s]})
             for s in sorted(rho)]  # fmt: skip
    assert fired == [False, False, False, True] and st.stage_ended_at == 20


def test_ranks_on_tuning_runs(load_script, capsys):
    ts = load_script("tune_stage2_signal")
    assert ts.main(["--top", "3"]) == 0
    table = capsys.readouterr().out
    assert "(shipped)" in table and "emerged rho fall" in table
    rows = [ln for ln in table.splitlines() if ln.startswith("| emerged")]
    assert rows and all(ln.split("|")[3].strip() == "n/a" for ln in rows)  # no demo data
