"""The tuning analyses behind the stop rule's defaults (issue 13), on TUNING run folders only.

    python scripts/experiments/tune_stop_rule.py floors  "/tmp/tuneA_work/*" floors.json
    python scripts/experiments/tune_stop_rule.py schedule "/tmp/tuneA_work/*"
    python scripts/experiments/tune_stop_rule.py multiple "/tmp/tuneA_work/*" floors.json
    python scripts/experiments/tune_stop_rule.py budget "/tmp/tuneA_work/*" budget.md
    python scripts/experiments/tune_stop_rule.py rules "/tmp/tuneA_work/*" rules.md
    python scripts/experiments/tune_stop_rule.py curves "/tmp/tuneA_work/*" curves.json
    python scripts/experiments/tune_stop_rule.py rules-cached curves.json rules.md
    python scripts/experiments/tune_stop_rule.py stability "/tmp/tuneE/work/*"

``floors``: the noise floor of each run's step-0 model (``run/pretrained``), weights
perturbed by 1e-3 and 1e-2 of their std (perturbation seed = the run's seed), as the
callback measures it. ``schedule``: the chosen rule on thinner schedules and on half of
the probes. ``multiple``: floor multiple x patience x restore target. ``budget``: the
probing settings (players per probe, probes, schedule) against their cost, every one
replayed exactly from the stored values: fewer players is the same game with the dropped
words always kept (``v`` restricted to the masks where they are present; the dropped words
are those the demo's probe builder drops at that size), refitted by the exact solver; the
floor is re-measured for each setting on the run's step-0 model (1% weight noise, the
callback's default). Run folders come from ``study_a_demo.py`` (FULL
settings, snapshots at every probe point).
"""

from __future__ import annotations

import glob
import json
import re
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from compare import value_at  # noqa: E402
from replay_stops import (  # noqa: E402
    Rule,
    Run,
    load_run_dir,
    load_stored,
    replay,
    replay_variant,
    tracked_curves,
    variant_rule,
)

SCHEDULES = {
    "default schedule": None,
    "no dense early tier (<=20: every 10)": lambda s: s > 20 or s % 10 == 0,
    "late tier halved (>120: every 80)": lambda s: s <= 120 or s % 80 == 0,
    "early tiers halved (<=120: every 4 / 20)": lambda s: (
        (s <= 20 and s % 4 == 0) or (20 < s <= 120 and s % 20 == 0) or s > 120
    ),
}
PROBES = {"8 probes": None, "probes 0-3": [0, 1, 2, 3], "probes 4-7": [4, 5, 6, 7]}


def _cell(reg: list[float]) -> str:
    """``mean ± sd | per run`` of regrets (pp), two table cells."""
    per = ", ".join(f"{x:.1f}" for x in reg)
    return f"{statistics.fmean(reg):.2f} ± {statistics.stdev(reg):.2f} | {per}"


def _fmt(res: list[dict]) -> str:
    steps = ", ".join(f"{x['stop'] or 'end'}/{x['model_step']}" for x in res)
    return f"{_cell([x['regret_pp'] for x in res])} | {steps}"


def schedule(dirs: list[str]) -> None:
    rule = variant_rule(Rule("default", {}), "debounced", "pooled")
    for pname, probes in PROBES.items():
        for sname, keep in SCHEDULES.items():
            if probes is not None and keep is not None:
                continue
            res = []
            for d in dirs:
                run = load_run_dir(
                    Path(d), [("debounced", "pooled")], probes=probes, keep_step=keep
                )
                res.append(replay_variant(run, rule, "debounced"))
            print(f"| {pname} | {sname} | {_fmt(res)} |")


def multiple(dirs: list[str], floors_path: str) -> None:
    floors = json.loads(Path(floors_path).read_text())
    runs = [load_run_dir(Path(d), [("debounced", "pooled")]) for d in dirs]
    for rel in ("0.001", "0.01"):
        for mult in (0.0, 1.0, 3.0, 10.0):
            for p in (2, 3):
                for restore in ("last_good", "min"):
                    kw = {"floor_multiple": mult, "patience": p, "restore": restore}
                    rule = variant_rule(Rule("x", kw), "debounced", "pooled")
                    res = [
                        replay_variant(replace(r, floor=floors[r.name][rel]), rule, "debounced")
                        for r in runs
                    ]
                    print(f"| rel {rel} | x{mult} | patience {p} | {restore} | {_fmt(res)} |")


