"""Issue 14: stops replayed from stored curves, the EB criterion, the paired interval."""

from __future__ import annotations

import math

import pytest
import torch


@pytest.fixture(scope="module")
def stops(load_script):
    return load_script("stops")


@pytest.fixture(scope="module")
def evidence(load_script):
    return load_script("evidence")


def _run(loss, acc, eb=None, inter=None, max_steps=None):
    steps = sorted(loss)
    pts = {}
    for s in steps:
        pts[str(s)] = {
            "tune_loss": loss[s],
            "judge_acc": acc[s],
            "eb": None if eb is None else eb.get(s),
            "interactions": {} if inter is None else inter.get(s, {}),
        }
    return {"grid": steps, "max_steps": max_steps or steps[-1], "points": pts}


def test_eval_loss_rules_end_best_and_fraction(stops):
    loss = {0: 2.0, 10: 1.0, 20: 0.8, 30: 0.9, 40: 0.85, 50: 0.95, 60: 0.7}
    acc = {0: 0.5, 10: 0.6, 20: 0.7, 30: 0.65, 40: 0.66, 50: 0.6, 60: 0.8}
    j = stops.judge(_run(loss, acc))
    assert (j["patience"]["stop_step"], j["patience"]["used_step"]) == (50, 50)
    assert (j["patience_best"]["stop_step"], j["patience_best"]["used_step"]) == (50, 20)
    assert j["patience_best"]["regret_pp"] == pytest.approx(10.0)
    assert j["best"]["used_step"] == 60 and j["best"]["regret_pp"] == 0.0
    assert j["end"]["used_step"] == 60
    assert j["fraction"]["used_step"] == 30
    assert j["eb"]["used_step"] == 60 and not j["eb"]["fired"]


def test_stops_table_gives_each_rule_its_share_of_the_planned_steps(load_script):
    """Issue 22: every rule's fraction of the planned steps beside its regret."""
    report = load_script("report_evidence")
    loss = {0: 2.0, 10: 1.0, 20: 0.8, 30: 0.9, 40: 0.85, 50: 0.95, 60: 0.7}
    acc = {0: 0.5, 10: 0.6, 20: 0.7, 30: 0.65, 40: 0.66, 50: 0.6, 60: 0.8}
    run = {**_run(loss, acc, max_steps=100), "seed": 1, "setting": "x", "noise": 0.2,
           "method": "lora"}  # fmt: skip
    table = report.stops_table(report.groups([run], set()))
    rows = {
        ln.split(" | ")[3]: ln.split(" | ") for ln in table.splitlines() if ln.startswith("| x")
    }
    # eval-loss patience 3 stops at 50 of 100 planned steps; "end" at the grid's last (60)
    assert rows["eval-loss patience 3"][5] == "50"
    assert rows["train to the end"][5] == "60"
    assert rows["eval-loss patience 3 + load best"][6] == "20"  # step kept (one seed: no sd)


def test_noise_accuracy_spearman_reads_the_points_after_the_early_ones(load_script):
    """Rank correlation of the noise signal with held-out accuracy from ~15% of the run."""
    report = load_script("report_evidence")
    steps = [0, 10, 20, 30, 40, 50, 60]
    acc = dict(zip(steps, [0.1, 0.9, 0.8, 0.85, 0.7, 0.6, 0.5], strict=True))
    noise = dict(zip(steps, [0.0, 0.9, 0.1, 0.2, 0.3, 0.4, 0.5], strict=True))
    inter = {s: {report.KEY + "noise": noise[s]} for s in steps}
    run = _run(dict.fromkeys(steps, 1.0), acc, inter=inter, max_steps=60)
    # from step 10 (>= 15% of 60) on: the step-10 point ranks first on both
    x = report.noise_accuracy_spearman(run)
    from scipy import stats

    ref = stats.spearmanr([noise[s] for s in steps[1:]], [acc[s] for s in steps[1:]]).statistic
    assert x == pytest.approx(ref) and x < 0
    flat = _run(dict.fromkeys(steps, 1.0), dict.fromkeys(steps, 0.5), inter=inter, max_steps=60)
    assert report.noise_accuracy_spearman(flat) is None  # undefined, not 0 or nan


def test_eb_rule_stops_at_first_positive_point_after_step_0(stops):
    loss = {0: 1.0, 10: 0.9, 20: 0.8, 30: 0.7}
    acc = {0: 0.1, 10: 0.2, 20: 0.3, 30: 0.4}
    d = stops.RULES["eb"](_run(loss, acc, eb={0: 0.5, 10: -1.0, 20: 0.2, 30: 0.3}))
    assert (d.stop, d.used, d.fired) == (20, 20, True)


