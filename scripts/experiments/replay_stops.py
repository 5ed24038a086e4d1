"""Replay stopping rules after the fact: the shipped rule against the new one with restore-best.

Two sources, two modes:

* ``--stored`` (default): the stored curves of Study A (demo, 5 seeds) and Study B
  (MiniLM on GoEmotions), per run the probe-point curves and the held-out accuracy at the
  evaluation steps. The files of issue 7 (``docs/results/study_a``, ``study_b*``) hold
  only the DESIGN.md §7 signal on the §5 categories: the new signal (pooled, debounced)
  needs the interactions themselves, so there the new *rule* runs on the stored signal.
  The regenerated files (``*_regen``: the same studies re-run with the current code) hold
  both signals (``noise`` and ``noise_shipped``, see :func:`shipped_curves`) and the
  measured floor, so each rule reads its own signal, as it would have run.
* ``--runs DIR ...``: demo run folders with their step snapshots
  (``interactions/step-*.safetensors``) and ``summary.json``. Any tracker variant
  (debounced / design categories, pooled / design signal) is recomputed from the stored
  AND-OR interactions, so every rule can be replayed exactly; this is what the defaults
  were tuned with (tuning seeds only) and what ``--grid`` prints.

Restore-best is replayed exactly as the callback does it: the stopper's ``restore_step``
at the stop (or at the end when the rule never fires). Its held-out accuracy is read at
that step (for Study B, whose evaluations are every 15 steps and probes every 5, at the
last evaluation at or before it). Regret = best held-out accuracy in hindsight minus the
accuracy of the model the method ends with, in percentage points.

    python scripts/experiments/replay_stops.py                  # the stored-curves table
    python scripts/experiments/replay_stops.py --runs /tmp/runs/*seed10?  --grid  # tuning
    python scripts/experiments/replay_stops.py --runs /tmp/runs/*seed20?          # judging
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import statistics
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sft_interaction_callback.keys import NOISE_KEY, REMOVED_FRACTION_KEY  # noqa: E402
from sft_interaction_callback.tracking.stopping import NoiseRiseStopper  # noqa: E402

STORED = {
    "A (demo, 5 seeds), files of issue 7": ["docs/results/study_a/runs.json"],
    "A (demo, 5 seeds), regenerated": ["docs/results/study_a_regen/runs.json"],
    "B (MiniLM, GoEmotions), files of issue 7": [
        "docs/results/study_b/runs.json",
        "docs/results/study_b_long/runs.json",
    ],
    "B (MiniLM, GoEmotions), regenerated": [
        "docs/results/study_b_regen/runs.json",
        "docs/results/study_b_long_regen/runs.json",
    ],
}


#: Curves a regenerated study stores for the shipped rule (see :func:`shipped_curves`).
SHIPPED_CURVES = ("noise_shipped", "removed_fraction_shipped")


# ---------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """A stopping rule: the stopper's settings, the signal it reads, restore-best or not."""

    name: str
    stopper: dict[str, Any] = field(default_factory=dict)
    signal: str = "noise"  # key into a run's probe-point curves
    restore: bool = True

    def make(self, floor: float | None) -> NoiseRiseStopper:
        """The stopper; unset settings are issue 13's rule (sessions 4-7: the plateau
        stage test, ``min_delta`` 3x the floor), the family these tables replay (the
        knee test of session 8 is tuned in ``tune_knee_stop.py``)."""
        stopper = NoiseRiseStopper(**{**ISSUE13_RULE, **self.stopper})
        stopper.set_floor(floor)
        return stopper


#: the defaults of issue 13's rule, which "new rule (defaults)" means in these tables
ISSUE13_RULE: dict[str, Any] = {"stage_test": "plateau", "floor_multiple": 3.0}


SHIPPED = Rule(
    "shipped (rate stage test, min_delta 0, stop only)",
    {"stage_test": "rate", "min_delta": 0.0, "patience": 3},
    restore=False,
)
NEW = Rule("new rule + restore-best", {})


