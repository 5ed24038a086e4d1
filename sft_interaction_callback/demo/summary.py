"""The demo's summary: ``summary.json`` from the run's files, and the text the CLI prints.

Everything is read back from disk (``metrics.jsonl``, the step snapshots) and from the
Trainer's log history, so a summary says what the files say. The stop is the shadow
stop (:class:`~sft_interaction_callback.tracking.shadow.ShadowStopper`): the model at
that step is the one a real stop would have kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sft_interaction_callback.demo.settings import DemoSettings
from sft_interaction_callback.keys import (
    EMERGED,
    NOISE_KEY,
    PRESERVED,
    REMOVED_FRACTION_KEY,
    SALIENT,
    category_key,
)
from sft_interaction_callback.tracking.shadow import ProbePoints, ShadowStopper
from sft_interaction_callback.tracking.stopping import RESTORE_MEANING

__all__ = ["format_summary", "summarise"]


def _series(history: list[dict[str, Any]], key: str) -> dict[int, float]:
    return {int(h["step"]): float(h[key]) for h in history if key in h and h[key] is not None}


def _at_or_before(series: Mapping[int, float], step: int | None) -> tuple[int, float] | None:
    """The value at ``step``, or the last one before it."""
    if step is None:
        return None
    keys = [s for s in series if s <= step]
    if not keys:
        return None
    s = max(keys)
    return s, series[s]


def summarise(
    *,
    run_dir: Path,
    snap_dir: Path,
    log_history: list[dict[str, Any]],
    shadow: ShadowStopper,
    probes: list[Any],
    settings: DemoSettings,
    seed: int,
) -> dict[str, Any]:
    """The numbers the demo prints, from the run's files and the Trainer's log history."""
    points = ProbePoints.read(snap_dir)
    metric = points.metric
    last = points.last
    stop = shadow.stop_step
    inner = shadow.inner

    acc = _series(log_history, "eval_accuracy")
    eval_loss = _series(log_history, "eval_loss")
    val_loss, val_acc = _series(log_history, "val_loss"), _series(log_history, "val_accuracy")
    best_step = max(acc, key=lambda s: (acc[s], -s)) if acc else None
    end_step = max(acc) if acc else None

    removed_stop, removed_end, share = points.removal(stop)
    emerged = {
        k: {
            "stop": metric(stop, category_key(EMERGED, k)),
            "end": metric(last, category_key(EMERGED, k)),
        }
        for k in ("strength_norm", "strength", "count")
    }
    noise = {"stop": metric(stop, NOISE_KEY), "end": metric(last, NOISE_KEY)}
    norm = emerged["strength_norm"]
    grew = None
    if norm["stop"] is not None and norm["end"] is not None:
        grew = norm["end"] > norm["stop"]

    acc_stop = _at_or_before(acc, stop)
    stage_end = getattr(inner, "stage_ended_at", None)
    # restore-best: the checkpoint the callback goes back to at the stop (recorded by the
    # shadow stopper then), or at the end of training when the rule never fired
    restore = shadow.restore_step if stop is not None else getattr(inner, "restore_step", None)
    acc_restored = _at_or_before(acc, restore)
    acc_stage = _at_or_before(acc, stage_end)
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "settings": asdict(settings),
        "seed": seed,
        "mode": "shadow stop: the default NoiseRiseStopper decides, training continues to "
        "max_steps so the end can be measured",
        "max_steps": settings.max_steps,
        "last_probe_step": last,
        "stop": {
            "step": stop,
            "reason": shadow.reason
            or f"the stopper did not fire ({getattr(inner, 'stage_reason', '')})",
            "fired": stop is not None,
            "before_last_step": stop is not None and stop < settings.max_steps,
            "denoising_stage_ended_at": stage_end,
            "restore_step": restore,
            "restore_target": getattr(inner, "restore", None),
            "noise_floor": getattr(inner, "floor", None),
            "min_delta": getattr(inner, "min_delta", None),
        },
        "accuracy": {
            "step0": acc.get(0),
            "stop": None if acc_stop is None else acc_stop[1],
            "stop_eval_step": None if acc_stop is None else acc_stop[0],
            "restored": None if acc_restored is None else acc_restored[1],
            "restored_step": None if acc_restored is None else acc_restored[0],
            "stage_end": None if acc_stage is None else acc_stage[1],
            "best": None if best_step is None else acc[best_step],
            "best_step": best_step,
            "end": None if end_step is None else acc[end_step],
            "end_step": end_step,
            "by_step": {str(s): v for s, v in sorted(acc.items())},
        },
        "eval_loss": {"by_step": {str(s): v for s, v in sorted(eval_loss.items())}},
        # settings.val_size > 0: the validation split's loss and accuracy at each evaluation
        "val_loss": {"by_step": {str(s): v for s, v in sorted(val_loss.items())}},
        "val_accuracy": {"by_step": {str(s): v for s, v in sorted(val_acc.items())}},
        "train_loss": {
            "first": _first(_series(log_history, "loss")),
            "last": _last(_series(log_history, "loss")),
        },
        "removal": {
            "removed_strength_at_stop": removed_stop,
            "removed_strength_at_end": removed_end,
            "share_before_stop": share,
            "removed_fraction_at_stop": metric(stop, REMOVED_FRACTION_KEY),
            "removed_fraction_at_end": metric(last, REMOVED_FRACTION_KEY),
        },
        "emerged": {**emerged, "grew_after_stop": grew},
        "noise": noise,
        "planted": _planted(snap_dir, probes, {"step0": 0, "stop": stop, "end": last}),
    }
    summary["checks"] = _checks(summary)
    return summary


def _first(series: Mapping[int, float]) -> float | None:
    return series[min(series)] if series else None


def _last(series: Mapping[int, float]) -> float | None:
    return series[max(series)] if series else None


def _planted(snap_dir: Path, probes: list[Any], at: Mapping[str, int | None]) -> list[dict]:
    """Where the planted AND / OR word sets stand among each probe's salient interactions."""
    from sft_interaction_callback.demo.task import AND_PAIR, OR_PAIR
    from sft_interaction_callback.snapshots import load_tensors, step_filename

    patterns = [("AND", AND_PAIR), ("OR", OR_PAIR)]
    tables: dict[str, dict[str, Any]] = {}
    for name, step in at.items():
        path = snap_dir / step_filename(step) if step is not None else None
        if path is not None and path.is_file():
            tables[name] = load_tensors(path)[0]
    out = []
    for kind, words in patterns:
        entry: dict[str, Any] = {"type": kind, "words": list(words), "probes": []}
        for p, probe in enumerate(probes):
            if not all(w in probe.words for w in words):
                continue
            s = sum(1 << probe.words.index(w) for w in words)
            size = 1 << probe.n_players
            idx = s if kind == "AND" else size + s
            row: dict[str, Any] = {"probe": probe.id}
            for name, t in tables.items():
                inter = (t["i_and"] if kind == "AND" else t["i_or"])[p, s]
                table = _abs_table(t, p)
                rank = int((table > abs(float(inter))).sum()) + 1
                category = None
                for c in (PRESERVED, EMERGED):
                    if c in t and bool(t[c][p, idx]):
                        category = c
                if name == "step0" and PRESERVED in t:
                    category = SALIENT if bool(t[PRESERVED][p, idx]) else None
                row[name] = {"value": float(inter), "rank": rank, "category": category}
            entry["probes"].append(row)
        for name in tables:
            hits = [r for r in entry["probes"] if r.get(name, {}).get("category")]
            entry[f"salient_{name}"] = f"{len(hits)}/{len(entry['probes'])}"
        out.append(entry)
    return out


