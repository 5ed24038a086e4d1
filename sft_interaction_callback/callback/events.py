"""``InteractionCallback``: the Trainer events, and what each of them asks for.

``on_train_begin`` builds the probes and extracts the base interactions (step 0, PEFT
adapters disabled) and, once, those of an optional reference model; a resumed run is
restored instead (:mod:`.resume_run`). Each scheduled ``on_step_end`` measures the model
(the engine), feeds the tracker, logs (:mod:`.metric_log`), writes snapshots and asks the
stopper. ``on_log`` / ``on_evaluate`` add ``eval_interaction_noise`` to evaluations;
``on_save`` stores the callback's state (:mod:`.state`, :mod:`.resume`) next to each
checkpoint.

Many processes (``engine.distributed``): every rank probes its share of the masks, all
skip a point together, rank 0's stop decision is broadcast, only the main process
writes files. Once set up, nothing here raises into training (a failing point is skipped).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from contextlib import AbstractContextManager
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

import sft_interaction_callback.callback.restore_best as best
from sft_interaction_callback.callback import progress, resume, trainer_inputs, trainer_link
from sft_interaction_callback.callback.metric_log import MetricLog, add_eval_metrics, eval_prefixes
from sft_interaction_callback.callback.recording import (
    ProbePoint,
    StopDecision,
    record_point,
    record_skip,
)
from sft_interaction_callback.callback.reference import add_reference
from sft_interaction_callback.callback.resume_run import ResumeContext, resume_tracking
from sft_interaction_callback.callback.state import (
    CallbackState,
    RunProgress,
    start_run,
    state_attribute,
)
from sft_interaction_callback.callback.trainer_inputs import find_tokenizer, unwrap_for_probing
from sft_interaction_callback.config import InteractionConfig
from sft_interaction_callback.engine.distributed import Collective
from sft_interaction_callback.engine.sharded_weights import (
    probe_parameters,
    resolve_mode,
    sharded_parameters,
)
from sft_interaction_callback.keys import SECONDS_MAX_KEY, STOP_REASON_KEY, STOP_STEP_KEY
from sft_interaction_callback.tracking.stopping import ask_stopper

__all__ = ["InteractionCallback"]

logger = logging.getLogger("sft_interaction_callback")


class InteractionCallback(TrainerCallback):
    """Track AND-OR interactions during SFT; log, snapshot, and stop when noise rises.

    ``InteractionCallback(config=None, trainer=None, **overrides)``: ``overrides`` are
    :class:`InteractionConfig` fields. With ``trainer`` (or :meth:`attach`), the callback
    registers itself with that trainer; ``Trainer(callbacks=[InteractionCallback()])``
    works too (the trainer is found in ``on_init_end``, see :mod:`.trainer_link`).

    The callback puts itself first in the trainer's callback list, so that the
    ``eval_interaction_noise`` and ``eval_interaction_restore_score`` it adds to the
    evaluation metrics (in ``on_log``, before ``on_evaluate``) are seen by every
    integration, by ``EarlyStoppingCallback`` and by the best-model logic
    (``metric_for_best_model="interaction_restore_score"`` picks the checkpoint
    restore-best would). The values are those of the latest successful probe point, so
    align the probe schedule with ``eval_steps`` for a fresh value at every evaluation.

    Checkpoints carry the callback's state (``interaction_callback_state.safetensors``),
    and ``trainer.train(resume_from_checkpoint=...)`` restores it into this object; see
    :mod:`sft_interaction_callback.callback.resume` for why this is not an ``ExportableState``.
    """

    probes = state_attribute("probes")
    schedule = state_attribute("schedule")
    tracker = state_attribute("tracker")
    stopper = state_attribute("stopper")
    extractor = state_attribute("extractor")
    snapshots = state_attribute("snapshots")

    def __init__(
        self, config: InteractionConfig | None = None, trainer: Any = None, **overrides: Any
    ) -> None:
        if config is not None and not isinstance(config, InteractionConfig):
            raise TypeError(
                f"config must be an InteractionConfig (or None), got {type(config).__name__}; "
                "pass settings as keyword arguments instead"
            )
        self.config = InteractionConfig.from_kwargs(config, **overrides)
        self.trainer: Any = None
        self.run_state = CallbackState()
        self.metric_log = MetricLog(self.config.log_tables, self.config.top_k)
        self.comm = Collective()
        self.mode = "local"
        self._sharding: str | None = None
        self._restored_by_user = False  # load_state_dict() before train(): keep tracking
        if trainer is not None:
            self.attach(trainer)

    @property
    def progress(self) -> RunProgress:
        return self.run_state.progress

    # ------------------------------------------------------------------ attach
    def attach(self, trainer: Any) -> InteractionCallback:
        """Use ``trainer`` (for ``trainer.log`` and its data) and register with it, first."""
        trainer_inputs.check_trainer(self.config, trainer)  # refuse unusable data before training
        self.trainer = self.metric_log.trainer = trainer
        handler = getattr(trainer, "callback_handler", None)
        if handler is not None:
            trainer_link.put_first(handler.callbacks, self)
        trainer_link.record_resume_argument(trainer)
        return self

    # ------------------------------------------------------------------ events
    def on_init_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.trainer is None:
            trainer = trainer_link.find_trainer_of(self)
            if trainer is not None:
                self.attach(trainer)

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        processing_class: Any = None,
        **kwargs: Any,
    ) -> None:
        if self.trainer is None:
            self.on_init_end(args, state, control)
        trainer = self.trainer
        if trainer is None:
            raise RuntimeError(
                "InteractionCallback could not find its Trainer; create it with "
                "InteractionCallback(trainer=trainer) or call callback.attach(trainer)"
            )
        trainer_link.put_first(trainer.callback_handler.callbacks, self)
        tokenizer = find_tokenizer(self.config.tokenizer, trainer, processing_class)
        model = unwrap_for_probing(trainer, model)
        self.comm = Collective()
        self._sharding = sharded_parameters(trainer, model) if self.comm.active else None
        self.mode = resolve_mode(self.config.distributed_probing, self.comm, trainer, model)
        step = int(state.global_step)
        if self._restored_by_user:
            self._restored_by_user = False
            self.run_state.wire(self.comm, self.mode == "lockstep", tokenizer)
            return
        ctx = ResumeContext(
            self.config, self.comm, self.mode == "lockstep", self.trainer, self.probing_weights
        )
        restored = resume_tracking(ctx, args, state, model, tokenizer) if step > 0 else None
        if restored is not None:
            self.run_state = restored
            self.config.reference_model = None  # restored from its snapshot: drop the handle
            return
        self.run_state = start_run(
            self.config,
            **trainer_inputs.probe_source(self.config, trainer, args, state),
            model=model,
            tokenizer=tokenizer,
            snapshot_root=os.path.join(args.output_dir, self.config.output_subdir),
            max_steps=state.max_steps or None,
            comm=self.comm,
            lockstep=self.mode == "lockstep",
            main=state.is_world_process_zero,
        )
        self._base_point(model, step, state)

    def probing_weights(self, model: Any) -> AbstractContextManager[Any]:
        """Under FSDP / ZeRO-3: the weights the engine reads outside forward passes."""
        sharding = self._sharding if self.mode == "lockstep" else None
        return probe_parameters(self.trainer, model, sharding)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Main process: delete checkpoints kept only for restore-best that are superseded,
        then write the callback's state into the checkpoint folder just saved."""
        if self.tracker is None or not state.is_world_process_zero:
            return
        best.prune_superseded(self, args, state)
        resume.save_into_checkpoint(self.trainer, args, state, self.state_dict)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.metric_log.flush(control)

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        self.metric_log.flush(control)
        progress = self.progress
        if not self.run_state.active or progress.stop is not None:
            return
        step = int(state.global_step)
        last = progress.last_step
        if not self.schedule.should_probe(step) or (last is not None and step <= last):
            return
        self._probe_point(unwrap_for_probing(self.trainer, model), step, args, state, control)
        best.mark_best_checkpoint(self, args, state, control)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict | None = None,
        **kwargs: Any,
    ) -> None:
        for prefix in eval_prefixes(logs or {}):
            add_eval_metrics(args, logs, prefix, best.eval_metrics(self, args), state.log_history)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict | None = None,
        **kwargs: Any,
    ) -> None:
        if metrics is not None:
            for prefix in eval_prefixes(metrics) or ["eval"]:
                add_eval_metrics(args, metrics, prefix, best.eval_metrics(self, args), None)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.metric_log.flush(control)
        best.finish_run(self, args, state, control)

    # ------------------------------------------------------------------ probe points
    def _base_point(self, model: Any, step: int, state: Any) -> None:
        """Step 0: base interactions (adapters disabled), then the reference, once."""
        start, main = time.perf_counter(), state.is_world_process_zero
        try:
            weights = self.probing_weights(model)
            with progress.probe_progress(self, step, state):
                inter = self.extractor.measure(model, self.probes, weights=weights, base=True)
        except Exception as err:  # noqa: BLE001 - never break training
            record_skip(self.run_state, self.metric_log, step, err, main=main)
            self.progress.disabled = f"the step-{step} (base) probe failed: {err}"
            warnings.warn(
                f"interaction tracking is off for this run: {self.progress.disabled}",
                stacklevel=3,
            )
            return
        seconds = time.perf_counter() - start
        if self.config.reference_model is not None:
            add_reference(self.config, self.run_state, model, self.comm, main=main)
        metrics = {**self.tracker.set_base(inter), **best.measure_floor(self, model)}
        self.progress.base_step = step
        point, rs, log = ProbePoint(step, inter, metrics, seconds), self.run_state, self.metric_log
        record_point(rs, self.config, log, point, main=main, control=None, stop=None)

    def _probe_point(
        self,
        model: Any,
        step: int,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
    ) -> None:
        start, main = time.perf_counter(), state.is_world_process_zero
        try:
            weights = self.probing_weights(model)
            with progress.probe_progress(self, step, state):
                inter = self.extractor.measure(model, self.probes, weights=weights)
            metrics = self.tracker.update(step, inter)
        except Exception as err:  # noqa: BLE001 - a probe point never breaks training
            record_skip(self.run_state, self.metric_log, step, err, main=main, control=control)
            return
        seconds = time.perf_counter() - start
        if self.comm.active:  # the slowest rank sets the pace of the probe point
            metrics = {**metrics, SECONDS_MAX_KEY: max(self.comm.all_gather_object(seconds))}
        stop = self._decide(step, metrics)
        if stop is not None:
            control.should_training_stop = True
            control.should_save = True  # a checkpoint at the stop step, whatever save_strategy
            logger.warning("interaction callback: stopping training at step %d: %s", *stop)
        try:
            point = ProbePoint(step, inter, metrics, seconds)  # progress, files, then logs
            rs, log = self.run_state, self.metric_log
            record_point(rs, self.config, log, point, main=main, control=control, stop=stop)
        except Exception as err:  # noqa: BLE001 - reporting must not end training either
            warnings.warn(
                f"interaction callback: reporting step {step} failed ({type(err).__name__}: "
                f"{err}); training continues",
                stacklevel=2,
            )
        if stop is not None:
            self.metric_log.wandb.set_summary(
                args, {STOP_STEP_KEY: stop[0], STOP_REASON_KEY: stop[1]}
            )

    def _decide(self, step: int, metrics: dict[str, float]) -> StopDecision | None:
        """The stop decision: rank 0's, broadcast, so every rank stops at this same step.

        Every rank feeds its stopper (the metrics are identical on every rank, so the
        default stopper's state is too); a custom stopper that only rank 0 believes in
        still stops all ranks together.
        """
        if not self.config.early_stopping:
            return best.observe(self.stopper, step, metrics)
        decision = ask_stopper(self.stopper, step, metrics)
        return self.comm.broadcast_object(decision) if self.comm.active else decision

    # ------------------------------------------------------------------ state
    @property
    def stop_step(self) -> int | None:
        return self.progress.stop_step

    @property
    def last_noise(self) -> float | None:
        return self.progress.last_noise

    def state_dict(self) -> dict[str, Any]:
        """All callback state (see :meth:`CallbackState.state_dict`), for a checkpoint."""
        return self.run_state.state_dict()

    def load_state_dict(self, state: dict[str, Any], tokenizer: Any = None) -> None:
        """Restore :meth:`state_dict`; the next ``on_train_begin`` then keeps tracking."""
        self.run_state = CallbackState.from_state_dict(state, self.config, tokenizer)
        self.run_state.wire(self.comm, self.mode == "lockstep")
        self._restored_by_user = True

    def __repr__(self) -> str:
        return (
            f"InteractionCallback(n_players={self.config.n_players}, "
            f"num_probes={self.config.num_probes}, schedule={self.config.schedule!r}, "
            f"last_step={self.progress.last_step}, stop_step={self.stop_step})"
        )
