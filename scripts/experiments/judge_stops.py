#!/usr/bin/env python
"""The stop's verdict per setting, from the committed runs (issue 23): regret against compute.

Reads stored runs only (no training) and replays every stop of ``stops.py`` on them. For
each setting (demo / minilm / causal / smollm), over its judging seeds:

* per rule: mean regret (best judging accuracy in hindsight minus the kept model's, pp)
  and mean fraction of the planned steps it trained (its stop step / ``max_steps``);
* ``restore_best_minus_best_label_free``: the paired difference of regret between the
  default (interaction stop + restore-best) and the best label-free rival of that setting
  (the one of EB-criterion, train to the end and half of the run with the lowest mean
  regret; EB only where it was measured), as ``[low, mean, high]`` (95% t-interval, pp);
* ``runs_best_in_first_half`` (the oracle's step <= half of ``max_steps``), and in those
  runs how often the default stopped before the end and the mean fraction it trained.

    python scripts/experiments/judge_stops.py            # markdown tables
    python scripts/experiments/judge_stops.py --json     # {"settings": [...]}

Settings and their run sets are listed in :data:`SETTINGS`; the demo's stored runs
(``stop_rule/fresh_seeds_*``, study-A format) are converted to the ``stops.py`` format by
:func:`demo_run` (checked: the replayed default keeps the step the run recorded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from stops import LABELS, judge, t_interval  # noqa: E402

RESULTS = HERE.parents[1] / "docs" / "results"
DEFAULT = "interaction_restore"
LABEL_FREE = ("eb", "end", "fraction")
SHOWN = (DEFAULT, "interaction", "interaction_plateau", "eb", "fraction", "end", "patience",
         "patience_best", "best")  # fmt: skip


@dataclass(frozen=True)
class Setting:
    name: str
    folders: tuple[str, ...]
    #: which stored runs belong to it (noise, method) and which seeds only tuned
    keep: Callable[[Mapping[str, Any]], bool]
    tuning_seeds: frozenset[int] = frozenset({0})
    demo: bool = False
    #: the stop rule (``stops.RULES``) the demo runs recorded as their default when they ran
    recorded_rule: str = DEFAULT


def _cfg(noise: float, method: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda r: abs(float(r["noise"]) - noise) < 1e-9 and r["method"] == method


#: the session-8 judging seeds (declared in stop_rule/session8_plan.md) come first; the
#: settings judged before (issues 13-14) follow, read with the same rules
SETTINGS = (
    Setting(
        "demo (seeds 960-979)",
        ("stop_rule/fresh_seeds_960-979",),
        lambda r: True,
        frozenset(),
        demo=True,
    ),
    Setting("minilm full FT, 20% noise (seeds 31-35)", ("study_c_s8",), _cfg(0.2, "full")),
    Setting("causal LM LoRA, 20% noise (seeds 31-35)", ("study_d_s8",), _cfg(0.2, "lora")),
    Setting("smollm2 LoRA, 20% noise (seeds 1-5)", ("study_e",), _cfg(0.2, "lora")),
    Setting("smollm2 LoRA, 0% noise (seeds 1-3)", ("study_e_clean",), _cfg(0.0, "lora")),
    Setting(
        "demo (seeds 940-959, judged in session 6)",
        ("stop_rule/fresh_seeds_940-959",),
        lambda r: True,
        frozenset(),
        demo=True,
        recorded_rule="interaction_plateau",
    ),
    Setting("minilm full FT, 20% noise (seeds 1-5, issue 14)", ("study_c",), _cfg(0.2, "full")),
    Setting("causal LM LoRA, 20% noise (seeds 1-5, issue 14)", ("study_d",), _cfg(0.2, "lora")),
)


def demo_run(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A demo record (study-A format: curves keyed by step) in the ``stops.py`` format.

    Interactions exist at probe steps; accuracy and eval loss at every evaluation step;
    the demo measured no EB-criterion (``eb`` is None, so the EB rule never fires and is
    left out of the rivals)."""
    c = rec["curves"]
    floor = c.get("noise_floor")
    points = {}
    for s in sorted(int(k) for k in c["accuracy"]):
        inter = {}
        if str(s) in c["noise"]:
            inter = {
                "interactions/noise": c["noise"][str(s)],
                "interactions/removed/fraction": c["removed_fraction"][str(s)],
            }
            if s == 0 and floor is not None:
                inter["interactions/noise_floor"] = floor
        points[str(s)] = {
            "interactions": inter,
            "eb": None,
            "tune_loss": c["eval_loss"][str(s)],
            "judge_acc": c["accuracy"][str(s)],
        }
    return {
        "run": f"demo-seed{rec['seed']}",
        "seed": rec["seed"],
        "max_steps": rec["max_steps"],
        "grid": sorted(int(k) for k in points),
        "points": points,
        "recorded_restore_step": rec["methods"]["interaction_restore"]["model_step"],
    }