def _abs_table(t: Mapping[str, Any], p: int) -> Any:
    """``|I|`` of probe ``p`` over AND and OR, empty sets left out (for ranks)."""
    import torch

    size = t["i_and"].shape[-1]
    table = torch.cat((t["i_and"][p], t["i_or"][p])).abs()
    table[0] = table[size] = 0
    return table


def _checks(s: Mapping[str, Any]) -> dict[str, bool | None]:
    acc, rem = s["accuracy"], s["removal"]
    share = rem["share_before_stop"]
    return {
        "stopped_before_last_step": s["stop"]["before_last_step"],
        "removal_mostly_before_stop": None if share is None else share >= 0.8,
        "emerged_grew_after_stop": s["emerged"]["grew_after_stop"],
        "accuracy_at_stop_ge_end": None
        if acc["stop"] is None or acc["end"] is None
        else acc["stop"] >= acc["end"],
        "restored_within_2pp_of_best": None
        if acc.get("restored") is None or acc["best"] is None
        else acc["best"] - acc["restored"] <= 0.02 + 1e-9,
    }


# ---------------------------------------------------------------------- printing
def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = ".4g") -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)


def format_summary(s: Mapping[str, Any]) -> str:
    """The short text summary the CLI prints."""
    stop, acc, rem, em = s["stop"], s["accuracy"], s["removal"], s["emerged"]
    lines = ["", "=== demo summary ==="]
    st1 = s.get("stage1")
    if st1:
        lines.append(
            f"pretrained model (stage 1): {_pct(st1['accuracy_true_rule'])} held-out accuracy on "
            f"the true rule, {_pct(st1['accuracy_corpus_rule'])} on its noisy corpus's labels"
        )
    stage = stop.get("denoising_stage_ended_at")
    lines.append(
        "denoising stage: "
        + (f"ended at step {stage}" if stage is not None else "did not end")
        + f" (noise floor {_num(stop.get('noise_floor'))}, min_delta {_num(stop.get('min_delta'))})"
    )
    if stop["fired"]:
        lines.append(f"stop: step {stop['step']} of {s['max_steps']}")
    else:
        lines.append(f"stop: the stopper did not fire in {s['max_steps']} steps")
    lines.append(f"  reason: {stop['reason']}")
    lines.append(
        "  (shadow mode: training went on to max_steps to measure the end; the model at the "
        "stop step is the one early stopping would keep)"
    )
    restored = stop.get("restore_step")
    meaning = RESTORE_MEANING.get(stop.get("restore_target") or "", "the stopper's target")
    lines.append(
        "restore-best: "
        + (f"back to the checkpoint of step {restored}" if restored is not None else "nothing")
        + f" ({meaning})"
    )
    lines.append(
        f"held-out accuracy: step 0 {_pct(acc['step0'])} | stage end {_pct(acc.get('stage_end'))}"
        f" | stop {_pct(acc['stop'])} | restored {_pct(acc.get('restored'))}"
        f" | best {_pct(acc['best'])} (step {acc['best_step']})"
        f" | end {_pct(acc['end'])} (step {acc['end_step']})"
    )
    lines.append(
        f"train loss: {_num(s['train_loss']['first'], '.3f')} (first log) -> "
        f"{_num(s['train_loss']['last'], '.3f')} (last)"
    )
    lines.append(
        f"removed strength: {_num(rem['removed_strength_at_stop'])} at the stop, "
        f"{_num(rem['removed_strength_at_end'])} at the end -> "
        f"{_pct(rem['share_before_stop'])} of the final removal happened before the stop"
    )
    sn = em["strength_norm"]
    grew = {True: "grew", False: "did not grow", None: "n/a"}[em["grew_after_stop"]]
    lines.append(
        f"newly emerged strength (share of total): {_pct(sn['stop'])} at the stop -> "
        f"{_pct(sn['end'])} at the end ({grew}); raw {_num(em['strength']['stop'])} -> "
        f"{_num(em['strength']['end'])}"
    )
    lines.append(
        f"noise signal: {_num(s['noise']['stop'])} at the stop -> {_num(s['noise']['end'])} at "
        "the end"
    )
    for p in s["planted"]:
        joiner = " AND " if p["type"] == "AND" else " OR "
        lines.append(
            f"planted {p['type']} pattern {{{joiner.join(p['words'])}}}: salient in "
            f"{p.get('salient_step0', 'n/a')} probes at step 0, {p.get('salient_stop', 'n/a')} "
            f"at the stop, {p.get('salient_end', 'n/a')} at the end"
        )
        if stop["fired"]:
            cats = []
            for row in p["probes"]:
                at = row.get("stop") or {}
                cats.append(
                    f"{row['probe']} {at.get('category') or 'not salient'} (rank {at.get('rank')})"
                )
            lines.append("  at the stop: " + ", ".join(cats))
    checks = s["checks"]
    marks = {True: "yes", False: "NO", None: "n/a"}
    lines.append(
        "checks: " + ", ".join(f"{k.replace('_', ' ')}: {marks[v]}" for k, v in checks.items())
    )
    t = s.get("timing", {})
    if t:
        lines.append(
            f"time: {t.get('wall_seconds')} s wall, {t.get('cpu_seconds')} s CPU (pretraining "
            f"{t.get('pretrain_seconds')} s, fine-tuning with probes {t.get('finetune_seconds')} s)"
        )
    if s.get("report"):
        lines.append(f"report: {s['report']}")
    lines.append(f"run folder: {s['run_dir']}")
    return "\n".join(lines)