@dataclass
class Run:
    """One run: probe-point curves ``{name: {step: value}}``, accuracy ``{step: value}``."""

    name: str
    curves: dict[str, dict[int, float]]
    accuracy: dict[int, float]
    max_steps: int
    baselines: dict[str, float | None] = field(default_factory=dict)  # method -> accuracy
    floor: float | None = None

    @property
    def best(self) -> float:
        return max(self.accuracy.values())


def replay(run: Run, rule: Rule) -> dict[str, Any]:
    """``{stop, stage_end, model_step, accuracy, regret_pp}`` of ``rule`` on ``run``."""
    stopper = rule.make(run.floor)
    signal, removed = run.curves[rule.signal], run.curves["removed_fraction"]
    stop = None
    for step in sorted(signal):
        if step == 0:
            continue
        fired = stopper.update(
            step, {NOISE_KEY: signal[step], REMOVED_FRACTION_KEY: removed.get(step)}
        )
        if fired:
            stop = step
            break
    used = stop if stop is not None else run.max_steps
    model_step = used
    if rule.restore and stopper.restore_step is not None:
        # the stopper's own restore target at the stop (or the end), as the callback loads it
        model_step = stopper.restore_step
    acc = _at_or_before(run.accuracy, model_step)
    return {
        "stop": stop,
        "stage_end": stopper.stage_ended_at,
        "model_step": model_step,
        "accuracy": acc,
        "regret_pp": None if acc is None else 100 * (run.best - acc),
    }


def _at_or_before(series: Mapping[int, float], step: int) -> float | None:
    keys = [s for s in series if s <= step]
    return series[max(keys)] if keys else None


# ---------------------------------------------------------------------- stored curves
def _int_keys(d: Mapping[str, Any]) -> dict[int, float]:
    return {int(k): float(v) for k, v in d.items() if v is not None}


def load_stored(paths: Iterable[str]) -> list[Run]:
    """Runs from the stored study files (A: ``curves`` dicts; B: parallel lists)."""
    runs = []
    for path in paths:
        data = json.loads((ROOT / path).read_text())
        for r in data["runs"]:
            c = r["curves"]
            if "probe_steps" in c:  # study B
                steps = c["probe_steps"]
                curves = {
                    "noise": dict(zip(steps, c["noise"], strict=True)),
                    "removed_fraction": dict(zip(steps, c["removed/fraction"], strict=True)),
                    "emerged_strength_norm": dict(
                        zip(steps, c["emerged/strength_norm"], strict=True)
                    ),
                }
                for key in SHIPPED_CURVES:
                    if key in c:
                        curves[key] = dict(zip(steps, c[key], strict=True))
                acc = dict(zip(c["eval_steps"], c["eval_accuracy"], strict=True))
                patience = r["stop"]["patience"]
                pstep = patience["step"] if patience["fired"] else max(acc)
                loss = dict(zip(c["eval_steps"], c["eval_loss"], strict=True))
                best_loss = min((s for s in loss if 0 < s <= pstep), key=lambda s: (loss[s], s))
                runs.append(
                    Run(
                        f"{Path(path).parent.name}/{r['run']}",
                        curves,
                        acc,
                        max(acc),
                        {"eval_loss_patience3_best": acc[best_loss]},
                        r.get("noise_floor"),
                    )
                )
            else:  # study A
                curves = {
                    k: _int_keys(c[k])
                    for k in ("noise", "removed_fraction", "emerged_strength_norm", *SHIPPED_CURVES)
                    if k in c
                }
                acc = _int_keys(c["accuracy"])
                base = {
                    "eval_loss_patience3_best": r["methods"]["eval_loss_patience3_best"]["accuracy"]
                }
                runs.append(
                    Run(
                        f"study_a/seed{r['seed']}",
                        curves,
                        acc,
                        r["max_steps"],
                        base,
                        c.get("noise_floor"),
                    )
                )
    return runs


