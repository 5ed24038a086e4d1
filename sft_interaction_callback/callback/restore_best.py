"""Restore-best: go back to the checkpoint with the best interaction score (DESIGN.md §9).

The lasting rise of new-interaction noise comes with or after the drop of held-out
quality, so a rule that only *stops* is late by construction. With ``restore_best=True``
(default) the callback therefore goes back, the label-free analogue of
``load_best_model_at_end``: it needs no labelled evaluation set and no evaluation loop.

* **Score.** The stopper's :attr:`restore_step`: by default the probe point where the
  removed share of the base salient strength peaked (``NoiseRiseStopper(restore=
  "removal_peak")``: the most denoised checkpoint); ``restore="min"``: the lowest noise
  signal since the stage end was confirmed; ``restore="stage_end"``: that point itself.
  Nothing is restored before the stage end is confirmed, and no point from before
  removal happened can be chosen (early in training the noise is low because nothing
  has been learned yet; the removed share is 0 there).
* **Checkpoints.** At a probe point that becomes the new candidate (the stopper's
  ``keep_step``: with ``"removal_peak"`` from the first point on, since the peak may
  come before the stage end is confirmed), the callback asks the Trainer to save
  (``control.should_save``), whatever ``save_strategy`` ("no" and "steps" alike), so
  every candidate has a checkpoint. When the user has no
  ``metric_for_best_model``, that folder is also recorded as
  ``state.best_model_checkpoint``, which keeps ``save_total_limit`` from deleting it.
  Checkpoints saved only for this (not by the user's own ``save_strategy``) are deleted
  once a later candidate supersedes them (:func:`prune_superseded`).
* **Restore.** In ``on_train_end`` (after a stop, or at the end of training) the weights
  of that checkpoint are loaded through the Trainer's own best-model loader, so full
  models, sharded checkpoints and PEFT adapters (LoRA) load as ``load_best_model_at_end``
  would. Nothing is done when ``load_best_model_at_end`` is set (the user chose the
  Trainer's metric), when the stage never ended, or when the best point is the last
  step (the weights already are that checkpoint's). A failure warns and keeps the
  current weights; it never raises into training.
* **Resume.** The best-so-far lives in the stopper's state, saved with every checkpoint,
  so a resumed run keeps it.
* **The end of a run** (:func:`finish_run`): the restored step is logged, and beside the
  snapshots go the Trainer's whole log (``log_history.json``), the replay of the run's
  rule and its neighbours (``rules.json``) and a fired shadow stop's ``stop.json``.

:func:`eval_value` gives ``eval_interaction_noise``: before the stage ends it is the worst
possible value (``+inf``, or ``-inf`` with ``greater_is_better=True``), so
``metric_for_best_model="interaction_noise"`` never makes a checkpoint from before the
stage end "best"; after it, the noise of each point (with ``restore="stage_end"`` the worst
value after the stage-end point too). :func:`restore_score` gives
``eval_interaction_restore_score``, lower is better, whose lowest is the checkpoint
restore-best loads: minus the removed share with ``"removal_peak"`` (so no point from
before removal happened can be best), :func:`eval_value` for the other targets.
(``"last_good"`` has no lower-is-better equivalent and is served like ``"min"``.)
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import warnings
from typing import Any

from sft_interaction_callback.callback.noise_floor import measure_floor
from sft_interaction_callback.callback.resume import checkpoint_dir
from sft_interaction_callback.keys import (
    EVAL_METRIC,
    EVAL_RESTORE_SCORE,
    REMOVED_FRACTION_KEY,
    RESTORE_STEP_KEY,
)

__all__ = [
    "eval_metrics",
    "eval_value",
    "finish_run",
    "keep_step_of",
    "mark_best_checkpoint",
    "measure_floor",
    "observe",
    "prune_superseded",
    "restore_at_end",
    "restore_score",
    "restore_step_of",
    "stage_metric_of",
    "write_rule_comparison",
]

logger = logging.getLogger("sft_interaction_callback")


def _stopper_attr(stopper: Any, name: str, kind: type) -> Any:
    """``stopper.<name>`` (or its wrapped ``inner`` rule's) when it is a ``kind``, else None."""
    for obj in (stopper, getattr(stopper, "inner", None)):
        value = getattr(obj, name, None) if obj is not None else None
        if isinstance(value, kind) and not isinstance(value, bool):
            return value
    return None


def restore_step_of(stopper: Any) -> int | None:
    """The stopper's ``restore_step`` (the inner rule's for a wrapper), else None."""
    return _stopper_attr(stopper, "restore_step", int)


def keep_step_of(stopper: Any) -> int | None:
    """The step whose checkpoint restore-best must keep now (``keep_step``, else the
    ``restore_step``), the inner rule's for a wrapper."""
    step = _stopper_attr(stopper, "keep_step", int)
    return restore_step_of(stopper) if step is None else step


def stage_metric_of(stopper: Any) -> str:
    """The metric the stopper's stage test reads (the removed share by default)."""
    return _stopper_attr(stopper, "stage_metric", str) or REMOVED_FRACTION_KEY


def stage_end_of(stopper: Any) -> int | None:
    """Where the stopper's denoising stage ended (None: not yet, or no such notion)."""
    return _stopper_attr(stopper, "stage_ended_at", int)


def _enabled(callback: Any, args: Any) -> bool:
    cfg = callback.config
    return (
        bool(getattr(cfg, "restore_best", False))
        and cfg.early_stopping
        and (not getattr(args, "load_best_model_at_end", False))
    )


def _checkpoint_dir(callback: Any, args: Any, step: int) -> str:
    return str(checkpoint_dir(callback.trainer, args, None, step))


def mark_best_checkpoint(callback: Any, args: Any, state: Any, control: Any) -> None:
    """After a probe point: when it is the new best, have the Trainer save a checkpoint."""
    try:
        step = int(state.global_step)
        if not _enabled(callback, args) or keep_step_of(callback.stopper) != step:
            return
        if callback.progress.last_step != step:
            return
        control.should_save = True
        if getattr(args, "metric_for_best_model", None) is None:
            state.best_model_checkpoint = _checkpoint_dir(callback, args, step)
        if not _own_save(args, state, step):
            callback.progress.extra_checkpoints.append(step)
    except Exception as err:  # noqa: BLE001 - never break training
        warnings.warn(f"restore_best: step {state.global_step}: {err}", stacklevel=2)


def _own_save(args: Any, state: Any, step: int) -> bool:
    """Whether the user's own ``save_strategy`` saves at ``step`` anyway ("steps": every
    ``save_steps`` and the last step; "no": never; any other strategy: assumed yes)."""
    strategy = getattr(args, "save_strategy", "no")
    strategy = str(getattr(strategy, "value", strategy))
    if strategy == "no":
        return False
    if strategy != "steps":
        return True
    every = getattr(state, "save_steps", None) or getattr(args, "save_steps", None)
    last = getattr(state, "max_steps", None)
    if isinstance(last, int) and last > 0 and step >= last:
        return True
    return isinstance(every, (int, float)) and every >= 1 and step % int(every) == 0


def prune_superseded(callback: Any, args: Any, state: Any) -> None:
    """After a save (main process): delete the checkpoints restore-best had the Trainer
    save beyond the user's own ``save_strategy`` once they are no longer the candidate,
    so a full fine-tuning run does not keep one model copy per early removal maximum. The
    Trainer's own best checkpoint (``metric_for_best_model``) is never deleted."""
    extra = callback.progress.extra_checkpoints
    try:
        keep = keep_step_of(callback.stopper)
        user_best = None
        if getattr(args, "metric_for_best_model", None) is not None:
            user_best = state.best_model_checkpoint
        for step in [s for s in extra if s != keep]:
            folder = _checkpoint_dir(callback, args, step)
            if os.path.isdir(folder) and folder != user_best:
                shutil.rmtree(folder)
            extra.remove(step)
    except Exception as err:  # noqa: BLE001 - never raise into the training loop
        warnings.warn(f"restore_best: deleting a superseded checkpoint failed: {err}", stacklevel=2)


def restore_at_end(callback: Any, args: Any, state: Any) -> int | None:
    """Load the best checkpoint since the stage end; returns its step (None: nothing done)."""
    if callback.trainer is None or not _enabled(callback, args):
        return None
    step = restore_step_of(callback.stopper)
    if step is None:
        logger.info("restore_best: the denoising stage never ended; keeping the final weights")
        return None
    callback.restored_step = step
    if step == int(state.global_step):
        _note(callback, step, "the best point is the last step: the weights already are its")
        return step
    folder = _checkpoint_dir(callback, args, step)
    if not os.path.isdir(folder):
        callback.restored_step = None
        warnings.warn(
            f"restore_best: the checkpoint of step {step} ({folder}) is missing; keeping the "
            "weights of the last step",
            stacklevel=2,
        )
        return None
    trainer = callback.trainer
    saved = state.best_model_checkpoint
    try:
        state.best_model_checkpoint = folder
        trainer._load_best_model()
    except Exception as err:  # noqa: BLE001 - never raise into the training loop
        callback.restored_step = None
        warnings.warn(
            f"restore_best: loading {folder} failed ({type(err).__name__}: {err}); keeping the "
            "weights of the last step",
            stacklevel=2,
        )
        return None
    finally:
        state.best_model_checkpoint = saved
    _note(callback, step, f"restored the weights of {folder}")
    return step


def finish_run(callback: Any, args: Any, state: Any, control: Any) -> None:
    """The end of training: restore-best, the restored step in the logs, the whole run's
    ``log_history.json`` and a shadow stop's ``stop.json`` beside the snapshots."""
    from sft_interaction_callback.snapshots import atomic_write_json, try_write
    from sft_interaction_callback.tracking.shadow import ShadowStopper, write_shadow_stop

    step = restore_at_end(callback, args, state)
    if step is not None:
        callback.metric_log.emit({RESTORE_STEP_KEY: float(step)}, control)
    snaps = callback.snapshots
    if snaps is None or not state.is_world_process_zero:
        return
    history = list(state.log_history)
    try_write("log", lambda: atomic_write_json(snaps.root / "log_history.json", history))
    try_write("rules", lambda: write_rule_comparison(snaps, callback.stopper, state.max_steps))
    shadow = callback.stopper
    if isinstance(shadow, ShadowStopper) and shadow.stop_step is not None:
        try_write("stop", lambda: write_shadow_stop(snaps.root, shadow))


def write_rule_comparison(snaps: Any, stopper: Any, max_steps: int | None) -> None:
    """``rules.json``: where the run's rule and its neighbours would have stopped, and the
    checkpoint each keeps, replayed from ``metrics.jsonl`` (see :mod:`.rule_comparison`)."""
    from sft_interaction_callback.snapshots import atomic_write_json
    from sft_interaction_callback.tracking.rule_comparison import compare_rules

    rows = compare_rules(snaps.load_metrics(), stopper, max_steps or None)
    atomic_write_json(snaps.root / "rules.json", {"max_steps": max_steps, "rules": rows})


def _note(callback: Any, step: int, what: str) -> None:
    """Log the restore and record it in ``<snapshots>/restore.json`` (main process)."""
    from sft_interaction_callback.snapshots import atomic_write_json, try_write

    stopper = callback.stopper
    stage = stage_end_of(stopper)
    best = _stopper_attr(stopper, "best", float)
    target = _stopper_attr(stopper, "restore", str)
    logger.warning(
        "interaction callback: restore_best: step %d (restore target %s; stage end confirmed "
        "at step %s; lowest noise since then %s): %s",
        step,
        target or "n/a",
        stage,
        "n/a" if best is None else f"{best:.4g}",
        what,
    )
    snaps = callback.snapshots
    trainer = callback.trainer
    if snaps is None or not getattr(getattr(trainer, "state", None), "is_world_process_zero", True):
        return
    record = {
        "restore_step": step,
        "restore_target": target,
        "stage_ended_at": stage,
        "best_noise": best,
        "note": what,
    }
    try_write("restore", lambda: atomic_write_json(snaps.root / "restore.json", record))


def eval_value(callback: Any, args: Any) -> float | None:
    """``eval_interaction_noise``: the latest noise, but only once the stage has ended.

    Before the stage end it is the worst value for the direction the Trainer compares in,
    so no checkpoint from the denoising stage can be "best"; with ``restore="stage_end"``
    also after the stage-end point, so the stage end stays "best". A stopper with no
    stage gets the latest noise. ``None`` before any probe.
    """
    value = callback.progress.last_noise
    if value is None:
        return None
    stopper = callback.stopper
    has_stage = any(
        hasattr(obj, "stage_ended_at") for obj in (stopper, getattr(stopper, "inner", None))
    )
    if not has_stage:
        return value
    stage = stage_end_of(stopper)
    noise_step = callback.progress.last_noise_step
    if stage is not None and noise_step is not None and noise_step >= stage:
        if _stopper_attr(stopper, "restore", str) != "stage_end" or noise_step == stage:
            return value
    greater = getattr(args, "greater_is_better", None)
    return -math.inf if greater else math.inf


def observe(stopper: Any, step: int, metrics: dict[str, float]) -> None:
    """With ``early_stopping=False``: feed the default rule without ever stopping.

    The stage end and the best point are then still known, so the evaluation metric keeps
    its meaning; a custom stopper is not asked (``early_stopping=False`` only watches).
    """
    from sft_interaction_callback.tracking.stopping import NoiseRiseStopper

    if type(stopper) is NoiseRiseStopper:
        try:
            stopper.update(step, dict(metrics))
        except Exception:  # noqa: BLE001 - watching must never break training
            return None
    return None


def restore_score(callback: Any, args: Any) -> float | None:
    """``eval_interaction_restore_score``: its best over the run (the lowest, or the highest
    with ``greater_is_better=True``) is the checkpoint restore-best loads. With
    ``restore="removal_peak"`` minus the latest removed share (the Trainer keeps the first
    of equal values, as the stopper keeps the earliest peak); otherwise :func:`eval_value`.
    ``None`` before any probe. One difference remains: when the stage end is never
    confirmed, restore-best keeps the last weights, while the Trainer's best is still the
    removal peak."""
    greater = bool(getattr(args, "greater_is_better", None))
    if _stopper_attr(callback.stopper, "restore", str) == "removal_peak":
        removed = callback.progress.last_removed
        if removed is None:
            return None
        return removed if greater else -removed
    value = eval_value(callback, args)
    if value is None or math.isinf(value) or not greater:
        return value
    return -value


def eval_metrics(callback: Any, args: Any) -> list[tuple[str, float | None]]:
    """What the callback adds to every evaluation: the noise and the restore score."""
    return [
        (EVAL_METRIC, eval_value(callback, args)),
        (EVAL_RESTORE_SCORE, restore_score(callback, args)),
    ]