def load_setting(setting: Setting, root: Path = RESULTS) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for folder in setting.folders:
        path = root / folder / "runs.json"
        if not path.is_file():
            continue
        for rec in json.loads(path.read_text())["runs"]:
            run = demo_run(rec) if setting.demo else rec
            if setting.demo or setting.keep(rec):
                if int(run["seed"]) not in setting.tuning_seeds:
                    runs.append(run)
    return runs


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def verdict(setting: Setting, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The setting's numbers (see the module docstring); ``None`` where there are no runs."""
    judged = [(r, judge(r)) for r in runs]
    rules = list(judged[0][1]) if judged else []
    per_rule = {}
    for name in rules:
        regrets = [j[name]["regret_pp"] for _, j in judged]
        fractions = [j[name]["stop_step"] / float(r["max_steps"]) for r, j in judged]
        per_rule[name] = {
            "label": LABELS.get(name, name),
            "mean_regret_pp": _mean(regrets),
            "sd_regret_pp": statistics.stdev(regrets) if len(regrets) > 1 else None,
            "mean_fraction_of_steps": _mean(fractions),
            "fired": sum(bool(j[name]["fired"]) for _, j in judged),
        }
    measured_eb = any(p.get("eb") is not None for r in runs for p in r["points"].values())
    rivals = [n for n in LABEL_FREE if n in per_rule and (n != "eb" or measured_eb)]
    rival = min(rivals, key=lambda n: per_rule[n]["mean_regret_pp"]) if rivals else None
    diff = None
    if rival is not None:
        d = [j[DEFAULT]["regret_pp"] - j[rival]["regret_pp"] for _, j in judged]
        mean, low, high, _ = t_interval(d)
        # one seed has no interval: its bounds are None (strict JSON has no NaN)
        diff = [None if x != x else x for x in (low, mean, high)]
    first_half = [
        (r, j) for r, j in judged if j["best"]["used_step"] <= 0.5 * float(r["max_steps"])
    ]
    stopped = [j[DEFAULT]["stop_step"] < int(r["max_steps"]) for r, j in first_half]
    fractions = [j[DEFAULT]["stop_step"] / float(r["max_steps"]) for r, j in first_half]
    return {
        "setting": setting.name,
        "seeds": sorted(int(r["seed"]) for r in runs),
        "best_label_free_rival": rival,
        "eb_measured": measured_eb,
        "restore_best_minus_best_label_free": diff,
        "runs_best_in_first_half": len(first_half),
        "default_stopped_before_end_in_those": (
            None if not first_half else sum(stopped) / len(first_half)
        ),
        "default_mean_fraction_of_steps_in_those": _mean(fractions),
        "rules": per_rule,
    }


def _f(x: Any, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def markdown(results: list[dict[str, Any]]) -> str:
    out = []
    for v in results:
        out.append(f"### {v['setting']} ({len(v['seeds'])} judging seeds)\n")
        if not v["seeds"]:
            out.append("No stored runs yet.\n")
            continue
        d = v["restore_best_minus_best_label_free"]
        rng = "n/a" if d is None else f"{d[1]:+.2f} [{_f(d[0], '+.2f')}, {_f(d[2], '+.2f')}]"
        out.append(
            f"Default minus the best label-free rival ({v['best_label_free_rival']}): {rng} pp. "
            f"Runs whose best step is in the first half: {v['runs_best_in_first_half']}; "
            f"the default stopped before the end in "
            f"{_f(v['default_stopped_before_end_in_those'], '.0%')} of them, training "
            f"{_f(v['default_mean_fraction_of_steps_in_those'], '.0%')} of the planned steps.\n"
        )
        out.append("| rule | regret (pp), mean ± sd | fraction of planned steps | fired |")
        out.append("|---|---|---|---|")
        for name in SHOWN:
            r = v["rules"].get(name)
            if r is None:
                continue
            mark = " **(default)**" if name == DEFAULT else ""
            if name == "eb" and not v["eb_measured"]:
                mark = " (not measured in these runs: shown as never firing)"
            out.append(
                f"| {r['label']}{mark} | {_f(r['mean_regret_pp'])} ± {_f(r['sd_regret_pp'])} | "
                f"{_f(r['mean_fraction_of_steps'], '.0%')} | {r['fired']}/{len(v['seeds'])} |"
            )
        out.append("")
    return "\n".join(out)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Regret against compute: one panel per setting with runs, each rule a point at (mean
    fraction of planned steps, mean regret), the default marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [v for v in results if v["seeds"]]
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    for ax, v in zip(axes.flat, shown, strict=False):
        spots: dict[tuple[float, float], list[str]] = {}  # rules that coincide share a label
        for name in SHOWN:
            r = v["rules"].get(name)
            if r is None or (name == "eb" and not v["eb_measured"]):
                continue
            xy = (round(100 * r["mean_fraction_of_steps"], 1), round(r["mean_regret_pp"], 2))
            spots.setdefault(xy, []).append(name)
        for (x, y), names in spots.items():
            default = DEFAULT in names
            ax.scatter([x], [y], s=70 if default else 30, marker="*" if default else "o",
                       color="crimson" if default else "steelblue", zorder=3)  # fmt: skip
            label = " = ".join(v["rules"][n]["label"].split(" (")[0] for n in names)
            ax.annotate(label, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_title(f"{v['setting']} ({len(v['seeds'])} seeds)", fontsize=9)
        ax.set_xlabel("mean share of planned steps trained (%)")
        ax.set_ylabel("mean regret (pp)")
        ax.set_xlim(0, 110)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help='print {"settings": [...]}')
    p.add_argument("--results", default=str(RESULTS), help="the docs/results folder")
    p.add_argument("--plot", default=None, help="also draw regret against compute (PNG)")
    args = p.parse_args(argv)
    results = [verdict(s, load_setting(s, Path(args.results))) for s in SETTINGS]
    if args.plot:
        plot(results, Path(args.plot))
    if args.json:
        print(json.dumps({"settings": results}, allow_nan=False))
    else:
        print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