# ---------------------------------------------------------------------- run folders
def tracked_curves(
    tracker: Any, tables: Iterable[tuple[int, Any, Any]]
) -> tuple[dict[int, float], dict[int, float]]:
    """The noise and removed-fraction curves of ``tracker`` fed ``(step, i_and, i_or)``
    tables in step order, step 0 being the base."""
    noise, removed = {}, {}
    for step, a, o in tables:
        m = tracker.set_base(a, o) if step == 0 else tracker.update(step, a, o)
        noise[step], removed[step] = m[NOISE_KEY], m[REMOVED_FRACTION_KEY]
    return noise, removed


def variant_curves(
    snap_dir: Path,
    variants: Iterable[tuple[str, str]],
    *,
    probes: list[int] | None = None,
    keep_step: Any = None,
) -> tuple[dict[str, dict[int, float]], float | None]:
    """The noise and removed-fraction curves of each tracker variant ``(categories,
    signal)``, recomputed from a run's step snapshots, and the run's measured floor."""
    import torch

    from sft_interaction_callback.callback.state import make_tracker
    from sft_interaction_callback.config import InteractionConfig
    from sft_interaction_callback.snapshots import load_tensors

    tables = []
    for f in sorted(glob.glob(str(snap_dir / "step-*.safetensors"))):
        t, meta = load_tensors(f)
        step = int(meta["step"])
        if keep_step is not None and step > 0 and not keep_step(step):
            continue  # a thinner schedule
        i_and, i_or = t["i_and"].to(torch.float64), t["i_or"].to(torch.float64)
        if probes is not None:  # fewer probes at the same points
            i_and, i_or = i_and[probes], i_or[probes]
        tables.append((step, i_and, i_or))
    curves: dict[str, dict[int, float]] = {}
    for cats, sig in variants:
        tr = make_tracker(InteractionConfig(categories=cats, noise_signal=sig))
        noise, removed = tracked_curves(tr, tables)
        curves[f"noise[{cats},{sig}]"] = noise
        curves[f"removed_fraction[{cats}]"] = removed
    rows = [json.loads(x) for x in (snap_dir / "metrics.jsonl").read_text().splitlines() if x]
    floor = next((r.get("interactions/noise_floor") for r in rows if r.get("step") == 0), None)
    return curves, floor


def shipped_curves(snap_dir: Path) -> dict[str, Any]:
    """What a study stores so that both rules replay from its file alone: the shipped
    signal on the DESIGN.md §5 categories (``noise_shipped``, ``removed_fraction_shipped``),
    recomputed from the snapshots, and the measured floor (``noise_floor``); the new signal
    is the run's own ``noise`` / ``removed_fraction`` curves."""
    curves, floor = variant_curves(snap_dir, [("design", "design")])
    return {
        "noise_shipped": {str(k): v for k, v in curves["noise[design,design]"].items()},
        "removed_fraction_shipped": {
            str(k): v for k, v in curves["removed_fraction[design]"].items()
        },
        "noise_floor": floor,
    }


def load_run_dir(
    run_dir: Path,
    variants: Iterable[tuple[str, str]],
    *,
    probes: list[int] | None = None,
    keep_step: Any = None,
) -> Run:
    """A demo run folder: the signals of each tracker variant recomputed from snapshots."""
    summary = json.loads((run_dir / "summary.json").read_text())
    curves, floor = variant_curves(
        run_dir / "interactions", variants, probes=probes, keep_step=keep_step
    )
    acc = _int_keys(summary["accuracy"]["by_step"])
    return Run(run_dir.name, curves, acc, int(summary["max_steps"]), {}, floor)


def variant_rule(rule: Rule, cats: str, sig: str) -> Rule:
    return replace(rule, signal=f"noise[{cats},{sig}]")


def replay_variant(run: Run, rule: Rule, cats: str) -> dict[str, Any]:
    view = replace(
        run, curves={**run.curves, "removed_fraction": run.curves[f"removed_fraction[{cats}]"]}
    )
    return replay(view, rule)


