"""Study A: the interaction stop on the demo task, judged against the stops in use today.

Each seed runs the full demo (a tiny Llama pretrained on partly wrong labels, then LoRA
SFT with 15% label noise for 1200 steps) with the interaction stop in shadow mode: the
default ``NoiseRiseStopper`` records when it would stop while training goes on to the
end, so one run yields every comparison. Evaluation runs at every probe step and on a
regular grid (every ``--eval-every`` steps), where the stock
``EarlyStoppingCallback(patience=3)`` on ``eval_loss`` is replayed exactly
(``compare.patience_stop`` in this folder; a test checks the replay against the real callback).
With ``--set val_size=N`` the demo also draws an N-example validation split (its own RNG
stream; training unchanged) and the same stop is replayed on its loss, the split a user
would hold out, beside the one read on the judged split.

    python scripts/experiments/study_a_demo.py                      # 5 seeds, ~30 min, 2 cores
    python scripts/experiments/study_a_demo.py --seeds 0 1 --jobs 2
    python scripts/experiments/study_a_demo.py --tiny --out /tmp/a  # seconds; what tests run
    python scripts/experiments/study_a_demo.py --set lr=5e-4 --set val_size=400  # overrides

Writes ``runs.json`` / ``runs.csv`` (one record per seed), ``table.md`` (the tables of
docs/RESULTS.md) and PNG plots into ``--out``; run folders go to ``--work-dir``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
for _path in (ROOT, HERE):  # run from a checkout without installing; compare.py is here
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from compare import (  # noqa: E402
    best_step,
    eval_loss_stop,
    interaction_summary,
    mean_sd,
    value_at,
)
from replay_stops import shipped_curves  # noqa: E402

from sft_interaction_callback.keys import (  # noqa: E402
    CATEGORIES,
    EMERGED,
    NOISE_KEY,
    REMOVED_FRACTION_KEY,
    SECONDS_KEY,
    category_key,
)
from sft_interaction_callback.tracking.shadow import ProbePoints  # noqa: E402

METHODS = (
    "interaction_stop",
    "interaction_restore",
    "eval_loss_patience3",
    "eval_loss_patience3_best",
    "eval_loss_patience3_val",
    "eval_loss_patience3_best_val",
    "best",
    "end",
)
METHOD_LABELS = {
    "interaction_stop": "interaction stop (ours, stop only)",
    "interaction_restore": "interaction stop + restore-best (ours, default)",
    "eval_loss_patience3": "eval-loss patience 3",
    "eval_loss_patience3_best": "eval-loss patience 3 + load best",
    "eval_loss_patience3_val": "eval-loss patience 3, validation split",
    "eval_loss_patience3_best_val": "eval-loss patience 3 + load best, validation split",
    "best": "best step in hindsight",
    "end": "train to the end",
}


# ---------------------------------------------------------------------- running
#: ``--probing``: the demo's own probing, or 8 probes x 8 players at the library schedule
#: (the demo's probing before session 4; the training is the same, only the probing differs)
PROBING = {"demo": {}, "8x8": {"n_players": 8, "schedule": None}}


def settings_for(
    tiny: bool, eval_every: int, probing: str = "demo", overrides: dict[str, Any] | None = None
) -> Any:
    """The demo's FULL (or QUICK with ``tiny``) settings, evaluated every ``eval_every`` steps,
    with ``overrides`` (``--set``) applied last."""
    from sft_interaction_callback.demo.settings import FULL, QUICK

    base = QUICK if tiny else FULL
    return replace(base, eval_every=eval_every, **PROBING[probing], **(overrides or {}))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "max_steps=800"]`` -> typed demo-setting overrides (refused if unknown)."""
    from dataclasses import fields

    from sft_interaction_callback.demo.settings import FULL

    types = {f.name: type(getattr(FULL, f.name)) for f in fields(FULL)}
    types = {k: t for k, t in types.items() if t in (int, float)}  # numeric settings only
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"--set {item!r}: use NAME=VALUE with NAME one of {sorted(types)}")
        out[key] = types[key](float(raw))
    return out


def run_seed(
    seed: int,
    tiny: bool,
    eval_every: int,
    work_dir: str,
    threads: int,
    probing: str = "demo",
    overrides: dict[str, Any] | None = None,
) -> dict:
    """One demo run; returns its summary and its metrics rows (one per probe point)."""
    from sft_interaction_callback.demo.run import run_demo

    settings = settings_for(tiny, eval_every, probing, overrides)
    lines: list[str] = []
    result = run_demo(settings, output_dir=work_dir, seed=seed, threads=threads, log=lines.append)
    rows = _read_jsonl(result.run_dir / "interactions" / "metrics.jsonl")
    shipped = shipped_curves(result.run_dir / "interactions")
    return {"summary": result.summary, "metrics": rows, "shipped": shipped}


