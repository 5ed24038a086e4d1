#!/usr/bin/env python
"""Tables of issue 14 from the studies' ``runs.json``: judged stops and the paper's claims.

Reads only stored results (no training): every stop is replayed by ``stops.py`` from the
curves each run stored, so a new rule shows up here once it is registered there.

* **Stops**: per setting and configuration, over the *judging* seeds only: the step whose
  model each rule keeps, its judging accuracy and regret (best in hindsight minus it, pp),
  mean ± sd; then the paired difference of regret between the label-free interaction stop
  and each rival, with a 95% t-interval over seeds (negative = the interaction stop is
  better).
* **Claims** (arXiv 2605.17967 / DESIGN.md §6) with the floor beside each: the same
  tracker quantity for the step-0 model with weights perturbed by 1e-3 of their std.

    python scripts/experiments/report_evidence.py docs/results/study_c docs/results/study_d \\
        --tuning-seeds 0 > docs/results/evidence_tables.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from stops import LABELS, NEEDS_LABELS, judge, series, t_interval  # noqa: E402

INTERACTION = ("interaction_restore", "interaction", "interaction_v1")
RIVALS = ("patience_best", "patience", "eb", "fraction", "end")
KEY = "interactions/"


def _ms(xs: list[float | None], spec: str = ".1f") -> str:
    v = [float(x) for x in xs if x is not None and not math.isnan(float(x))]
    if not v:
        return "n/a"
    m = statistics.fmean(v)
    text = format(m, spec)
    if len(v) > 1:
        text += f" ± {format(statistics.stdev(v), spec)}"
    return text + ("" if len(v) == len(xs) else f" ({len(v)}/{len(xs)})")


def _ci(diffs: list[float]) -> str:
    m, lo, hi, n = t_interval(diffs)
    if n == 0:
        return "n/a"
    if n == 1:
        return f"{m:+.1f} (1 seed)"
    return f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def groups(runs: list[dict], tuning: set[int]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        if r["seed"] in tuning:
            continue
        cfg = f"{int(round(100 * r['noise']))}% noise, {r['method']}"
        out.setdefault((r["setting"], cfg), []).append(r)
    return out


def _trained(rs: list[dict], judged: list[dict], name: str) -> list[float]:
    """Rule ``name``'s stop step per run, in % of the run's planned steps."""
    return [100 * j[name]["stop_step"] / r["max_steps"] for r, j in zip(rs, judged, strict=True)]


def stops_table(groups_: dict[tuple[str, str], list[dict]]) -> str:
    lines = [
        "| setting | config | seeds | stop | label-free | trained (% of planned steps) "
        "| step kept | judging acc. (%) | regret (pp) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (setting, cfg), rs in groups_.items():
        judged = [judge(r) for r in rs]
        for name, label in LABELS.items():
            lines.append(
                f"| {setting} | {cfg} | {len(rs)} | {label} | "
                f"{'no' if name in NEEDS_LABELS else 'yes'} "
                f"| {_ms(_trained(rs, judged, name), '.0f')} "
                f"| {_ms([j[name]['used_step'] for j in judged], '.0f')} "
                f"| {_ms([100 * j[name]['accuracy'] for j in judged])} "
                f"| {_ms([j[name]['regret_pp'] for j in judged])} |"
            )
    lines += [
        "",
        "Paired difference of regret (pp), interaction stop minus rival, mean and 95% "
        "t-interval over the judging seeds (negative: the interaction stop is better):",
        "",
        "| setting | config | seeds | interaction rule | "
        + " | ".join(f"vs {LABELS[r]}" for r in RIVALS)
        + " |",
        "|---|---|---|---|" + "---|" * len(RIVALS),
    ]
    for (setting, cfg), rs in groups_.items():
        judged = [judge(r) for r in rs]
        for mine in INTERACTION:
            cells = [
                _ci([j[mine]["regret_pp"] - j[rival]["regret_pp"] for j in judged])
                for rival in RIVALS
            ]
            lines.append(
                f"| {setting} | {cfg} | {len(rs)} | {LABELS[mine]} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) + "\n"


#: which stored metrics a claims table reads: the logged (debounced categories, pooled
#: signal) or the DESIGN.md §5/§7 ones recomputed from the snapshots
FIELDS = {"debounced": "interactions", "design": "interactions_design"}
MODE = ["debounced"]


def compact_table(groups_: dict[tuple[str, str], list[dict]]) -> str:
    """One row per configuration: judging accuracy of the oracle, then every rule's regret
    (pp, mean ± sd) and the paired differences that the closing note quotes."""
    order = [n for n in LABELS if n != "best"]
    short = {
        "interaction_restore": "interaction + restore-best",
        "interaction": "interaction (default, no restore)",
        "interaction_v1": "interaction (pre-13)",
        "interaction_plateau": "interaction + restore-best, plateau test (sessions 6-7)",
        "patience_best": "patience 3 + load best",
        "patience": "patience 3",
        "eb": "EB",
        "fraction": "half",
        "end": "end",
    }
    lines = [
        "| setting | config | seeds | best acc. (%) | "
        + " | ".join(short.get(n, n) for n in order)
        + " |",
        "|---|---|---|---|" + "---|" * len(order),
    ]
    for (setting, cfg), rs in groups_.items():
        judged = [judge(r) for r in rs]
        cells = [_ms([j[n]["regret_pp"] for j in judged]) for n in order]
        lines.append(
            f"| {setting} | {cfg} | {len(rs)} | "
            f"{_ms([100 * j['best']['accuracy'] for j in judged])} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "| setting | config | seeds | restore-best − (patience 3 + load best) "
        "| restore-best − EB | restore-best − end |",
        "|---|---|---|---|---|---|",
    ]
    for (setting, cfg), rs in groups_.items():
        judged = [judge(r) for r in rs]
        cells = [
            _ci([j["interaction_restore"]["regret_pp"] - j[o]["regret_pp"] for j in judged])
            for o in ("patience_best", "eb", "end")
        ]
        lines.append(f"| {setting} | {cfg} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _at(r: dict, step: int, key: str) -> float | None:
    p = r["points"].get(str(step)) or {}
    x = (p.get(FIELDS[MODE[0]]) or {}).get(KEY + key)
    return None if x is None else float(x)


def _early_step(r: dict) -> int:
    grid = sorted(int(s) for s in r["grid"])
    return next(s for s in grid if s >= 0.15 * r["max_steps"])


def removal_step(r: dict, share: float = 0.9) -> int | None:
    """First grid step where the removed fraction reaches ``share`` of its peak."""
    grid = sorted(int(s) for s in r["grid"])
    fr = {s: _at(r, s, "removed/fraction") for s in grid}
    fr = {s: v for s, v in fr.items() if v is not None}
    if not fr or max(fr.values()) <= 0:
        return None
    peak = max(fr.values())
    return next(s for s in grid if s in fr and fr[s] >= share * peak)


def claims_table(groups_: dict[tuple[str, str], list[dict]]) -> str:
    lines = [
        "| setting | config | seeds | quantity | measured | floor (unchanged model) |",
        "|---|---|---|---|---|---|",
    ]
    for (setting, cfg), rs in groups_.items():
        lines += _claims_rows(setting, cfg, rs)
    return "\n".join(lines) + "\n"


def _claims_rows(setting: str, cfg: str, rs: list[dict]) -> list[str]:
    """The claims rows of one configuration (see :func:`claims_table`)."""
    lines: list[str] = []
    end = [r["max_steps"] for r in rs]

    def row(q: str, measured: str, floor: str) -> None:
        lines.append(f"| {setting} | {cfg} | {len(rs)} | {q} | {measured} | {floor} |")

    def fl(key: str, spec: str = ".2f") -> str:
        return _ms([r["floor"][MODE[0]].get(KEY + key) for r in rs], spec)

    rsteps = [removal_step(r) for r in rs]
    if MODE[0] == "debounced":
        from stops import _new_rule

        ended = [_new_rule(r).stage_ended_at for r in rs]
        done = [e for e in ended if e is not None]
        row(
            "default stage test: runs whose denoising stage ended, at step",
            f"{len(done)}/{len(rs)}" + (f", {_ms(done, '.0f')}" if done else ""),
            "—",
        )
    row(
        "removal: step reaching 90% of peak removed fraction (of max steps)",
        f"{_ms(rsteps, '.0f')} (of {end[0]})",
        "—",
    )
    row(
        "removed fraction at the end",
        _ms([_at(r, e, "removed/fraction") for r, e in zip(rs, end, strict=True)], ".2f"),
        fl("removed/fraction"),
    )
    for cat in ("removed", "preserved"):
        for m, spec in (("count", ".1f"), ("mean_order", ".2f"), ("gamma", ".2f"),
                        ("rho", ".2f")):  # fmt: skip
            row(
                f"{cat} {m} at the end",
                _ms([_at(r, e, f"{cat}/{m}") for r, e in zip(rs, end, strict=True)], spec),
                fl(f"{cat}/{m}", spec),
            )
    row(
        "γ of all step-0 salient interactions (base rate for γ)",
        _ms([_at(r, 0, "preserved/gamma") for r in rs], ".2f"),
        "—",
    )
    row(
        "ρ of all step-0 salient interactions (base rate for ρ)",
        _ms([_at(r, 0, "preserved/rho") for r in rs], ".2f"),
        "—",
    )
    for m, spec in (("count", ".1f"), ("mean_order", ".2f"), ("gamma", ".2f"),
                    ("rho", ".2f"), ("strength_norm", ".2f")):  # fmt: skip
        early = _ms([_at(r, _early_step(r), f"emerged/{m}") for r in rs], spec)
        late = _ms([_at(r, e, f"emerged/{m}") for r, e in zip(rs, end, strict=True)], spec)
        row(
            f"emerged {m}: early (≈15% of run) → end",
            f"{early} → {late}",
            fl(f"emerged/{m}", spec),
        )
    row(
        "noise signal: early → end",
        f"{_ms([_at(r, _early_step(r), 'noise') for r in rs], '.3f')} → "
        f"{_ms([_at(r, e, 'noise') for r, e in zip(rs, end, strict=True)], '.3f')}",
        fl("noise", ".3f"),
    )
    acc = [series(r, "judge_acc") for r in rs]
    best = [max(a, key=lambda k: (a[k], -k)) for a in acc]
    row(
        "judging accuracy: best step; end minus best (pp)",
        f"{_ms(best, '.0f')}; "
        f"{_ms([100 * (a[e] - a[b]) for a, b, e in zip(acc, best, end, strict=True)], '.1f')}",
        "—",
    )
    row(
        "Spearman(noise signal, judging acc.) over the points from ≈15% of the run "
        "(the paper's story: < 0)",
        _ms([noise_accuracy_spearman(r) for r in rs], ".2f"),
        "—",
    )
    return lines


def noise_accuracy_spearman(r: dict) -> float | None:
    """Rank correlation of the noise signal with held-out accuracy over one run's points
    from the early step on (after the first, denoising points): negative where the noise
    rises as accuracy falls, as the paper's overfitting stage has it."""
    from scipy import stats

    acc = series(r, "judge_acc")
    pts = [(n, acc[s]) for s in sorted(acc) if s >= _early_step(r)
           if (n := _at(r, s, "noise")) is not None]  # fmt: skip
    if len(pts) < 3 or len({n for n, _ in pts}) < 2 or len({a for _, a in pts}) < 2:
        return None
    return float(stats.spearmanr([n for n, _ in pts], [a for _, a in pts]).statistic)


