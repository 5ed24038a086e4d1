"""Resuming a run: the state the callback should hold where the resumed checkpoint left it.

:mod:`sft_interaction_callback.callback.resume` reads and writes the state file; this module
decides what to do with it at ``on_train_begin`` of a run that starts at
``global_step > 0``: restore (every rank the same), rebuild a missing snapshot when the
config allows it (loudly), or start afresh with a warning. Rank 0 reads the files and
broadcasts what it found, so every rank restores the same state or raises the same error.
It is given what it needs (:class:`ResumeContext`) and returns the restored
:class:`~.state.CallbackState`; it never sees the callback object.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sft_interaction_callback.andor import AndOrInteractions
from sft_interaction_callback.callback import resume
from sft_interaction_callback.callback.reference import probe_reference
from sft_interaction_callback.callback.resume import ResumePlan, SnapshotError
from sft_interaction_callback.callback.state import CallbackState
from sft_interaction_callback.config import InteractionConfig
from sft_interaction_callback.engine.distributed import Collective
from sft_interaction_callback.engine.extractor import ValueExtractor
from sft_interaction_callback.engine.runtime import free_memory
from sft_interaction_callback.probing import Probe
from sft_interaction_callback.snapshots import SnapshotDir, atomic_write_bytes, try_write

__all__ = ["ResumeContext", "resume_tracking"]

logger = logging.getLogger("sft_interaction_callback")

#: snapshots re-extracted by a rebuild: "base" / "reference" -> their interactions
Rebuilt = dict[str, AndOrInteractions]


@dataclass(frozen=True)
class ResumeContext:
    """What resuming reads of the callback: its settings, ranks and Trainer."""

    config: InteractionConfig
    comm: Collective
    lockstep: bool
    trainer: Any
    #: under FSDP / ZeRO-3, what makes the weights readable outside forward passes
    probing_weights: Callable[[Any], AbstractContextManager[Any]]


def resume_tracking(
    ctx: ResumeContext, args: Any, state: Any, model: Any, tokenizer: Any
) -> CallbackState | None:
    """The state restored from the checkpoint being resumed; None: start afresh."""
    root = os.path.join(args.output_dir, ctx.config.output_subdir)
    outcome = _read_checkpoint(ctx, args, state, root) if ctx.comm.is_main else None
    outcome = ctx.comm.broadcast_object(outcome)
    if outcome[0] == "error":
        raise outcome[1]
    if outcome[0] == "none":
        warnings.warn(outcome[1], stacklevel=4)
        return None
    plan: ResumePlan = outcome[1]
    restored = _apply(ctx, plan, model, tokenizer, root, state)
    logger.info(
        "interaction callback: resumed at step %d from %s (last probe point %s)",
        int(state.global_step),
        plan.checkpoint,
        restored.progress.last_step,
    )
    return restored


def _read_checkpoint(ctx: ResumeContext, args: Any, state: Any, root: str) -> tuple[str, Any]:
    """``("ok", plan)``, ``("none", warning)`` (start afresh) or ``("error", exception)``."""
    cfg = ctx.config
    step = int(state.global_step)
    fresh = f"training starts at step {step} (resumed) without the callback's saved state"
    rebase = "; interactions are tracked relative to the resumed model, not the pretrained one"
    ckpt = resume.find_resume_checkpoint(args, state, ctx.trainer)
    ran_here = (
        any((r.get("step") or 0) <= step for r in SnapshotDir(root).load_metrics())
        if os.path.isfile(os.path.join(root, "metrics.jsonl"))
        else False
    )
    state_file = None if ckpt is None else ckpt / resume.STATE_FILE
    try:
        if state_file is None or not state_file.is_file():
            where = "no checkpoint folder found" if ckpt is None else f"{state_file} is missing"
            if ran_here and cfg.on_missing_snapshot == "error":
                raise SnapshotError(
                    state_file or os.path.join(args.output_dir, f"checkpoint-{step}"),
                    f"is missing although {root} holds this run's earlier probe points",
                    "callback state file",
                )
            return ("none", f"{fresh} ({where}){rebase}")
        return ("ok", resume.plan_resume(ckpt, root, cfg.on_missing_snapshot))
    except SnapshotError as err:
        if cfg.on_missing_snapshot == "rebuild":
            return (
                "none",
                f"{fresh}: {err.problem_text()}; REBUILDING (on_missing_snapshot="
                f"'rebuild'){rebase}",
            )
        return ("error", err)
    except Exception as err:  # noqa: BLE001 - reported as an unreadable state file
        return (
            "error",
            SnapshotError(
                state_file,
                f"could not be read ({type(err).__name__}: {err})",
                "callback state file",
            ),
        )


def _apply(
    ctx: ResumeContext, plan: ResumePlan, model: Any, tokenizer: Any, root: str, state: Any
) -> CallbackState:
    cfg = ctx.config
    rebuilt = _rebuild(ctx, plan, model, tokenizer) if plan.rebuild else {}
    restored = CallbackState.from_state_dict(plan.state, cfg, tokenizer)
    if plan.state.get("stopper") is None and cfg.early_stopping:
        warnings.warn(
            f"the stopper {type(restored.stopper).__name__} has no state_dict() / "
            "load_state_dict(); it starts afresh at the resumed step",
            stacklevel=5,
        )
    restored.wire(ctx.comm, ctx.lockstep)
    restored.snapshots = snapshots = SnapshotDir(root)
    if state.is_world_process_zero:
        for src in plan.foreign:  # resumed into a new output_dir: make it complete
            target = snapshots.root / os.path.basename(src)
            if not target.exists():
                try_write("copied", lambda s=src, t=target: atomic_write_bytes(t, _read_bytes(s)))
        dropped = try_write("metrics", lambda: snapshots.rewind(plan.step))
        if dropped and dropped["records"]:
            logger.info(
                "interaction callback: dropped metrics of steps %s (after the resumed step %d)",
                dropped["records"],
                plan.step,
            )
        for key, inter in rebuilt.items():
            _write_rebuilt(restored, key, inter)
    return restored


def _rebuild(ctx: ResumeContext, plan: ResumePlan, model: Any, tokenizer: Any) -> Rebuilt:
    """Re-extract the snapshots that ``plan.rebuild`` names (every rank), loudly."""
    cfg = ctx.config
    st = plan.state
    probes = [Probe.from_dict(p) for p in st["probes"]]
    extractor = ValueExtractor.from_config(
        cfg,
        tokenizer,
        kind=st.get("kind") or "causal",
        baseline=(st.get("tensors") or {}).get("baseline", cfg.baseline),
        comm=ctx.comm,
        lockstep=ctx.lockstep,
    )
    tensors = st["tracker"]["tensors"]
    rebuilt: Rebuilt = {}
    if "base" in plan.rebuild:
        inter = extractor.measure(model, probes, weights=ctx.probing_weights(model), base=True)
        table = inter.concatenated().float()
        tensors["base_interactions"] = table
        exact = resume.table_checksum(table) == plan.checksums.get("base")
        rebuilt["base"] = inter
        warnings.warn(
            "!!! REBUILT the step-0 interactions from the current model with adapters "
            f"disabled ({'; '.join(plan.problems)}). "
            + (
                "They match the saved checksum exactly."
                if exact
                else "They differ from the saved ones: with full fine-tuning (no adapters) "
                "this 'base' is the fine-tuned model, and removed/preserved counts are "
                "measured against it from now on."
            ),
            stacklevel=5,
        )
    if "reference" in plan.rebuild:
        if cfg.reference_model is not None:
            try:
                _, inter = probe_reference(
                    cfg,
                    model,
                    probes,
                    kind=extractor.kind,
                    tokenizer=extractor.tokenizer,
                    comm=ctx.comm,
                )
            finally:
                free_memory()
            tensors["reference_interactions"] = inter.concatenated().float()
            rebuilt["reference"] = inter
            what = "re-extracted from InteractionConfig.reference_model"
        else:
            tensors.pop("reference_mask", None)
            what = (
                "dropped: no reference_model in the config to rebuild it from, so "
                "generalizability (gamma) is no longer reported"
            )
        warnings.warn(
            f"!!! the reference-model interactions were {what} ({'; '.join(plan.problems)})",
            stacklevel=5,
        )
    return rebuilt


def _write_rebuilt(rs: CallbackState, key: str, inter: AndOrInteractions) -> None:
    snapshots, probes = rs.snapshots, rs.probes
    info = {"rebuilt": True}
    if key == "base":
        step = int(rs.progress.base_step or 0)
        meta = {"n_players": probes[0].n_players, "num_probes": len(probes), **info}
        try_write("step", lambda: snapshots.write_step(step, inter, None, meta))
    else:
        try_write("reference", lambda: snapshots.write_reference(inter, info))


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()