def _read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------------- analysis
def _series(by_step: dict[str, float]) -> dict[int, float]:
    return {int(s): float(v) for s, v in by_step.items() if v is not None}


def analyse(summary: dict, metrics: list[dict], eval_every: int) -> dict:
    """The comparisons of one run: steps used and held-out accuracy per stopping method."""
    max_steps = int(summary["max_steps"])
    acc = _series(summary["accuracy"]["by_step"])
    loss = _series(summary["eval_loss"]["by_step"])
    es_used, es_best = eval_loss_stop(loss, eval_every, max_steps) or (max_steps, None)
    stop = summary["stop"]["step"]
    best = best_step(acc)
    restore = summary["stop"].get("restore_step")
    used = {
        "interaction_stop": stop if stop is not None else max_steps,
        # restore_best: the run ends at the stop (or the end), the model is the restored one
        "interaction_restore": stop if stop is not None else max_steps,
        "eval_loss_patience3": es_used,
        # load_best_model_at_end: the run still trains to es_used, the model is the best one
        "eval_loss_patience3_best": es_used,
        "best": best,
        "end": max_steps,
    }
    model_step = {**used, "eval_loss_patience3_best": es_best}
    if restore is not None:
        model_step["interaction_restore"] = restore
    # the same stop reading a separate validation split (demo setting val_size > 0)
    val = eval_loss_stop(
        _series(summary.get("val_loss", {}).get("by_step", {})), eval_every, max_steps
    )
    if val is not None:
        vs_used, vs_best = val
        used["eval_loss_patience3_val"] = used["eval_loss_patience3_best_val"] = vs_used
        model_step["eval_loss_patience3_val"] = vs_used
        model_step["eval_loss_patience3_best_val"] = vs_best
    methods = {  # the validation-split stops only with a validation split
        m: {
            "steps": used[m],
            "model_step": model_step[m],
            "accuracy": value_at(acc, model_step[m]),
        }
        for m in METHODS
        if m in model_step
    }
    best_acc = acc[best] if best is not None else math.nan
    for m in methods:
        a = methods[m]["accuracy"]
        methods[m]["regret_vs_best"] = None if a is None else best_acc - a

    points = ProbePoints(metrics)
    rows, by = points.records, points.by_step
    frac = {s: r.get(REMOVED_FRACTION_KEY) for s, r in by.items()}
    frac = {s: float(v) for s, v in frac.items() if v is not None}
    peak = max(frac.values()) if frac else None
    at_stop = value_at(frac, stop) if stop is not None else None
    reach90 = None
    if peak:
        reach90 = min(s for s, v in frac.items() if v >= 0.9 * peak)
    removal = {
        "fraction_at_stop": at_stop,
        "fraction_at_end": frac.get(max(frac)) if frac else None,
        "fraction_peak": peak,
        "share_of_peak_before_stop": None if not peak or at_stop is None else at_stop / peak,
        "step_reaching_90pct_of_peak": reach90,
        "denoising_stage_ended_at": summary["stop"].get("denoising_stage_ended_at"),
    }
    last = points.last
    stop_point = max((s for s in by if s <= used["interaction_stop"]), default=None)
    at = interaction_summary(points, stop_point, last)
    if at_stop is None and stop is None:  # never fired: the run's stop is its end
        at_stop = value_at(frac, max_steps)
        removal["fraction_at_stop"] = at_stop
        removal["share_of_peak_before_stop"] = at_stop / peak if peak and at_stop else None

    def cat(when: str, key: str) -> dict[str, float | None]:
        return {c: at["categories"][c][when][key] for c in CATEGORIES}

    planted = []
    for entry in summary.get("planted", []):
        rows_p = entry["probes"]
        if stop is None:  # never fired: what the run holds at its end
            rows_p = [{**r, "stop": r.get("end")} for r in rows_p]
        planted.append(
            {
                "type": entry["type"],
                "words": entry["words"],
                "probes": len(rows_p),
                **{
                    f"{when}_{c}": sum((r.get(when) or {}).get("category") == c for r in rows_p)
                    for when in ("stop", "end")
                    for c in ("preserved", "emerged")
                },
                "step0_salient": sum(
                    1 for r in rows_p if (r.get("step0") or {}).get("category") == "salient"
                ),
                "rank_stop": [((r.get("stop") or {}).get("rank")) for r in rows_p],
                "rank_end": [((r.get("end") or {}).get("rank")) for r in rows_p],
            }
        )
    timing = summary.get("timing", {})
    probe_s = sum(float(r.get(SECONDS_KEY) or 0.0) for r in rows)
    train_s = float(timing.get("finetune_seconds", math.nan))
    eval_s = float(timing.get("eval_seconds", 0.0))
    pure = train_s - probe_s - eval_s
    return {
        "seed": summary["seed"],
        "max_steps": max_steps,
        "eval_every": eval_every,
        "stop_reason": summary["stop"]["reason"],
        "stop_fired": summary["stop"]["fired"],
        "accuracy_step0": acc.get(0),
        "methods": methods,
        "removal": removal,
        "rho": {"stop": cat("stop", "rho"), "end": cat("end", "rho")},
        "mean_order": {"stop": cat("stop", "mean_order"), "end": cat("end", "mean_order")},
        "count": {"stop": cat("stop", "count"), "end": cat("end", "count")},
        "noise": at["noise"],
        "planted": planted,
        "cost": {
            "probe_points": len(rows),
            "probe_seconds_total": probe_s,
            "probe_seconds_per_point": probe_s / len(rows) if rows else None,
            "finetune_seconds": train_s,
            "eval_seconds": eval_s,
            "training_seconds_without_probe_and_eval": pure,
            "overhead_share": probe_s / pure if pure > 0 else None,
        },
        "curves": {
            "accuracy": {str(s): v for s, v in sorted(acc.items())},
            "eval_loss": {str(s): v for s, v in sorted(loss.items())},
            "removed_fraction": {str(s): v for s, v in sorted(frac.items())},
            "noise": {
                str(s): r.get(NOISE_KEY)
                for s, r in sorted(by.items())
                if r.get(NOISE_KEY) is not None
            },
            "emerged_strength_norm": {
                str(s): r.get(category_key(EMERGED, "strength_norm")) for s, r in sorted(by.items())
            },
        },
    }


