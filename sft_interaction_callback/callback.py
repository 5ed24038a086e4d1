"""``InteractionCallback``: the wiring between a Hugging Face ``Trainer`` and the tracker.

At ``on_train_begin`` (step 0, before the first optimizer step) the callback builds the
probes, extracts the base interactions (PEFT adapters disabled) and, once, those of an
optional reference model. At every scheduled ``on_step_end`` it probes the model, feeds
the tracker, logs through ``trainer.log``, writes snapshots and asks the stopper. In
``on_log`` / ``on_evaluate`` it adds ``eval_interaction_noise`` to the evaluation metrics.

Many processes (:mod:`.distributed`): every rank probes its share of the masks, the
values are gathered so that every rank computes the same metrics, a failure on any rank
makes every rank skip the point, and rank 0's stop decision is broadcast. Logs and
snapshots are written by the main process only.

Resume (:mod:`.resume`): ``on_save`` writes the callback's state next to each checkpoint
and ``on_train_begin`` of a resumed run restores it into this same object.

The heavy lifting lives elsewhere: :mod:`.extract` (probes, values, interactions),
:mod:`.runtime` (do-no-harm guards), :mod:`.snapshots` (atomic files) and
:mod:`.reporting.wandb_log` (W&B tables).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from typing import Any

from transformers import TrainerCallback

from sft_interaction_callback import resume
from sft_interaction_callback.config import InteractionConfig
from sft_interaction_callback.distributed import (
    Collective,
    PeerFailure,
    probe_parameters,
    resolve_mode,
    sharded_parameters,
)
from sft_interaction_callback.extract import (
    ValueExtractor,
    find_tokenizer,
    label_names_of,
    load_reference,
    load_reference_tokenizer,
    model_device,
    model_kind,
    prepare_probes,
    unwrap_for_probing,
)
from sft_interaction_callback.keys import (
    EVAL_METRIC,
    SECONDS_KEY,
    SECONDS_MAX_KEY,
    SKIPPED_KEY,
    STOP_REASON_KEY,
    STOP_STEP_KEY,
    eval_metric_key,
    metric_key,
)
from sft_interaction_callback.probing import Probe
from sft_interaction_callback.reporting.wandb_log import WandbExtras
from sft_interaction_callback.resume import SnapshotError
from sft_interaction_callback.runtime import (
    adapters_disabled,
    free_memory,
    is_out_of_memory,
    preserved_training_state,
)
from sft_interaction_callback.snapshots import (
    SnapshotDir,
    atomic_write_bytes,
    remove_stale_temp_files,
)
from sft_interaction_callback.tracking import (
    NOISE_KEY,
    InteractionTracker,
    NoiseRiseStopper,
    ProbeSchedule,
)

__all__ = ["InteractionCallback", "EVAL_METRIC", "SKIPPED_KEY", "STOP_STEP_KEY", "SnapshotError"]

logger = logging.getLogger("sft_interaction_callback")

_STATE_FORMAT = "sft_interaction_callback.callback/1"


class InteractionCallback(TrainerCallback):
    """Track AND-OR interactions during SFT; log, snapshot, and stop when noise rises.

    ``InteractionCallback(config=None, trainer=None, **overrides)``: ``overrides`` are
    :class:`InteractionConfig` fields. With ``trainer`` (or :meth:`attach`), the callback
    registers itself with that trainer; ``Trainer(callbacks=[InteractionCallback()])``
    works too (the trainer is found when it calls the callback).

    The callback puts itself first in the trainer's callback list, so that the
    ``eval_interaction_noise`` it adds to the evaluation metrics (in ``on_log``, before
    ``on_evaluate``) is seen by every integration, by ``EarlyStoppingCallback`` and by the
    best-model logic (``metric_for_best_model="interaction_noise"``). The value is the
    noise of the latest successful probe point, so align the probe schedule with
    ``eval_steps`` for a fresh value at every evaluation.

    Checkpoints carry the callback's state (``interaction_callback_state.safetensors``),
    and ``trainer.train(resume_from_checkpoint=...)`` restores it into this object; see
    :mod:`sft_interaction_callback.resume` for why this is not an ``ExportableState``.
    """

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
        self.probes: list[Probe] | None = None
        self.schedule: ProbeSchedule | None = None
        self.tracker: InteractionTracker | None = None
        self.stopper: Any = None
        self.extractor: ValueExtractor | None = None
        self.snapshots: SnapshotDir | None = None
        self.wandb = WandbExtras(self.config.log_tables, self.config.top_k)
        self._pending: list[tuple[dict[str, float], dict | None]] = []
        self._meta = self._fresh_meta()
        self.comm = Collective()
        self.mode = "local"
        self._sharding: str | None = None
        self._loaded_state = False
        self._log_failed = False
        if trainer is not None:
            self.attach(trainer)

    @staticmethod
    def _fresh_meta() -> dict[str, Any]:
        return {
            "base_step": None,
            "last_step": None,
            "probe_steps": [],
            "skipped": 0,
            "skipped_steps": [],
            "last_noise": None,
            "last_noise_step": None,
            "stop": None,
            "disabled": None,
            "files": {},
        }

    # ------------------------------------------------------------------ attach
    def attach(self, trainer: Any) -> InteractionCallback:
        """Use ``trainer`` (for ``trainer.log`` and its data) and register with it, first."""
        self.trainer = trainer
        handler = getattr(trainer, "callback_handler", None)
        if handler is not None:
            _put_first(handler.callbacks, self)
        return self

    def _find_trainer(self) -> Any:
        """The Trainer whose callback list holds this callback, from the calling frames."""
        if self.trainer is not None:
            return self.trainer
        try:
            from transformers import Trainer
        except ImportError:  # pragma: no cover
            return None
        frame = sys._getframe(1)
        for _ in range(16):
            if frame is None:
                break
            obj = frame.f_locals.get("self")
            if isinstance(obj, Trainer) and any(
                cb is self for cb in getattr(obj.callback_handler, "callbacks", [])
            ):
                self.attach(obj)
                return obj
            frame = frame.f_back
        return None

    # ------------------------------------------------------------------ events
    def on_init_end(self, args, state, control, **kwargs):
        self._find_trainer()

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        trainer = self._find_trainer()
        if trainer is None:
            raise RuntimeError(
                "InteractionCallback could not find its Trainer; create it with "
                "InteractionCallback(trainer=trainer) or call callback.attach(trainer)"
            )
        _put_first(trainer.callback_handler.callbacks, self)
        cfg = self.config
        tokenizer = find_tokenizer(cfg.tokenizer, trainer, processing_class)
        model = unwrap_for_probing(trainer, model)
        self.comm = Collective()
        self._sharding = sharded_parameters(trainer, model) if self.comm.active else None
        self.mode = resolve_mode(cfg.distributed_probing, self.comm, trainer, model)
        step = int(state.global_step)
        if self._loaded_state:
            # State given to load_state_dict() by the user: keep tracking from there.
            self._loaded_state = False
            self._wire_extractor(tokenizer)
            return
        if step > 0 and self._resume(args, state, model, tokenizer):
            return
        self.schedule = ProbeSchedule(cfg.schedule, max_steps=state.max_steps or None)
        kind = model_kind(model)
        self.probes = prepare_probes(
            cfg.probes,
            train_dataset=getattr(trainer, "train_dataset", None),
            tokenizer=tokenizer,
            n_players=cfg.n_players,
            num_probes=cfg.num_probes,
            seed=cfg.seed,
            kind=kind,
            label_names=label_names_of(model) if kind == "classifier" else None,
        )
        self.extractor = self._new_extractor(tokenizer, kind, cfg.baseline)
        self.tracker = InteractionTracker(
            cfg.salient_rel, cfg.salient_abs, salient_scope=cfg.salient_scope
        )
        self.stopper = (
            cfg.stopper
            if cfg.stopper is not None
            else NoiseRiseStopper(patience=cfg.patience, min_delta=cfg.min_delta)
        )
        self.snapshots = SnapshotDir(os.path.join(args.output_dir, cfg.output_subdir))
        self._meta = self._fresh_meta()
        if state.is_world_process_zero:
            remove_stale_temp_files(self.snapshots.root)
            self._safe_write(
                "probes",
                lambda: self.snapshots.write_probes(
                    self.probes, {"n_players": self.probes[0].n_players, "model_kind": kind}
                ),
            )
        self._base_point(model, step, state)

    def _new_extractor(self, tokenizer, kind: str, baseline) -> ValueExtractor:
        cfg = self.config
        return ValueExtractor(
            tokenizer,
            kind=kind,
            baseline=baseline,
            batch_size=cfg.probe_batch_size,
            noise_bound=cfg.noise_bound,
            solver=cfg.solver,
            solver_options=cfg.solver_options,
            comm=self.comm,
            lockstep=self.mode == "lockstep",
        )

    def _wire_extractor(self, tokenizer) -> None:
        if self.extractor is None:
            return
        if self.extractor.tokenizer is None:
            self.extractor.tokenizer = tokenizer
        self.extractor.comm = self.comm
        self.extractor.lockstep = self.mode == "lockstep"

    def _probing(self, model):
        """Under FSDP / ZeRO-3: the weights the engine reads outside forward passes."""
        return probe_parameters(
            self.trainer, model, self._sharding if self.mode == "lockstep" else None
        )

    def on_save(self, args, state, control, **kwargs):
        """Write the callback's state into the checkpoint folder just saved (main process)."""
        if self.tracker is None or not state.is_world_process_zero:
            return
        folder = resume.checkpoint_dir(self.trainer, args, state)
        if not folder.is_dir():
            warnings.warn(
                f"interaction callback: checkpoint folder {folder} not found; its state is not "
                "saved with this checkpoint (a resume from it re-bases the interactions)",
                stacklevel=2,
            )
            return
        self._safe_write(
            "callback state",
            lambda: resume.write_state(folder, self.state_dict(), state.global_step),
        )

    def on_step_begin(self, args, state, control, **kwargs):
        self._flush(control)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._flush(control)
        if self._inactive() or self._meta["stop"] is not None:
            return
        step = int(state.global_step)
        last = self._meta["last_step"]
        if not self.schedule.should_probe(step) or (last is not None and step <= last):
            return
        model = unwrap_for_probing(self.trainer, model)
        self._probe_point(model, step, args, state, control)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            for prefix in _eval_prefixes(logs):
                self._add_eval_metric(args, logs, prefix, state.log_history)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics is not None:
            for prefix in _eval_prefixes(metrics) or ["eval"]:
                self._add_eval_metric(args, metrics, prefix, None)

    def on_train_end(self, args, state, control, **kwargs):
        self._flush(control)

    # ------------------------------------------------------------------ probe points
    def _inactive(self) -> bool:
        return self.tracker is None or not self.tracker.has_base or bool(self._meta["disabled"])

    def _base_point(self, model, step: int, state) -> None:
        """Step 0: base interactions (adapters disabled), then the reference, once."""
        start = time.perf_counter()
        try:
            v, inter = self._extract_base(model)
        except Exception as err:  # noqa: BLE001 - never break training
            self._skip(step, err, state)
            self._meta["disabled"] = f"the step-{step} (base) probe failed: {err}"
            warnings.warn(
                f"interaction tracking is off for this run: {self._meta['disabled']}",
                stacklevel=3,
            )
            return
        seconds = time.perf_counter() - start
        if self.config.reference_model is not None:
            self._reference_point(model, state)
        metrics = self.tracker.set_base(inter)
        self._meta["base_step"] = step
        self._record(step, v, inter, metrics, seconds, state, control=None, stop=None)

    def _extract_base(self, model, extractor: ValueExtractor | None = None):
        """``(v, interactions)`` of the model with PEFT adapters disabled (collective)."""
        extractor = extractor or self.extractor
        with self._probing(model), preserved_training_state(model), adapters_disabled(model):
            v = extractor.values(model, self.probes)
            inter = extractor.interactions(v)
        return v, inter

    def _reference_point(self, model, state) -> None:
        try:
            name, v, inter = self._extract_reference(model)
            self.tracker.set_reference(inter)
            if state.is_world_process_zero:
                tensors = {"v": v.cpu(), "i_and": inter.i_and, "i_or": inter.i_or}
                info = {"model": name}
                self._safe_write("reference", lambda: self.snapshots.write_reference(tensors, info))
        except Exception as err:  # noqa: BLE001
            warnings.warn(
                f"the reference model could not be probed ({type(err).__name__}: {err}); "
                "tracking continues without generalizability (gamma)",
                stacklevel=3,
            )
        finally:
            self.config.reference_model = None  # drop this callback's handle on it
            free_memory()

    def _extract_reference(self, model):
        """Load and probe the reference model on every rank: ``(class name, v, interactions)``.

        A reference model is a plain module on each rank (never sharded by the trainer),
        so it is probed in local mode; a rank that cannot load it makes every rank give up.
        A model object given by the user goes back to the device it came from.
        """
        cfg = self.config
        ref = owned = original = tok = None
        error = None
        try:
            try:
                ref, owned = load_reference(
                    cfg.reference_model, self.extractor.kind, model_device(model)
                )
                original = model_device(ref)
                ref.to(model_device(model))
                tok = load_reference_tokenizer(
                    cfg.reference_model, cfg.reference_tokenizer, self.extractor.tokenizer
                )
            except Exception as err:  # noqa: BLE001 - agreed on below
                error = err
            self.comm.agree(error, "loading the reference model")
            spec = cfg.baseline if isinstance(cfg.baseline, str) else "pad"
            extractor = ValueExtractor(
                tok,
                kind=model_kind(ref),
                baseline=spec,
                batch_size=cfg.probe_batch_size,
                noise_bound=cfg.noise_bound,
                solver=cfg.solver,
                solver_options=cfg.solver_options,
                comm=self.comm,
            )
            with preserved_training_state(ref):
                v = extractor.values(ref, self.probes)
                inter = extractor.interactions(v)
            return type(ref).__name__, v, inter
        finally:
            if ref is not None and not owned and original is not None:
                ref.to(original)
            del ref

    def _probe_point(self, model, step: int, args, state, control) -> None:
        start = time.perf_counter()
        try:
            with self._probing(model), preserved_training_state(model):
                v = self.extractor.values(model, self.probes)
                inter = self.extractor.interactions(v)
            metrics = self.tracker.update(step, inter)
        except Exception as err:  # noqa: BLE001 - a probe point never breaks training
            self._skip(step, err, state, control)
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
            self._record(step, v, inter, metrics, seconds, state, control=control, stop=stop)
        except Exception as err:  # noqa: BLE001 - reporting must not end training either
            warnings.warn(
                f"interaction callback: reporting step {step} failed ({type(err).__name__}: "
                f"{err}); training continues",
                stacklevel=2,
            )
        if stop is not None:
            self.wandb.set_summary(args, {STOP_STEP_KEY: stop[0], STOP_REASON_KEY: stop[1]})

    def _decide(self, step: int, metrics: dict[str, float]) -> tuple[int, str] | None:
        """The one place where the stop decision is taken: rank 0's, broadcast to every rank.

        Every rank feeds its stopper (the metrics are identical on every rank, so the
        default stopper's state is too); rank 0's answer is the one every rank applies,
        at this same step, so a custom stopper that only rank 0 believes in still stops
        all ranks together.
        """
        if not self.config.early_stopping:
            return None
        decision = self._ask_stopper(step, metrics)
        if self.comm.active:
            decision = self.comm.broadcast_object(decision)
        return decision

    def _ask_stopper(self, step: int, metrics: dict[str, float]) -> tuple[int, str] | None:
        try:
            if not bool(self.stopper.update(step, dict(metrics))):
                return None
        except Exception as err:  # noqa: BLE001
            warnings.warn(
                f"the stopper raised at step {step} ({type(err).__name__}: {err}); not stopping",
                stacklevel=3,
            )
            return None
        reason = getattr(self.stopper, "reason", None) or (
            f"{type(self.stopper).__name__}.update() returned True at step {step}"
        )
        return step, str(reason)

    def _skip(self, step: int, err: BaseException, state, control=None) -> None:
        oom = is_out_of_memory(err)
        if oom:
            free_memory()
        self._meta["skipped"] += 1
        self._meta["skipped_steps"].append(step)
        what = f"{type(err).__name__}: {err}"
        if oom:  # on many ranks, say which one(s)
            what = f"out of memory: {err}" if isinstance(err, PeerFailure) else "out of memory"
        warnings.warn(
            f"interaction probe at step {step} skipped ({what}); training continues",
            stacklevel=3,
        )
        if state.is_world_process_zero and self.snapshots is not None:
            record = {"step": step, "skipped": True, "error": what}
            self._safe_write("metrics", lambda: self.snapshots.append_metrics(record))
        self._emit({SKIPPED_KEY: float(self._meta["skipped"])}, control)

    def _record(self, step, v, inter, metrics, seconds, state, *, control, stop) -> None:
        meta = self._meta
        meta["last_step"] = step
        meta["probe_steps"].append(step)
        noise = metrics.get(NOISE_KEY)
        if noise is not None and math.isfinite(noise):
            meta["last_noise"], meta["last_noise_step"] = float(noise), step
        status = self._stopper_status()
        logs = {**metrics, **status, SECONDS_KEY: seconds, SKIPPED_KEY: float(meta["skipped"])}
        record: dict[str, Any] = {"step": step, "skipped": False, **logs}
        if stop is not None:
            meta["stop"] = {"step": stop[0], "reason": stop[1]}
            logs[STOP_STEP_KEY] = float(stop[0])
            record.update({STOP_STEP_KEY: stop[0], STOP_REASON_KEY: stop[1]})
        if state.is_world_process_zero:
            self._write_point(step, v, inter, record, stop)
        tables = None
        if state.is_world_process_zero and self.config.log_tables:
            tables = {
                "step": step,
                "interactions": inter,
                "probes": self.probes,
                "sets": self.tracker.last_sets(),
                "histograms": self.tracker.last_histograms(),
            }
        self._emit(logs, control, tables)

    def _stopper_status(self) -> dict[str, float]:
        status = getattr(self.stopper, "status", None)
        if not self.config.early_stopping or not callable(status):
            return {}
        try:
            return {metric_key(k): float(x) for k, x in status().items()}
        except Exception:  # noqa: BLE001 - a custom stopper's status is optional
            return {}

    def _write_point(self, step, v, inter, record, stop) -> None:
        sets = self.tracker.last_sets() or {}
        tensors = {"v": v.detach().cpu(), "i_and": inter.i_and, "i_or": inter.i_or}
        if sets:
            tensors["salient"] = sets["preserved"] | sets["emerged"]
            tensors.update({k: sets[k] for k in ("removed", "preserved", "emerged", "noise")})
        meta = {"n_players": self.probes[0].n_players, "num_probes": len(self.probes)}
        path = self._safe_write("step", lambda: self.snapshots.write_step(step, tensors, meta))
        if path is not None:
            self._meta["files"][str(step)] = str(path)
        self._safe_write("metrics", lambda: self.snapshots.append_metrics(record))
        if stop is not None:
            info = {"stop_step": stop[0], "reason": stop[1], "checkpoint_saved": True}
            self._safe_write("stop", lambda: self.snapshots.write_stop(info))

    def _safe_write(self, what: str, write) -> Any:
        try:
            return write()
        except Exception as err:  # noqa: BLE001 - a full disk must not end training
            warnings.warn(f"could not write the {what} snapshot: {err}", stacklevel=3)
            return None

    # ------------------------------------------------------------------ logging
    def _emit(self, logs: dict[str, float], control, tables: dict | None = None) -> None:
        """Log through ``trainer.log`` (NaN keys left out), then the W&B tables.

        Before training (``control`` None: step 0 runs in ``on_train_begin``, possibly
        before the integrations have set themselves up) the point is queued and logged at
        the next step event.
        """
        clean = {k: float(x) for k, x in logs.items() if x is not None and math.isfinite(x)}
        if control is None or self.trainer is None:
            self._pending.append((clean, tables))
            return
        self._log_now(clean, tables, control)

    def _flush(self, control) -> None:
        while self._pending and self.trainer is not None:
            self._log_now(*self._pending.pop(0), control=control)

    def _log_now(self, logs: dict[str, float], tables: dict | None, control) -> None:
        """``Trainer.log``: into ``state.log_history`` and every callback's ``on_log``.

        The base ``transformers.Trainer.log`` is called, not a subclass override: TRL's
        ``SFTTrainer.log`` merges and then clears the metrics it accumulates between
        logging steps (token accuracy, entropy, ...), which would move them from the
        trainer's own log line onto ours. ``on_log`` also resets ``control.should_log``,
        which would swallow the trainer's loss log of this step: the flags are restored.
        """
        trainer = self.trainer
        flags = (control.should_log, control.should_evaluate, control.should_save)
        try:
            try:
                from transformers import Trainer
            except ImportError:  # pragma: no cover
                Trainer = None  # noqa: N806
            if Trainer is not None and isinstance(trainer, Trainer):
                Trainer.log(trainer, logs)
            else:
                trainer.log(logs)
        except Exception as err:  # noqa: BLE001 - a failing sink (W&B, ...) must not stop training
            if not self._log_failed:
                self._log_failed = True
                warnings.warn(
                    f"interaction callback: logging the interaction metrics failed "
                    f"({type(err).__name__}: {err}); training continues, the metrics stay in "
                    "state.log_history and metrics.jsonl (further logging errors are not reported)",
                    stacklevel=3,
                )
        finally:
            for ctl in {id(control): control, id(trainer.control): trainer.control}.values():
                ctl.should_log, ctl.should_evaluate, ctl.should_save = flags
        if tables is not None:
            self.wandb.log_point(trainer.args, tables.pop("step"), **tables)

    def _add_eval_metric(self, args, metrics: dict, prefix: str, history) -> None:
        key = eval_metric_key(prefix)
        if key in metrics:
            return
        value = self._meta["last_noise"]
        if value is None:
            wanted = getattr(args, "metric_for_best_model", None) or ""
            if EVAL_METRIC not in wanted:
                return
            value = math.nan  # keeps metric_for_best_model lookups from failing
        metrics[key] = value
        if history:  # the trainer copied the logs into log_history just before on_log
            last = history[-1]
            if all(last.get(k) is v or last.get(k) == v for k, v in metrics.items() if k != key):
                last[key] = value

    # ------------------------------------------------------------------ state
    @property
    def stop_step(self) -> int | None:
        stop = self._meta["stop"]
        return None if stop is None else int(stop["step"])

    # ------------------------------------------------------------------ resume
    def _resume(self, args, state, model, tokenizer) -> bool:
        """Restore the state saved with the checkpoint being resumed; False: start afresh.

        Rank 0 reads the checkpoint and the snapshots and broadcasts what it found, so
        every rank restores the same state (or raises the same error).
        """
        step = int(state.global_step)
        root = os.path.join(args.output_dir, self.config.output_subdir)
        outcome = self._read_checkpoint(args, state, root) if self.comm.is_main else None
        outcome = self.comm.broadcast_object(outcome)
        if outcome[0] == "error":
            raise outcome[1]
        if outcome[0] == "none":
            warnings.warn(outcome[1], stacklevel=3)
            return False
        plan: resume.ResumePlan = outcome[1]
        self._apply_resume(plan, model, tokenizer, root, state)
        logger.info(
            "interaction callback: resumed at step %d from %s (last probe point %s)",
            step,
            plan.checkpoint,
            self._meta["last_step"],
        )
        return True

    def _read_checkpoint(self, args, state, root: str) -> tuple[str, Any]:
        step = int(state.global_step)
        fresh = f"training starts at step {step} (resumed) without the callback's saved state"
        rebase = "; interactions are tracked relative to the resumed model, not the pretrained one"
        ckpt = resume.find_resume_checkpoint(args, state, self.trainer)
        ran_here = (
            any((r.get("step") or 0) <= step for r in SnapshotDir(root).load_metrics())
            if os.path.isfile(os.path.join(root, "metrics.jsonl"))
            else False
        )
        state_file = None if ckpt is None else ckpt / resume.STATE_FILE
        try:
            if state_file is None or not state_file.is_file():
                where = "no checkpoint folder found" if ckpt is None else f"{state_file} is missing"
                if ran_here and self.config.on_missing_snapshot == "error":
                    raise SnapshotError(
                        state_file or os.path.join(args.output_dir, f"checkpoint-{step}"),
                        f"is missing although {root} holds this run's earlier probe points",
                        "callback state file",
                    )
                return ("none", f"{fresh} ({where}){rebase}")
            return ("ok", resume.plan_resume(ckpt, root, self.config.on_missing_snapshot))
        except SnapshotError as err:
            if self.config.on_missing_snapshot == "rebuild":
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

    def _apply_resume(self, plan, model, tokenizer, root: str, state) -> None:
        cfg = self.config
        st = plan.state
        if plan.rebuild:
            self._rebuild(plan, model, tokenizer)
        self.load_state_dict(st, tokenizer=tokenizer)
        self._loaded_state = False
        if st.get("stopper") is None and self.config.early_stopping:
            warnings.warn(
                f"the stopper {type(self.stopper).__name__} has no state_dict() / "
                "load_state_dict(); it starts afresh at the resumed step",
                stacklevel=4,
            )
        self.extractor.comm = self.comm
        self.extractor.lockstep = self.mode == "lockstep"
        self.snapshots = SnapshotDir(root)
        if state.is_world_process_zero:
            for src in plan.foreign:  # resumed into a new output_dir: make it complete
                target = self.snapshots.root / os.path.basename(src)
                if not target.exists():
                    self._safe_write(
                        "copied", lambda s=src, t=target: atomic_write_bytes(t, _read_bytes(s))
                    )
            dropped = self._safe_write("metrics", lambda: self.snapshots.rewind(plan.step))
            if dropped and dropped["records"]:
                logger.info(
                    "interaction callback: dropped metrics of steps %s (after the resumed step %d)",
                    dropped["records"],
                    plan.step,
                )
            for key, inter_v in getattr(self, "_rebuilt", {}).items():
                self._write_rebuilt(key, *inter_v)
        self._rebuilt = {}
        cfg.reference_model = None  # restored from its snapshot: drop the handle

    def _rebuild(self, plan, model, tokenizer) -> None:
        """Re-extract the snapshots that ``plan.rebuild`` names (every rank), loudly."""
        st = plan.state
        self.probes = [Probe.from_dict(p) for p in st["probes"]]
        baseline = (st.get("tensors") or {}).get("baseline", self.config.baseline)
        extractor = self._new_extractor(tokenizer, st.get("kind") or "causal", baseline)
        tensors = st["tracker"]["tensors"]
        self._rebuilt = {}
        if "base" in plan.rebuild:
            v, inter = self._extract_base(model, extractor)
            table = inter.concatenated().float()
            tensors["base_interactions"] = table
            exact = resume.table_checksum(table) == plan.checksums.get("base")
            self._rebuilt["base"] = (v, inter)
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
                stacklevel=4,
            )
        if "reference" in plan.rebuild:
            if self.config.reference_model is not None:
                self.extractor = extractor
                try:
                    _, v, inter = self._extract_reference(model)
                finally:
                    free_memory()
                tensors["reference_interactions"] = inter.concatenated().float()
                self._rebuilt["reference"] = (v, inter)
                what = "re-extracted from InteractionConfig.reference_model"
            else:
                tensors.pop("reference_mask", None)
                what = (
                    "dropped: no reference_model in the config to rebuild it from, so "
                    "generalizability (gamma) is no longer reported"
                )
            warnings.warn(
                f"!!! the reference-model interactions were {what} ({'; '.join(plan.problems)})",
                stacklevel=4,
            )

    def _write_rebuilt(self, key: str, v, inter) -> None:
        tensors = {"v": v.detach().cpu(), "i_and": inter.i_and, "i_or": inter.i_or}
        info = {"rebuilt": True}
        if key == "base":
            step = int(self._meta["base_step"] or 0)
            meta = {"n_players": self.probes[0].n_players, "num_probes": len(self.probes), **info}
            self._safe_write("step", lambda: self.snapshots.write_step(step, tensors, meta))
        else:
            self._safe_write("reference", lambda: self.snapshots.write_reference(tensors, info))

    @property
    def last_noise(self) -> float | None:
        return self._meta["last_noise"]

    def state_dict(self) -> dict[str, Any]:
        """All callback state: JSON-able ``meta`` plus the tracker's and stopper's states.

        ``{"format", "meta", "probes", "schedule", "tracker": {"tensors", "meta"},
        "stopper": dict | None, "tensors": {"baseline"?}}``; made to be stored with a
        checkpoint and given back to :meth:`load_state_dict`.
        """
        stopper_state = None
        if self.stopper is not None and callable(getattr(self.stopper, "state_dict", None)):
            stopper_state = self.stopper.state_dict()
        tensors = {}
        if self.extractor is not None and self.extractor.baseline is not None:
            tensors["baseline"] = self.extractor.baseline.detach().cpu()
        return {
            "format": _STATE_FORMAT,
            "meta": _copy(self._meta),
            "probes": None if self.probes is None else [p.to_dict() for p in self.probes],
            "schedule": None
            if self.schedule is None
            else {"spec": self.schedule.spec, "max_steps": self.schedule.max_steps},
            "snapshot_dir": None if self.snapshots is None else str(self.snapshots.root),
            "kind": None if self.extractor is None else self.extractor.kind,
            "tracker": None if self.tracker is None else self.tracker.state_dict(),
            "stopper": stopper_state,
            "tensors": tensors,
        }

    def load_state_dict(self, state: dict[str, Any], tokenizer: Any = None) -> None:
        """Restore :meth:`state_dict`; the next ``on_train_begin`` then keeps tracking."""
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"unknown callback state format {state.get('format')!r}")
        cfg = self.config
        self._loaded_state = True
        self._meta = {**self._fresh_meta(), **_copy(state["meta"])}
        self.probes = [Probe.from_dict(p) for p in state["probes"] or []] or None
        sched = state.get("schedule")
        self.schedule = None if sched is None else ProbeSchedule(sched["spec"], sched["max_steps"])
        if state.get("snapshot_dir"):
            self.snapshots = SnapshotDir(state["snapshot_dir"])
            self._safe_write("metrics", self.snapshots.load_metrics)
        self.tracker = InteractionTracker(
            cfg.salient_rel, cfg.salient_abs, salient_scope=cfg.salient_scope
        )
        if state.get("tracker") is not None:
            self.tracker.load_state_dict(state["tracker"])
        self.stopper = cfg.stopper or NoiseRiseStopper(cfg.patience, cfg.min_delta)
        if state.get("stopper") is not None and hasattr(self.stopper, "load_state_dict"):
            self.stopper.load_state_dict(state["stopper"])
        baseline = state.get("tensors", {}).get("baseline", cfg.baseline)
        self.extractor = self._new_extractor(
            tokenizer if tokenizer is not None else cfg.tokenizer,
            state.get("kind") or "causal",
            baseline,
        )

    def __repr__(self) -> str:
        return (
            f"InteractionCallback(n_players={self.config.n_players}, "
            f"num_probes={self.config.num_probes}, schedule={self.config.schedule!r}, "
            f"last_step={self._meta['last_step']}, stop_step={self.stop_step})"
        )


def _put_first(callbacks: list, cb: Any) -> None:
    """Make ``cb`` the first entry of ``callbacks`` exactly once (safe mid-iteration)."""
    positions = [i for i, c in enumerate(callbacks) if c is cb]
    for i in reversed(positions[1:]):
        del callbacks[i]
    if not positions:
        callbacks.insert(0, cb)
    elif positions[0] != 0:
        del callbacks[positions[0]]
        callbacks.insert(0, cb)


def _eval_prefixes(logs: dict) -> list[str]:
    """Metric prefixes of evaluation logs (``eval``, ``eval_<name>``), from speed metrics."""
    out = []
    for key in logs:
        if key.endswith("_runtime"):
            prefix = key[: -len("_runtime")]
            if prefix != "train" and f"{prefix}_samples_per_second" in logs:
                out.append(prefix)
    return out


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _copy(obj: Any) -> Any:
    import copy

    return copy.deepcopy(obj)