# ---------------------------------------------------------------------- output
def mean_sd(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "n/a"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.2f} ± {sd:.2f}"


def _replay_on(run: Run, rule: Rule, removed: str) -> dict[str, Any]:
    return replay(
        replace(run, curves={**run.curves, "removed_fraction": run.curves[removed]}), rule
    )


def stored_table() -> str:
    """Both rules on the stored study files. Files regenerated with the new signal hold the
    shipped signal too (``noise_shipped`` on the §5 categories) and the measured floor, so
    each rule reads its own signal; older files hold the shipped signal only."""
    out = [
        "Replay on the stored curves (regret = best held-out accuracy in hindsight minus the "
        "accuracy of the model each method ends with, percentage points; mean ± sd over runs).",
        "",
    ]
    for study, paths in STORED.items():
        if not all((ROOT / path).exists() for path in paths):
            out += [f"### Study {study}: not there ({', '.join(paths)})", ""]
            continue
        runs = load_stored(paths)
        both = all(all(k in r.curves for k in SHIPPED_CURVES) for r in runs)
        if both:
            rows = [
                (SHIPPED, "removed_fraction_shipped", "noise_shipped"),
                (
                    Rule("new rule (defaults), stop only", {}, restore=False),
                    "removed_fraction",
                    "noise",
                ),
                (Rule("new rule (defaults) + restore-best", {}), "removed_fraction", "noise"),
            ]
            note = (
                "Regenerated files: the shipped rule reads the DESIGN.md §7 signal on the §5 "
                "categories (`noise_shipped`), the new rule the pooled signal on the debounced "
                "categories (`noise`) with the measured floor, both recomputed from the same "
                "runs' snapshots."
            )
        else:
            rows = [
                (SHIPPED, "removed_fraction", "noise"),
                (
                    Rule("new rule (defaults), stop only; signal: stored noise", {}, restore=False),
                    "removed_fraction",
                    "noise",
                ),
                (
                    Rule("new rule (defaults) + restore-best; signal: stored noise", {}),
                    "removed_fraction",
                    "noise",
                ),
                (
                    Rule(
                        "new rule (defaults) + restore-best; signal: stored emerged/strength_norm",
                        {},
                    ),
                    "removed_fraction",
                    "emerged_strength_norm",
                ),
            ]
            note = (
                "Old files: they hold only the DESIGN.md §7 signal on the §5 categories and no "
                "floor, so the new *rule* runs on the stored signal with min_delta = 0."
            )
        out += [
            f"### Study {study}: {len(runs)} runs",
            "",
            note,
            "",
            "| method | mean regret (pp) | per run (pp) | stop / restored step per run |",
            "|---|---|---|---|",
        ]
        for rule, removed, signal in rows:
            res = [_replay_on(r, replace(rule, signal=signal), removed) for r in runs]
            per = ", ".join(f"{x['regret_pp']:.1f}" for x in res)
            steps = ", ".join(f"{x['stop'] or 'end'}/{x['model_step']}" for x in res)
            out.append(
                f"| {rule.name} | {mean_sd([x['regret_pp'] for x in res])} | {per} | {steps} |"
            )
        base = [100 * (r.best - r.baselines["eval_loss_patience3_best"]) for r in runs]
        out.append(
            f"| eval-loss patience 3 + load best (stored) | {mean_sd(base)} | "
            f"{', '.join(f'{x:.1f}' for x in base)} | |"
        )
        out.append("")
    return "\n".join(out)


