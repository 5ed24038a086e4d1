"""What a probe point leaves behind: progress, ``metrics.jsonl``, a snapshot, the logs.

The callback measures; :func:`record_point` and :func:`record_skip` book the outcome in
one order on every rank (progress first, then files on the main process, then the logs),
so that a failing disk or logger never loses the in-memory progress that resume saves.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

from sft_interaction_callback.andor import AndOrInteractions
from sft_interaction_callback.callback.metric_log import MetricLog
from sft_interaction_callback.callback.restore_best import stage_metric_of
from sft_interaction_callback.callback.state import CallbackState
from sft_interaction_callback.config import InteractionConfig
from sft_interaction_callback.engine.distributed import PeerFailure
from sft_interaction_callback.engine.runtime import free_memory, is_out_of_memory
from sft_interaction_callback.keys import (
    FIT_SECONDS_KEY,
    FORWARD_SECONDS_KEY,
    NOISE_KEY,
    SECONDS_KEY,
    SKIPPED_KEY,
    SOLVER_GAP_MAX,
    STOP_REASON_KEY,
    STOP_STEP_KEY,
)
from sft_interaction_callback.snapshots import try_write, write_probe_point
from sft_interaction_callback.tracking.stopping import stopper_status

__all__ = [
    "ProbePoint",
    "StopDecision",
    "record_point",
    "record_skip",
    "solver_gap_metrics",
]

#: ``(step, reason)``: the stopper fired at ``step``
StopDecision = tuple[int, str]


@dataclass
class ProbePoint:
    """One measured probe point: its interactions (values included) and the tracker's metrics."""

    step: int
    interactions: AndOrInteractions
    metrics: dict[str, float]
    seconds: float


def solver_gap_metrics(interactions: AndOrInteractions) -> dict[str, float]:
    """``interactions/solver_gap_max``: the largest certified per-probe gap of the fit, when
    the solver certifies one (how far from an exact optimum the interactions may be), and
    the point's seconds in the forward passes and in the fit, when the engine timed them."""
    out = {}
    seconds = interactions.meta.get("seconds") or {}
    for key, phase in ((FORWARD_SECONDS_KEY, "forward"), (FIT_SECONDS_KEY, "fit")):
        if phase in seconds:
            out[key] = float(seconds[phase])
    gap = interactions.gap
    if gap is not None and gap.numel() > 0:
        out[SOLVER_GAP_MAX] = float(gap.detach().float().max())
    return out


def record_point(
    rs: CallbackState,
    cfg: InteractionConfig,
    log: MetricLog,
    point: ProbePoint,
    *,
    main: bool,
    control: Any,
    stop: StopDecision | None,
) -> None:
    """Book a measured probe point (``control`` None: before training, logged later)."""
    step, inter, metrics, seconds = point.step, point.interactions, point.metrics, point.seconds
    progress = rs.progress
    progress.last_step = step
    progress.probe_steps.append(step)
    noise = metrics.get(NOISE_KEY)
    if noise is not None and math.isfinite(noise):
        progress.last_noise, progress.last_noise_step = float(noise), step
    removed = metrics.get(stage_metric_of(rs.stopper))
    if removed is not None and math.isfinite(removed):
        progress.last_removed = float(removed)
    status = stopper_status(rs.stopper) if cfg.early_stopping else {}
    logs = {**metrics, **solver_gap_metrics(inter), **status, SECONDS_KEY: seconds}
    logs[SKIPPED_KEY] = float(progress.skipped)
    record: dict[str, Any] = {"step": step, "skipped": False, **logs}
    if stop is not None:
        progress.stop = {"step": stop[0], "reason": stop[1]}
        logs[STOP_STEP_KEY] = float(stop[0])
        record.update({STOP_STEP_KEY: stop[0], STOP_REASON_KEY: stop[1]})
    tables = None
    if main:
        sets = rs.tracker.last_sets()
        path = write_probe_point(rs.snapshots, step, inter, sets, record, stop)
        if path is not None:
            progress.files[str(step)] = str(path)
        if cfg.log_tables:
            tables = {
                "step": step,
                "interactions": inter,
                "probes": rs.probes,
                "sets": sets,
                "histograms": rs.tracker.last_histograms(),
            }
    log.emit(logs, control, tables)


def record_skip(
    rs: CallbackState,
    log: MetricLog,
    step: int,
    err: BaseException,
    *,
    main: bool,
    control: Any = None,
) -> None:
    """Book a probe point that failed: warn, count it, and say why in ``metrics.jsonl``."""
    oom = is_out_of_memory(err)
    if oom:
        free_memory()
    rs.progress.skipped += 1
    rs.progress.skipped_steps.append(step)
    what = f"{type(err).__name__}: {err}"
    if oom:  # on many ranks, say which one(s)
        what = f"out of memory: {err}" if isinstance(err, PeerFailure) else "out of memory"
    warnings.warn(
        f"interaction probe at step {step} skipped ({what}); training continues",
        stacklevel=4,
    )
    snapshots = rs.snapshots
    if main and snapshots is not None:
        record = {"step": step, "skipped": True, "error": what}
        try_write("metrics", lambda: snapshots.append_metrics(record))
    log.emit({SKIPPED_KEY: float(rs.progress.skipped)}, control)