def _kept_players(seed: int, players: int, run_players: int = 8) -> list[list[int]]:
    """Per probe, the bits (of the run's ``run_players``-player probe) that the demo's own
    probe builder makes players at ``players`` per probe: it draws the same sentences and
    filler order from the same seed, so the smaller set is a subset and the replay is exact."""
    from sft_interaction_callback.demo.run import make_data
    from sft_interaction_callback.demo.settings import FULL

    def probes_at(n: int) -> list[Any]:
        return make_data(replace(FULL, n_players=n), seed).probes

    out = []
    for big, small in zip(probes_at(run_players), probes_at(players), strict=True):
        spans = [tuple(x) for x in big.players]
        out.append([spans.index(tuple(x)) for x in small.players])
    return out


def _restrict(v: Any, kept: list[list[int]]) -> Any:
    """Per probe, the game on the ``kept`` players: every other player always present."""
    import torch

    n = v.shape[-1].bit_length() - 1
    rows = []
    for row, bits in zip(v, kept, strict=True):
        present = ((1 << n) - 1) ^ sum(1 << b for b in bits)
        idx = [
            present | sum(1 << b for j, b in enumerate(bits) if m >> j & 1)
            for m in range(1 << len(bits))
        ]
        rows.append(row[torch.tensor(idx)])
    return torch.stack(rows)


def _fit(v: Any) -> tuple[Any, Any]:
    from sft_interaction_callback.andor import fit_and_or

    out = fit_and_or(v.double(), noise_bound=0.02, solver="exact")
    return out.i_and, out.i_or