def grid_table(run_dirs: list[Path], *, judge: bool = False) -> str:
    """The tuning grid on run folders: mean regret of each (variant, rule) combination."""
    variants = [(c, s) for c in ("debounced", "design") for s in ("pooled", "design")]
    runs = [load_run_dir(d, variants) for d in run_dirs]
    stoppers = {
        "shipped rate, min_delta 0, no restore": (
            {"stage_test": "rate", "min_delta": 0.0, "patience": 3},
            False,
        ),
    }
    floors = all(r.floor is not None for r in runs)
    deltas = (
        [{"floor_multiple": m} for m in (0.0, 1.0, 3.0, 10.0)]
        if floors
        else [{"min_delta": d} for d in (0.0, 0.005, 0.01, 0.02, 0.05)]
    )
    for p in (2, 3, 5):
        for delta in deltas:
            for window, tol in ((0.5, 0.1), (0.5, 0.2), (0.67, 0.1)):
                for restore in ("min", "last_good"):
                    kw = {
                        "patience": p,
                        "stage_window": window,
                        "stage_tolerance": tol,
                        "restore": restore,
                        **delta,
                    }
                    label = ", ".join(f"{k}={v}" for k, v in kw.items())
                    stoppers[f"plateau {label}"] = (kw, True)
        for delta in deltas:
            kw = {"patience": p, "stage_test": "rate", "restore": "last_good", **delta}
            stoppers["rate " + ", ".join(f"{k}={v}" for k, v in kw.items())] = (kw, True)
    lines = [
        f"runs: {', '.join(r.name for r in runs)}; floors: "
        + ", ".join("n/a" if r.floor is None else f"{r.floor:.4f}" for r in runs),
        "",
        "| categories | signal | rule | mean regret (pp) | per run | stop/restored |",
        "|---|---|---|---|---|---|",
    ]
    scored = []
    for cats, sig in variants:
        for name, (kw, restore) in stoppers.items():
            rule = variant_rule(Rule(name, kw, restore=restore), cats, sig)
            res = [replay_variant(r, rule, cats) for r in runs]
            regrets = [x["regret_pp"] for x in res]
            mean = statistics.fmean(regrets)
            scored.append((mean, cats, sig, name, regrets, res))
    for _mean, cats, sig, name, regrets, res in sorted(scored, key=lambda x: x[0]):
        steps = ", ".join(f"{x['stop'] or 'end'}/{x['model_step']}" for x in res)
        lines.append(
            f"| {cats} | {sig} | {name} | {mean_sd(regrets)} | "
            f"{', '.join(f'{x:.1f}' for x in regrets)} | {steps} |"
        )
    return "\n".join(lines)


def compare_table(run_dirs: list[Path]) -> str:
    """Exact replay on run folders: the shipped rule (design categories and signal) against
    the defaults (debounced, pooled, plateau, restore-best), nothing else (for judging)."""
    runs = [load_run_dir(d, [("design", "design"), ("debounced", "pooled")]) for d in run_dirs]
    rows = [
        ("design", "design", SHIPPED),
        ("design", "design", Rule("shipped rule + restore-best", SHIPPED.stopper)),
        ("debounced", "pooled", Rule("new rule, stop only", {}, restore=False)),
        ("debounced", "pooled", NEW),
    ]
    lines = [
        f"runs: {', '.join(r.name for r in runs)}",
        "floors: " + ", ".join("n/a" if r.floor is None else f"{r.floor:.4f}" for r in runs),
        "",
        "| categories / signal | rule | mean regret (pp) | per run | stop/restored |",
        "|---|---|---|---|---|",
    ]
    for cats, sig, rule in rows:
        res = [replay_variant(r, variant_rule(rule, cats, sig), cats) for r in runs]
        reg = [x["regret_pp"] for x in res]
        steps = ", ".join(f"{x['stop'] or 'end'}/{x['model_step']}" for x in res)
        lines.append(
            f"| {cats} / {sig} | {rule.name} | {mean_sd(reg)} | "
            f"{', '.join(f'{x:.1f}' for x in reg)} | {steps} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="*", help="demo run folders (with step snapshots)")
    parser.add_argument("--grid", action="store_true", help="print the tuning grid for --runs")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    if args.runs and args.grid:
        text = grid_table([Path(d) for d in args.runs])
    elif args.runs:
        text = compare_table([Path(d) for d in args.runs])
    else:
        text = stored_table()
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