# ---------------------------------------------------------------------- tables
def _fmt(m: float, sd: float, n: int, pct: bool = False, digits: int = 1) -> str:
    if n == 0 or math.isnan(m):
        return "n/a"
    scale = 100.0 if pct else 1.0
    return f"{scale * m:.{digits}f} ± {scale * sd:.{digits}f}"


def _method(record: dict, name: str) -> dict:
    """One run's entry for method ``name`` ({} when the run has no such method)."""
    return record["methods"].get(name) or {}


def present_methods(records: list[dict]) -> list[str]:
    """The methods of :data:`METHODS` that some run has (the validation-split stops only
    exist with ``--set val_size=N``; older runs.json files lack them)."""
    return [m for m in METHODS if any(_method(r, m).get("accuracy") is not None for r in records)]


def tables(records: list[dict]) -> str:
    """The Markdown tables of docs/RESULTS.md for these runs."""
    n = len(records)
    out = [
        f"Seeds: {', '.join(str(r['seed']) for r in records)} ({n} runs, mean ± sd; "
        f"max {records[0]['max_steps']} steps, eval every {records[0]['eval_every']} "
        "steps and at every probe step).",
        "",
        "| stop | steps used | held-out accuracy (%) | regret vs best (pp) |",
        "|---|---|---|---|",
    ]
    for m in present_methods(records):
        steps = mean_sd(_method(r, m).get("steps") for r in records)
        acc = mean_sd(_method(r, m).get("accuracy") for r in records)
        reg = mean_sd(_method(r, m).get("regret_vs_best") for r in records)
        out.append(
            f"| {METHOD_LABELS[m]} | {_fmt(*steps, digits=0)} | {_fmt(*acc, pct=True)} "
            f"| {_fmt(*reg, pct=True)} |"
        )
    out += ["", *paired_differences(records)]
    acc0 = mean_sd(r["accuracy_step0"] for r in records)
    out += ["", f"Accuracy before SFT (step 0): {_fmt(*acc0, pct=True)}%.", ""]
    out += [
        "| seed | interaction stop / restored | eval-loss patience 3 / best | best step | acc. "
        "stop / restored / patience+best / best / end (%) | removed fraction at stop / peak | "
        "90% of peak removal by step |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        ms, rem = r["methods"], r["removal"]
        accs = " / ".join(
            "n/a" if ms[m]["accuracy"] is None else f"{100 * ms[m]['accuracy']:.1f}"
            for m in ("interaction_stop", "interaction_restore", "eval_loss_patience3_best")
            + ("best", "end")
        )
        out.append(
            f"| {r['seed']} | {ms['interaction_stop']['steps']} / "
            f"{ms['interaction_restore']['model_step']} | {ms['eval_loss_patience3']['steps']} / "
            f"{ms['eval_loss_patience3_best']['model_step']} | {ms['best']['steps']} | {accs} | "
            f"{_num(rem['fraction_at_stop'])} / {_num(rem['fraction_peak'])} | "
            f"{rem['step_reaching_90pct_of_peak']} |"
        )
    share = mean_sd(r["removal"]["share_of_peak_before_stop"] for r in records)
    out += [
        "",
        "Share of the peak removed fraction already reached at the interaction stop: "
        f"{_fmt(*share, pct=True)}%.",
        "",
        "| category | count at stop | ρ at stop | mean order at stop | count at end "
        "| ρ at end | mean order at end |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in CATEGORIES:
        cells = []
        for when in ("stop", "end"):
            for key in ("count", "rho", "mean_order"):
                cells.append(_fmt(*mean_sd(r[key][when][c] for r in records), digits=2))
        out.append(f"| {c} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Planted patterns (probes that contain both words; category of the planted word set "
        "among the salient interactions):",
        "",
        "| pattern | probes | salient at step 0 | preserved at stop | emerged at stop "
        "| preserved at end | emerged at end | rank at stop (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, first in enumerate(records[0]["planted"]):
        rows = [r["planted"][i] for r in records]

        def total(key: str, rows: list[dict] = rows) -> int:
            return sum(p[key] for p in rows)

        ranks = sorted(x for p in rows for x in p["rank_stop"] if x is not None)
        med = ranks[len(ranks) // 2] if ranks else "n/a"
        out.append(
            f"| {first['type']}({', '.join(first['words'])}) | {total('probes')} | "
            f"{total('step0_salient')} | {total('stop_preserved')} | {total('stop_emerged')} | "
            f"{total('end_preserved')} | {total('end_emerged')} | {med} |"
        )
    cost = [r["cost"] for r in records]
    out += [
        "",
        "| probe points per run | probe seconds per point | probe seconds per run | "
        "training seconds (no probe, no eval) | overhead |",
        "|---|---|---|---|---|",
        f"| {_fmt(*mean_sd(c['probe_points'] for c in cost), digits=0)} | "
        f"{_fmt(*mean_sd(c['probe_seconds_per_point'] for c in cost), digits=2)} | "
        f"{_fmt(*mean_sd(c['probe_seconds_total'] for c in cost), digits=0)} | "
        f"{_fmt(*mean_sd(c['training_seconds_without_probe_and_eval'] for c in cost), digits=0)}"
        f" | {_fmt(*mean_sd(c['overhead_share'] for c in cost), pct=True)}% |",
    ]
    return "\n".join(out) + "\n"


def paired_differences(records: list[dict]) -> list[str]:
    """Regret of restore-best minus that of each baseline, paired by seed, with a 95% t-CI."""
    import statistics

    try:
        from scipy.stats import t as student_t
    except ImportError:  # pragma: no cover - scipy comes with the solver
        student_t = None
    lines = [
        "Paired differences of regret, interaction stop + restore-best minus the other method "
        "(pp; mean, sd and 95% t-interval over seeds; negative favours restore-best):",
        "",
        "| versus | mean | sd | 95% CI |",
        "|---|---|---|---|",
    ]
    for other in (
        "eval_loss_patience3_best",
        "eval_loss_patience3",
        "eval_loss_patience3_best_val",
        "eval_loss_patience3_val",
        "interaction_stop",
        "end",
    ):
        diffs = []
        for r in records:
            a = r["methods"]["interaction_restore"]["regret_vs_best"]
            b = _method(r, other).get("regret_vs_best")
            if a is not None and b is not None:
                diffs.append(100 * (a - b))
        if len(diffs) < 2:
            continue
        m, sd = statistics.fmean(diffs), statistics.stdev(diffs)
        q = student_t.ppf(0.975, len(diffs) - 1) if student_t else 2.776
        half = q * sd / math.sqrt(len(diffs))
        lines.append(
            f"| {METHOD_LABELS[other]} | {m:+.2f} | {sd:.2f} | [{m - half:+.2f}, {m + half:+.2f}] |"
        )
    return lines


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


# ---------------------------------------------------------------------- output
def write_csv(records: list[dict], path: Path) -> None:
    """runs.csv: one row per seed, steps and accuracy per stopping method."""
    fields = ["seed", "accuracy_step0"]
    methods = present_methods(records)
    for m in methods:
        fields += [f"{m}_steps", f"{m}_model_step", f"{m}_accuracy"]
    fields += ["removed_fraction_at_stop", "removed_fraction_peak", "removal_90pct_step"]
    fields += ["probe_points", "probe_seconds_total", "overhead_share"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for r in records:
            row: list[Any] = [r["seed"], r["accuracy_step0"]]
            for m in methods:
                x = _method(r, m)
                row += [x.get("steps"), x.get("model_step"), x.get("accuracy")]
            rem, cost = r["removal"], r["cost"]
            row += [
                rem["fraction_at_stop"],
                rem["fraction_peak"],
                rem["step_reaching_90pct_of_peak"],
            ]
            row += [cost["probe_points"], cost["probe_seconds_total"], cost["overhead_share"]]
            w.writerow(row)


def plot(records: list[dict], path: Path) -> None:
    """Per seed: held-out accuracy, eval loss and removed fraction with the stops marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("accuracy", "eval_loss", "removed_fraction", "noise")
    fig, axes = plt.subplots(len(keys), 1, figsize=(9, 11), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(records):
        col = colors[i % len(colors)]
        for ax, key in zip(axes, keys, strict=True):
            s = {int(k): v for k, v in r["curves"][key].items() if v is not None}
            xs = sorted(s)
            ax.plot(xs, [s[x] for x in xs], color=col, lw=1, label=f"seed {r['seed']}")
        for ax in axes:
            ax.axvline(r["methods"]["interaction_stop"]["steps"], color=col, ls="-", alpha=0.5)
            ax.axvline(r["methods"]["eval_loss_patience3"]["steps"], color=col, ls=":", alpha=0.8)
    axes[0].set_ylabel("held-out accuracy")
    axes[1].set_ylabel("eval loss")
    axes[2].set_ylabel("removed fraction")
    axes[3].set_ylabel("interaction noise")
    axes[-1].set_xlabel("step  (solid: interaction stop, dotted: eval-loss patience 3)")
    axes[0].legend(fontsize=7, ncol=5)
    axes[0].set_title("Study A: demo task, stops per seed")
    for ax in axes:
        ax.set_xscale("symlog", linthresh=20)
        ax.set_xlim(0, max(r["max_steps"] for r in records))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pip_freeze() -> str | None:
    """``pip freeze`` of this interpreter (recorded with the results), or None."""
    import subprocess

    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    """Run the seeds (or redo tables and plots with ``--replot``); write the outputs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "study_a"))
    parser.add_argument("--work-dir", default="/tmp/sft-interactions-study-a")
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--tiny", action="store_true", help="the demo's --quick settings")
    parser.add_argument(
        "--probing", choices=sorted(PROBING), default="demo", help="probing settings (see PROBING)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a demo setting (repeatable), e.g. --set lr=1e-3",
    )
    parser.add_argument(
        "--replot", action="store_true", help="redo table.md and plots from --out's runs.json"
    )
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        records = json.loads((out / "runs.json").read_text())["runs"]
        (out / "table.md").write_text(tables(records))
        plot(records, out / "stops.png")
        print(tables(records))
        return 0
    t0 = time.perf_counter()
    job = (args.tiny, args.eval_every, args.work_dir, args.threads, args.probing, overrides)
    if args.jobs > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(run_seed, args.seeds, *[[x] * len(args.seeds) for x in job]))
    else:
        results = []
        for seed in args.seeds:
            print(f"[study A] seed {seed} ...", flush=True)
            results.append(run_seed(seed, *job))
    records = [analyse(r["summary"], r["metrics"], args.eval_every) for r in results]
    for rec, r in zip(records, results, strict=True):
        rec["curves"].update(r["shipped"])  # both rules replay from runs.json alone
    wall = time.perf_counter() - t0
    meta = {
        "study": "A",
        "command": "python scripts/experiments/study_a_demo.py " + " ".join(argv or sys.argv[1:]),
        "settings": results[0]["summary"]["settings"],
        "wall_seconds": round(wall, 1),
    }
    with open(out / "runs.json", "w") as f:
        json.dump({"meta": meta, "runs": records}, f, indent=1)
    freeze = _pip_freeze()
    if freeze:
        (out / "pip_freeze.txt").write_text(freeze)
    write_csv(records, out / "runs.csv")
    text = tables(records)
    (out / "table.md").write_text(text)
    plot(records, out / "stops.png")
    print(text)
    print(f"[study A] {len(records)} runs in {wall:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