def _step0_setup(run: Path) -> tuple[int, Any, list[Any], Any, Any]:
    """``(seed, model, probes, extractor, config)`` of a run's step-0 model, as it probed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sft_interaction_callback.config import InteractionConfig
    from sft_interaction_callback.engine.extractor import ValueExtractor
    from sft_interaction_callback.probing import Probe

    seed = int(re.search(r"seed(\d+)", run.name).group(1))
    tok = AutoTokenizer.from_pretrained(run / "pretrained")
    model = AutoModelForCausalLM.from_pretrained(run / "pretrained").eval()
    probes_json = json.loads((run / "interactions" / "probes.json").read_text())
    probes = [Probe.from_dict(p) for p in probes_json["probes"]]
    cfg = InteractionConfig(n_players=probes[0].n_players)
    extractor = ValueExtractor.from_config(cfg, tok, kind="causal", baseline=cfg.baseline)
    return seed, model, probes, extractor, cfg


def _step0_values(run: Path) -> tuple[Any, Any]:
    """Values of the run's step-0 model and of its 1%-perturbed copy (the callback's floor)."""
    import torch

    from sft_interaction_callback.callback.noise_floor import perturbed_weights

    seed, model, probes, extractor, _ = _step0_setup(run)
    with torch.no_grad():
        base = extractor.values(model, probes)
        with perturbed_weights(model, 1e-2, seed=seed):
            pert = extractor.values(model, probes)
    return base, pert


BUDGET_PLAYERS = (8, 7, 6)
BUDGET_PROBES = {"8": list(range(8)), "4 (0-3)": [0, 1, 2, 3], "4 (4-7)": [4, 5, 6, 7]}
BUDGET_SCHEDULES = {
    "default": lambda s: True,
    "no dense early tier": SCHEDULES["no dense early tier (<=20: every 10)"],
    "no dense early tier, late halved": lambda s: (
        (20 < s <= 120 and s % 10 == 0) or (s > 120 and s % 80 == 0)
    ),
    "every 20 to 120, then 40": lambda s: (s <= 120 and s % 20 == 0) or s > 120,
}
#: Demo unit costs on the project's 2-core CPU, idle (bench_overhead.py --only demo,
#: 2026-12-01): seconds per masked forward pass, exact-fit seconds per probe by players
#: (one thread; the callback's fit runs probes on both cores), training seconds.
DEMO_FORWARD_S = 0.25 / 2048
DEMO_FIT_S = {8: 0.045, 7: 0.013, 6: 0.005}
DEMO_TRAIN_S = 12.0


def setting_runs(
    dirs: list[str],
    players: tuple[int, ...] = BUDGET_PLAYERS,
    probes: dict[str, list[int]] = BUDGET_PROBES,
    schedules: dict[str, Any] = BUDGET_SCHEDULES,
) -> dict[tuple[str, int, str], list[Run]]:
    """Per setting ``(probes, players, schedule)``, every tuning run's curves (the default
    tracker: debounced categories, pooled signal) and its floor, replayed exactly."""
    import torch

    from sft_interaction_callback.callback.noise_floor import floor_of
    from sft_interaction_callback.callback.state import make_tracker
    from sft_interaction_callback.config import InteractionConfig
    from sft_interaction_callback.snapshots import load_tensors

    torch.set_num_threads(1)
    cfg = InteractionConfig(categories="debounced", noise_signal="pooled")
    out: dict[tuple[str, int, str], list[Run]] = {}
    for d in dirs:
        run = Path(d)
        summary = json.loads((run / "summary.json").read_text())
        acc = {int(k): float(v) for k, v in summary["accuracy"]["by_step"].items()}
        snaps = {}
        for f in sorted(glob.glob(str(run / "interactions" / "step-*.safetensors"))):
            t, meta = load_tensors(f)
            snaps[int(meta["step"])] = t["v"].to(torch.float64)
        base_v, pert_v = _step0_values(run)
        seed = int(re.search(r"seed(\d+)", run.name).group(1))
        for k in players:
            kept = _kept_players(seed, k, run_players=base_v.shape[-1].bit_length() - 1)
            fits = {s: _fit(_restrict(v, kept)) for s, v in snaps.items()}
            f_base, f_pert = _fit(_restrict(base_v, kept)), _fit(_restrict(pert_v, kept))
            for pname, idx in probes.items():
                for sname, keep in schedules.items():
                    based = make_tracker(cfg)
                    based.set_base(f_base[0][idx], f_base[1][idx])
                    floor = floor_of(based, (f_pert[0][idx], f_pert[1][idx]))
                    steps = [s for s in sorted(fits) if s == 0 or keep(s)]
                    tables = [(s, fits[s][0][idx], fits[s][1][idx]) for s in steps]
                    noise, removed = tracked_curves(make_tracker(cfg), tables)
                    curves = {"noise": noise, "removed_fraction": removed}
                    r = Run(run.name, curves, acc, int(summary["max_steps"]), {}, floor)
                    out.setdefault((pname, k, sname), []).append(r)
        print(run.name, "done", flush=True)
    return out


def budget(dirs: list[str], out: str | None = None) -> None:
    """Regret of the default rule against probing cost, over players x probes x schedule."""
    rule = Rule("default", {})
    runs = setting_runs(dirs)
    rows = {key: [replay(r, rule) for r in rs] for key, rs in runs.items()}
    points = {key: [len(r.curves["noise"]) for r in rs] for key, rs in runs.items()}
    ref = None
    lines = [
        "| probes | players | schedule | points | forward cost (x default) | est. demo "
        "overhead | mean regret (pp) | per run | stop/restored |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (pname, k, sname), res in rows.items():
        pts = statistics.fmean(points[(pname, k, sname)])
        n_probes = len(BUDGET_PROBES[pname])
        cost = pts * n_probes * 2**k
        ref = ref or cost
        seconds = (pts + 1) * n_probes * (2**k * DEMO_FORWARD_S + DEMO_FIT_S[k] / 2)
        lines.append(
            f"| {pname} | {k} | {sname} | {pts:.0f} | {cost / ref:.2f} | "
            f"{100 * seconds / DEMO_TRAIN_S:.0f}% | {_fmt(res)} |"
        )
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


RULE_GRID = {
    f"restore {restore}, patience {p}": {"restore": restore, "patience": p}
    for restore in ("min", "last_good", "stage_end")
    for p in (2, 3)
}


RULE_SETTINGS = (("8", 6, "no dense early tier"), ("8", 8, "default"))


def rules(dirs: list[str], out: str | None = None) -> None:
    """The rule's restore target and patience (:data:`RULE_GRID`) at the demo's chosen
    setting (8 probes x 6 players, no dense early tier) and at 8 x 8 with the library's
    schedule, on tuning runs only; the last column pools both settings."""
    runs = {}
    for key in RULE_SETTINGS:
        runs[key] = setting_runs(
            dirs,
            players=(key[1],),
            probes={key[0]: BUDGET_PROBES[key[0]]},
            schedules={key[2]: BUDGET_SCHEDULES[key[2]]},
        )[key]
    names = [f"{p} x {k}, {sched}" for p, k, sched in RULE_SETTINGS]
    lines = [
        "runs: " + ", ".join(r.name for r in runs[RULE_SETTINGS[0]]),
        "",
        "| rule | "
        + " | ".join(f"{n}: mean regret (pp) | per run" for n in names)
        + " | both settings |",
        "|---|" + "---|---|" * len(names) + "---|",
    ]
    for name, kw in RULE_GRID.items():
        cells, pooled = [], []
        for key in RULE_SETTINGS:
            res = [replay(r, Rule(name, kw)) for r in runs[key]]
            reg = [x["regret_pp"] for x in res]
            pooled += reg
            cells.append(_cell(reg))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {statistics.fmean(pooled):.2f} |")
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def curves(dirs: list[str], out: str) -> None:
    """Write every tuning run's replay inputs at the two :data:`RULE_SETTINGS` to ``out``
    (JSON): per run the noise and removed-fraction curves and the floor of each setting,
    the held-out accuracy and eval loss by step, and ``max_steps``. Rule variants are then
    replayed from this file in seconds (``rules-cached``)."""
    by_key = setting_runs(
        dirs,
        players=tuple(sorted({k for _, k, _ in RULE_SETTINGS}, reverse=True)),
        probes={p: BUDGET_PROBES[p] for p, _, _ in RULE_SETTINGS},
        schedules={s: BUDGET_SCHEDULES[s] for _, _, s in RULE_SETTINGS},
    )
    result: dict[str, Any] = {}
    for key in RULE_SETTINGS:
        for d, r in zip(dirs, by_key[key], strict=True):
            summary = json.loads((Path(d) / "summary.json").read_text())
            row = result.setdefault(
                r.name,
                {
                    "accuracy": summary["accuracy"]["by_step"],
                    "eval_loss": summary["eval_loss"]["by_step"],
                    "max_steps": r.max_steps,
                    "settings": {},
                },
            )
            row["settings"][f"{key[0]}x{key[1]}, {key[2]}"] = {
                "floor": r.floor,
                **{name: {str(s): v for s, v in c.items()} for name, c in r.curves.items()},
            }
    Path(out).write_text(json.dumps(result, indent=1))


def cached_runs(path: str) -> dict[str, list[Run]]:
    """Per setting name, the runs stored by :func:`curves`."""
    data = json.loads(Path(path).read_text())
    out: dict[str, list[Run]] = {}
    for name, row in data.items():
        acc = {int(k): float(v) for k, v in row["accuracy"].items()}
        for setting, c in row["settings"].items():
            cur = {k: {int(s): v for s, v in c[k].items()} for k in ("noise", "removed_fraction")}
            out.setdefault(setting, []).append(
                Run(name, cur, acc, int(row["max_steps"]), {}, c["floor"])
            )
    return out


def eval_loss_best_regret(path: str) -> dict[str, float]:
    """Per run, the regret (pp) of eval-loss patience 3 + load best, as the study replays it."""
    from compare import eval_loss_stop

    data = json.loads(Path(path).read_text())
    out = {}
    for name, row in data.items():
        acc = {int(k): float(v) for k, v in row["accuracy"].items()}
        loss = {int(k): float(v) for k, v in row["eval_loss"].items() if v is not None}
        _, used = eval_loss_stop(loss, 20, int(row["max_steps"]))  # the studies' eval grid
        out[name] = 100 * (max(acc.values()) - acc[used])
    return out


CACHED_GRID = {
    f"restore {restore}, patience {p}, floor x{m:g}": {
        "restore": restore,
        "patience": p,
        "floor_multiple": m,
    }
    for restore in ("min", "last_good", "stage_end")
    for p in (2, 3)
    for m in (1.0, 3.0)
}
#: the plateau stage test's window and tolerance (rest at the defaults), added to the grid
#: in session 5 after the lr-5e-4 tuning runs showed the stage ending after the peak
CACHED_GRID.update(
    {
        f"stage window {w:g}, tolerance {t:g}": {"stage_window": w, "stage_tolerance": t}
        for w in (0.5, 0.6, 0.7)
        for t in (0.05, 0.1, 0.2, 0.3)
        if (w, t) != (0.5, 0.1)
    }
)


def rules_cached(path: str, out: str | None = None) -> None:
    """:data:`CACHED_GRID` replayed from a :func:`curves` file; eval-loss patience 3 + load
    best on the same runs in the last line (the default rule is the first line)."""
    runs = cached_runs(path)
    names = list(runs)
    el = eval_loss_best_regret(path)
    lines = [
        f"runs ({len(runs[names[0]])}): " + ", ".join(r.name for r in runs[names[0]]),
        "",
        "| rule | " + " | ".join(f"{n}: mean regret (pp) | per run" for n in names) + " | pooled |",
        "|---|" + "---|---|" * len(names) + "---|",
    ]
    for name, kw in CACHED_GRID.items():
        cells, pooled = [], []
        for setting in names:
            reg = [replay(r, Rule(name, kw))["regret_pp"] for r in runs[setting]]
            pooled += reg
            cells.append(_cell(reg))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {statistics.fmean(pooled):.2f} |")
    reg = [el[r.name] for r in runs[names[0]]]
    lines.append(
        "| eval-loss patience 3 + load best (reads the judged split) | "
        + " | ".join([_cell(reg)] * len(names))
        + f" | {statistics.fmean(reg):.2f} |"
    )
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def stability(dirs: list[str]) -> None:
    """How much a demo's held-out accuracy swings, and whether it still overfits: the share
    of adjacent 20-step evaluation pairs after step 100 that differ by more than 5 pp, and
    the drop from the best accuracy to the end (the session-5 criteria for the demo's lr)."""
    jumps, drops = [], []
    for d in dirs:
        summary = json.loads((Path(d) / "summary.json").read_text())
        acc = {int(k): float(v) for k, v in summary["accuracy"]["by_step"].items()}
        grid = [acc[k] for k in sorted(acc) if k % 20 == 0 and k >= 100]
        jumps += [abs(a - b) > 0.05 for a, b in zip(grid, grid[1:], strict=False)]
        drops.append(100 * (max(acc.values()) - acc[max(acc)]))
    print(
        f"{len(dirs)} runs: {100 * statistics.fmean(jumps):.1f}% of adjacent 20-step "
        f"evaluation pairs after step 100 differ by > 5 pp; best -> end drop "
        f"{statistics.fmean(drops):.1f} ± {statistics.stdev(drops):.1f} pp "
        f"(min {min(drops):.1f}; {sum(x >= 5 for x in drops)} runs >= 5 pp)"
    )


#: the probing the demo ships (8 probes x 6 players): the setting a ceiling is read at
DEMO_SETTING = "8x6, no dense early tier"


def _probe_steps(run: Run) -> list[int]:
    return sorted(s for s in run.curves["noise"] if s > 0)


def _regret(run: Run, step: int) -> float:
    return 100 * (run.best - value_at(run.accuracy, step))


def _retro_step(run: Run, stage_end: int | None, end: int) -> int:
    """The restore step of a target explored in session 6 (tuning seeds; not adopted): the
    noise minimum from the first point where removal reached 90% of its running max at the
    stage end (the last model when the stage never ends). ``stage_end`` and ``end`` (the
    stop, or the last step) are those of the rule's replay."""
    if stage_end is None:
        return end
    noise, removed = run.curves["noise"], run.curves["removed_fraction"]
    seen = [s for s in _probe_steps(run) if removed.get(s) is not None]
    peak_at_end = max(removed[s] for s in seen if s <= stage_end)  # the stage test's max
    start = min(s for s in seen if s <= end and removed[s] >= 0.9 * peak_at_end)
    window = [s for s in _probe_steps(run) if start <= s <= end]
    return min(window, key=lambda s: (noise[s], s))


#: the restore targets a ceiling table compares (the rest of the rule at its defaults)
CEILING_TARGETS = {
    "restore-best, target removal_peak (default from session 6)": "removal_peak",
    "restore-best, target min (default before)": "min",
}


_TARGETS = set(CEILING_TARGETS.values())


def ceiling_rows(runs: list[Run], eval_loss_regret: list[float]) -> dict[str, list[float]]:
    """Per row name, the regret (pp) of each run: eval-loss patience 3 + load best, the
    rule with restore-best at each of :data:`CEILING_TARGETS`, and the best probe-point
    checkpoint (an oracle reading the judged accuracy) among those target ``min`` may
    restore (stage end .. stop), up to the stop, and in the whole run; then a target
    explored in session 6."""
    rows: dict[str, list[float]] = {"eval-loss patience 3 + load best": eval_loss_regret}
    for run in runs:
        r = replay(run, Rule("min", {"restore": "min"}))
        end = r["stop"] if r["stop"] is not None else run.max_steps
        steps = _probe_steps(run)
        allowed = (
            [end] if r["stage_end"] is None else [s for s in steps if r["stage_end"] <= s <= end]
        )
        by_target = {t: r if t == "min" else replay(run, Rule(t, {"restore": t})) for t in _TARGETS}
        got = {name: by_target[t]["regret_pp"] for name, t in CEILING_TARGETS.items()}
        got |= {
            "oracle: stage end .. stop (what target min may pick)": min(
                _regret(run, s) for s in allowed
            ),
            "oracle: any probe point up to the stop (removal_peak may pick)": min(
                _regret(run, s) for s in steps if s <= end
            ),
            "oracle: any probe point": min(_regret(run, s) for s in steps),
        }
        retro = _retro_step(run, r["stage_end"], end)
        got["retro 90%, noise min (explored, not adopted)"] = _regret(run, retro)
        for k, v in got.items():
            rows.setdefault(k, []).append(v)
    return rows


def _ceiling_set(path: str) -> tuple[list[Run], list[float]]:
    """Runs at the demo's probing and their eval-loss regrets, from a :func:`curves` file
    (tuning) or a study-A ``runs.json`` (the demo's own probing)."""
    if path.endswith("curves.json") or "/curves" in path:
        runs = cached_runs(path)[DEMO_SETTING]
        el = eval_loss_best_regret(path)
        return runs, [el[r.name] for r in runs]
    runs = load_stored([path])
    return runs, [100 * (r.best - r.baselines["eval_loss_patience3_best"]) for r in runs]


def ceiling(sets: list[str], out: str | None = None) -> None:
    """:func:`ceiling_rows` per run set (``LABEL=PATH``), mean ± sd, and each row minus
    eval-loss + load best, paired, with its 95% t-interval."""
    from stops import t_interval

    table: list[tuple[str, dict[str, list[float]]]] = []
    for item in sets:
        label, path = item.split("=", 1)
        table.append((label, ceiling_rows(*_ceiling_set(path))))
    names = list(table[0][1])
    lines = [
        "| regret (pp) | " + " | ".join(f"{lab} (n={len(r[names[0]])})" for lab, r in table) + " |",
        "|---|" + "---|" * len(table),
    ]
    base = names[0]
    for name in names:
        cells = []
        for _, rows in table:
            xs = rows[name]
            cell = f"{statistics.fmean(xs):.2f} ± {statistics.stdev(xs):.2f}"
            if name != base:
                m, lo, hi, _ = t_interval([a - b for a, b in zip(xs, rows[base], strict=True)])
                cell += f"; {m:+.2f} [{lo:+.2f}, {hi:+.2f}]"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Each cell: mean ± sd over runs; below the first row, also the paired difference "
        "from eval-loss patience 3 + load best with its 95% t-interval.",
    ]
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def measure_floors(dirs: list[str], out: str) -> None:
    import torch

    from sft_interaction_callback.callback.noise_floor import floor_of, perturbed_weights
    from sft_interaction_callback.callback.state import make_tracker

    torch.set_num_threads(1)
    result = {}
    for d in dirs:
        run = Path(d)
        seed, model, probes, extractor, cfg = _step0_setup(run)
        tracker = make_tracker(cfg)
        tracker.set_base(extractor.measure(model, probes))
        row = {}
        for rel in (1e-3, 1e-2):
            with perturbed_weights(model, rel, seed=seed):
                row[str(rel)] = floor_of(tracker, extractor.measure(model, probes))
        result[run.name] = row
        print(run.name, row, flush=True)
    Path(out).write_text(json.dumps(result, indent=1))


def main(argv: list[str]) -> int:
    what, pattern, *rest = argv
    dirs = sorted(glob.glob(pattern))
    if what == "floors":
        measure_floors(dirs, rest[0])
    elif what == "schedule":
        schedule(dirs)
    elif what == "multiple":
        multiple(dirs, rest[0])
    elif what == "budget":
        budget(dirs, rest[0] if rest else None)
    elif what == "rules":
        rules(dirs, rest[0] if rest else None)
    elif what == "curves":
        curves(dirs, rest[0])
    elif what == "stability":
        stability(dirs)
    elif what == "rules-cached":  # the pattern is a curves file here
        rules_cached(pattern, rest[0] if rest else None)
    elif what == "ceiling":  # the pattern is the output file; then LABEL=PATH per run set
        ceiling(rest, pattern)
    else:
        raise SystemExit(
            f"unknown analysis {what!r}: floors, schedule, multiple, budget, rules, curves, "
            "rules-cached, ceiling or stability"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