def test_interaction_rules_replay_the_stoppers(stops):
    from sft_interaction_callback.keys import NOISE_FLOOR_KEY, NOISE_KEY, REMOVED_FRACTION_KEY
    from sft_interaction_callback.tracking.stopping import NoiseRiseStopper

    steps = list(range(0, 130, 10))
    frac = [0, 0.5, 0.8, 0.85, 0.86, 0.86, 0.86, 0.86, 0.86, 0.86, 0.86, 0.86, 0.86]
    noise = [0, 0.1, 0.1, 0.05, 0.04, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09]
    rows = zip(steps, frac, noise, strict=True)
    inter = {s: {REMOVED_FRACTION_KEY: f, NOISE_KEY: n} for s, f, n in rows}
    inter[0][NOISE_FLOOR_KEY] = 0.001
    run = _run({s: 1.0 for s in steps}, {s: s / 1000 for s in steps}, inter=inter)
    for s in steps:
        run["points"][str(s)]["interactions_design"] = inter[s]

    new = NoiseRiseStopper()
    new.set_floor(0.001)
    fired = next(s for s in steps if new.update(s, inter[s]))
    d = stops.RULES["interaction"](run)
    assert d.fired and d.stop == d.used == fired
    r = stops.RULES["interaction_restore"](run)
    assert r.stop == fired and r.used == new.restore_step and r.used < r.stop

    old = NoiseRiseStopper(patience=3, min_delta=0.0, stage_test="rate")
    fired_old = next(s for s in steps if old.update(s, inter[s]))
    v1 = stops.RULES["interaction_v1"](run)
    assert v1.fired and v1.stop == v1.used == fired_old


def test_registering_a_rule_is_one_function(stops):
    @stops.rule("first_point", "the first point")
    def first_point(run):
        s = stops.grid(run)[1]
        return stops.Decision(s, s, True)

    try:
        j = stops.judge(_run({0: 1.0, 5: 1.0, 9: 1.0}, {0: 0.2, 5: 0.5, 9: 0.4}))
        assert j["first_point"]["accuracy"] == 0.5
    finally:
        stops.RULES.pop("first_point")
        stops.LABELS.pop("first_point")


def test_t_interval(stops):
    m, lo, hi, n = stops.t_interval([1.0, 2.0, 3.0, None])
    assert (m, n) == (2.0, 3)
    assert lo == pytest.approx(2.0 - 4.302653 / math.sqrt(3), rel=1e-5)
    assert hi == pytest.approx(2.0 + 4.302653 / math.sqrt(3), rel=1e-5)
    assert math.isnan(stops.t_interval([1.0])[1])


def test_eb_statistic_matches_its_definition_and_leaves_training_alone(evidence):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    xs = [torch.randn(3) for _ in range(8)]
    ys = [torch.randn(1) for _ in range(8)]
    data = list(zip(xs, ys, strict=False))

    def loss_of(m, exs):
        return sum(((m(x) - y) ** 2).sum() for x, y in exs) / len(exs)

    eb = evidence.EBCriterion(data, loss_of, batch=8, seed=0)
    rng_before = torch.get_rng_state()
    value = eb.measure(model, 5)
    assert torch.equal(rng_before, torch.get_rng_state())
    assert model.weight.grad is None
    grads = []
    for x, y in data:
        g = torch.autograd.grad(loss_of(model, [(x, y)]), list(model.parameters()))
        grads.append(torch.cat([t.reshape(-1) for t in g]))
    G = torch.stack(grads).double()
    mean, var = G.mean(0), G.var(0, unbiased=True)
    expected = 1 - (8 / G.shape[1]) * float((mean**2 / var).sum())
    assert value == pytest.approx(expected, rel=1e-9)
    assert eb.values == {5: value} and eb.dims == {5: 4}


def test_splits_are_disjoint_and_judge_file_replaces_the_judging_half(evidence, tmp_path):
    data = tmp_path / "go"
    (data / "ekman").mkdir(parents=True)
    (data / "ekman" / "labels.txt").write_text("a\nb\n")
    (data / "ekman" / "dev.tsv").write_text(
        "".join(f"dev text {i}\t{i % 2}\tid{i}\n" for i in range(40)) + "multi\t0,1\tx\n"
    )
    (data / "ekman" / "train.tsv").write_text(
        "".join(f"train text {i}\t{i % 2}\tt{i}\n" for i in range(50)) + "dev text 3\t1\tdup\n"
    )
    sp = evidence.make_splits(data, None, train_size=20, tune_size=100, judge_size=100)
    assert len(sp.judge) == 20 and len(sp.tune) == 20
    texts = [{t for t, _ in x} for x in (sp.train, sp.tune, sp.judge)]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    judge = tmp_path / "j.tsv"
    judge.write_text("dev text 1\t1\tq\ntrain text 4\t0\tr\n")
    sp = evidence.make_splits(data, judge, train_size=20, tune_size=100, judge_size=100)
    assert [t for t, _ in sp.judge] == ["dev text 1", "train text 4"]
    assert "dev text 1" not in {t for t, _ in sp.tune}
    assert "train text 4" not in {t for t, _ in sp.train}
    noisy = evidence.inject_noise([0, 1] * 50, 0.2, 2, seed=1)
    assert sum(a != b for a, b in zip([0, 1] * 50, noisy, strict=False)) == 20