def cost_table(groups_: dict[tuple[str, str], list[dict]]) -> str:
    lines = [
        "| setting | config | runs | run s | train wall s | probe s | eval s | EB s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (setting, cfg), rs in groups_.items():
        t = [r["timing"] for r in rs]
        lines.append(
            f"| {setting} | {cfg} | {len(rs)} | {_ms([x['run_seconds'] for x in t], '.0f')} "
            f"| {_ms([x['train_wall_seconds'] for x in t], '.0f')} "
            f"| {_ms([x['probe_seconds'] for x in t], '.0f')} "
            f"| {_ms([x['eval_seconds'] for x in t], '.0f')} "
            f"| {_ms([x['eb_seconds'] for x in t], '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def curves_table(runs: list[dict], tuning: set[int]) -> str:
    """Per-run curves at a glance: judging accuracy and the stops' kept steps."""
    lines = ["| run | judging acc. step 0 / best / end (%) | kept step: " + " / ".join(
        LABELS[n].split(" (")[0] for n in LABELS) + " |", "|---|---|---|"]  # fmt: skip
    for r in runs:
        j = judge(r)
        acc = [p["judge_acc"] for p in r["points"].values()]
        tag = " (tuning)" if r["seed"] in tuning else ""
        lines.append(
            f"| {r['setting']} {r['run']}{tag} | {100 * acc[0]:.1f} / {100 * max(acc):.1f} / "
            f"{100 * acc[-1]:.1f} | " + " / ".join(str(j[n]["used_step"]) for n in LABELS) + " |"
        )
    return "\n".join(lines) + "\n"


def tuning_curves(runs: list[dict], tuning: set[int]) -> str:
    """The tuning runs point by point, on the tuning split and label-free curves only (the
    judging accuracy is left out: it must not inform a choice)."""
    keys = [("removed/fraction", ".3f"), ("noise", ".3f"), ("emerged/count", ".1f"),
            ("removed/mean_order", ".2f"), ("emerged/rho", ".2f")]  # fmt: skip
    head = "| run | step | tune loss | tune acc. (%) | EB | " + " | ".join(k for k, _ in keys)
    lines = [head + " |", "|" + "---|" * (5 + len(keys))]  # the 5 fixed columns
    for r in runs:
        if r["seed"] not in tuning:
            continue
        for s in sorted(int(k) for k in r["points"]):
            p = r["points"][str(s)]
            inter = p.get("interactions") or {}
            cells = []
            for k, spec in keys:
                x = inter.get(KEY + k)
                cells.append("" if x is None else format(x, spec))
            eb = p.get("eb")
            lines.append(
                f"| {r['run']} | {s} | {p['tune_loss']:.3f} | {100 * p['tune_acc']:.1f} | "
                f"{'' if eb is None else format(eb, '+.2f')} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) + "\n"


def _mean_curve(rs: list[dict], grid: list[int], field: str, sub: str | None = None) -> list[float]:
    """Mean over runs of a per-point field (``sub``: a key inside it) on ``grid``."""
    out = []
    for s in grid:
        xs = []
        for r in rs:
            p = r["points"][str(s)]
            x = p.get(field) if sub is None else (p.get(field) or {}).get(sub)
            if x is not None:
                xs.append(float(x))
        out.append(statistics.fmean(xs) if xs else math.nan)
    return out


def plot(groups_: dict[tuple[str, str], list[dict]], path: Path) -> None:
    """Mean curves per configuration (judging seeds): judging accuracy, tuning loss, the
    noise signal and the removed fraction, with each seed's kept steps of three rules."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(groups_)
    fig, axes = plt.subplots(1, len(keys), figsize=(max(7.5, 6.0 * len(keys)), 4.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        rs = groups_[key]
        grid = sorted(int(s) for s in rs[0]["grid"])

        ax.plot(
            grid,
            [100 * x for x in _mean_curve(rs, grid, "judge_acc")],
            "o-",
            color="C0",
            label="judging acc.",
        )
        ax.set_ylabel("judging accuracy (%)", color="C0")
        ax2 = ax.twinx()
        ax2.plot(
            grid, _mean_curve(rs, grid, "tune_loss"), "s--", color="C1", lw=1, label="tuning loss"
        )
        ax2.plot(
            grid,
            _mean_curve(rs, grid, "interactions", KEY + "noise"),
            color="red",
            label="noise signal",
        )
        ax2.plot(
            grid,
            _mean_curve(rs, grid, "interactions", KEY + "removed/fraction"),
            "k:",
            label="removed frac.",
        )
        for name, color in (("interaction_restore", "red"), ("patience_best", "purple"),
                            ("eb", "green")):  # fmt: skip
            for k, r in enumerate(rs):
                used = (judge(r))[name]["used_step"]
                ax.axvline(used, color=color, alpha=0.35, lw=1.5,
                           label=LABELS[name] if k == 0 else None)  # fmt: skip
        ax.set_xlabel("step")
        ax.set_title(f"{key[0]}, {key[1]} ({len(rs)} seeds)", fontsize=9)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax2.set_ylabel("loss, noise signal, removed fraction")
    # one legend under the panels, where it hides no curve
    fig.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", help="study output folders holding runs.json")
    p.add_argument("--tuning-seeds", type=int, nargs="*", default=[0])
    p.add_argument("--plot", default=None, help="also draw the mean curves into this PNG")
    p.add_argument(
        "--tuning-curves", action="store_true", help="only the tuning runs' curves (no judging)"
    )
    args = p.parse_args(argv)
    tuning = set(args.tuning_seeds)
    runs: list[dict[str, Any]] = []
    for d in args.dirs:
        path = Path(d) / "runs.json"
        if path.is_file():
            runs += json.loads(path.read_text())["runs"]
    if args.tuning_curves:
        print(tuning_curves(runs, tuning))
        return 0
    g = groups(runs, tuning)
    if args.plot:
        plot(g, Path(args.plot))
    print("### Regret per stop (pp, judging seeds) and paired differences (95% t-interval)\n")
    print(compact_table(g))
    print("### Stops (judging seeds only)\n")
    print(stops_table(g))
    for mode in FIELDS:
        MODE[0] = mode
        print(
            f"### Claims, {mode} categories, with floors (judging seeds; end of run unless said)\n"
        )
        print(claims_table(g))
    print("### Cost per run (1 CPU thread)\n")
    print(cost_table(g))
    print("### Every run\n")
    print(curves_table(runs, tuning))
    return 0


if __name__ == "__main__":
    sys.exit(main())
