"""tune_knee_stop.py: the plan's candidates replayed on the committed tuning runs only."""

from __future__ import annotations


def test_ranks_every_candidate_on_tuning_runs(load_script):
    tk = load_script("tune_knee_stop")
    runs = tk.tuning_runs()
    assert runs["demo"] and runs["smollm"]
    for setting, rs in runs.items():
        if setting == "demo":
            continue
        for r in rs:  # scored on the tuning split: judge_acc was replaced by tune_acc
            assert all(p["judge_acc"] == p["tune_acc"] for p in r["points"].values())
    for name, kw in tk.grid().items():  # pinned, whatever the package's defaults are
        assert kw["stage_test"] == name.split()[0]
    rows, rival = tk.evaluate(runs)
    assert len(rows) == len(tk.grid())
    worst = [r["worst_minus_rival"] for r in rows]
    assert worst == sorted(worst)
    shipped = next(r for r in rows if r["candidate"] == "plateau p2 x3 removal_peak")
    for setting, v in shipped["settings"].items():
        assert 0 < v["fraction"] <= 1 and v["runs"] == len(runs[setting])
        assert abs(v["minus_rival"] - (v["regret"] - rival[setting])) < 1e-9
