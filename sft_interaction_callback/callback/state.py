"""The callback's state between Trainer events, typed, and its checkpointable form.

:class:`RunProgress` is what happened so far (probe points, skips, the stop decision);
:class:`CallbackState` adds the objects that carry the tracking (probes, schedule,
tracker, stopper, value extractor, snapshot folder). ``CallbackState.state_dict()`` is
the JSON-and-tensors document that :mod:`sft_interaction_callback.callback.resume` writes next to
every checkpoint and reads back on ``resume_from_checkpoint``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sft_interaction_callback.callback.trainer_inputs import (
    label_names_of,
    model_kind,
    prepare_probes,
)
from sft_interaction_callback.config import InteractionConfig
from sft_interaction_callback.engine.distributed import Collective
from sft_interaction_callback.engine.extractor import ValueExtractor
from sft_interaction_callback.probing import Probe
from sft_interaction_callback.snapshots import SnapshotDir, remove_stale_temp_files, try_write
from sft_interaction_callback.tracking import InteractionTracker, NoiseRiseStopper, ProbeSchedule

__all__ = [
    "STATE_FORMAT",
    "CallbackState",
    "RunProgress",
    "make_stopper",
    "make_tracker",
    "start_run",
    "state_attribute",
]

#: a file-format name, not a module path: it stays as written by every earlier layout
STATE_FORMAT = "sft_interaction_callback.callback/1"


@dataclass
class RunProgress:
    """What the callback has done in this run; saved as the ``meta`` of its state."""

    base_step: int | None = None
    last_step: int | None = None
    probe_steps: list[int] = field(default_factory=list)
    skipped: int = 0
    skipped_steps: list[int] = field(default_factory=list)
    #: the noise of the latest successful probe point (the evaluation metric)
    last_noise: float | None = None
    last_noise_step: int | None = None
    #: the removed share of the latest successful probe point (the restore score)
    last_removed: float | None = None
    #: steps of checkpoints saved only for restore-best (deleted once superseded)
    extra_checkpoints: list[int] = field(default_factory=list)
    #: ``{"step": int, "reason": str}`` once the stopper fired
    stop: dict[str, Any] | None = None
    #: why tracking is off for this run (the step-0 probe failed), else None
    disabled: str | None = None
    #: step -> path of the snapshot written at that probe point
    files: dict[str, str] = field(default_factory=dict)

    @property
    def stop_step(self) -> int | None:
        return None if self.stop is None else int(self.stop["step"])

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any]) -> RunProgress:
        """Known keys of ``meta`` (a :meth:`to_dict`); missing ones keep their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**copy.deepcopy({k: v for k, v in meta.items() if k in known}))


def make_tracker(cfg: InteractionConfig) -> InteractionTracker:
    return InteractionTracker(
        cfg.salient_rel,
        cfg.salient_abs,
        salient_scope=cfg.salient_scope,
        match_type=cfg.match_type,
        categories=cfg.categories,
        noise_signal=cfg.noise_signal,
    )


def make_stopper(cfg: InteractionConfig) -> Any:
    """The user's stopper, or the default noise-rise rule with the config's settings."""
    if cfg.stopper is not None:
        return cfg.stopper
    return NoiseRiseStopper(patience=cfg.patience, min_delta=cfg.min_delta)


@dataclass
class CallbackState:
    """Everything the callback keeps between events (``None`` until ``on_train_begin``)."""

    progress: RunProgress = field(default_factory=RunProgress)
    probes: list[Probe] | None = None
    schedule: ProbeSchedule | None = None
    tracker: InteractionTracker | None = None
    stopper: Any = None
    extractor: ValueExtractor | None = None
    snapshots: SnapshotDir | None = None

    @property
    def active(self) -> bool:
        """True while probe points are taken (base extracted, not disabled)."""
        return self.tracker is not None and self.tracker.has_base and not self.progress.disabled

    def wire(self, comm: Collective, lockstep: bool, tokenizer: Any = None) -> None:
        """Point the extractor at this run's ranks (and a tokenizer if it has none)."""
        extractor = self.extractor
        if extractor is None:
            return
        if extractor.tokenizer is None:
            extractor.tokenizer = tokenizer
        extractor.comm = comm
        extractor.lockstep = lockstep

    def state_dict(self) -> dict[str, Any]:
        """All state: JSON-able ``meta`` plus the tracker's and stopper's states.

        ``{"format", "meta", "probes", "schedule", "snapshot_dir", "kind", "tracker":
        {"tensors", "meta"}, "stopper": dict | None, "tensors": {"baseline"?}}``.
        """
        stopper_state = None
        if self.stopper is not None and callable(getattr(self.stopper, "state_dict", None)):
            stopper_state = self.stopper.state_dict()
        tensors = {}
        if self.extractor is not None and self.extractor.baseline is not None:
            tensors["baseline"] = self.extractor.baseline.detach().cpu()
        sched = self.schedule
        return {
            "format": STATE_FORMAT,
            "meta": self.progress.to_dict(),
            "probes": None if self.probes is None else [p.to_dict() for p in self.probes],
            "schedule": None
            if sched is None
            else {"spec": sched.spec, "max_steps": sched.max_steps},
            "snapshot_dir": None if self.snapshots is None else str(self.snapshots.root),
            "kind": None if self.extractor is None else self.extractor.kind,
            "tracker": None if self.tracker is None else self.tracker.state_dict(),
            "stopper": stopper_state,
            "tensors": tensors,
        }

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, Any], cfg: InteractionConfig, tokenizer: Any = None
    ) -> CallbackState:
        """Rebuild from :meth:`state_dict`; the extractor is wired to ranks by the caller."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown callback state format {state.get('format')!r}")
        out = cls(progress=RunProgress.from_dict(state["meta"]))
        out.probes = [Probe.from_dict(p) for p in state["probes"] or []] or None
        sched = state.get("schedule")
        out.schedule = None if sched is None else ProbeSchedule(sched["spec"], sched["max_steps"])
        if state.get("snapshot_dir"):
            out.snapshots = SnapshotDir(state["snapshot_dir"])
            try_write("metrics", out.snapshots.load_metrics)
        out.tracker = make_tracker(cfg)
        if state.get("tracker") is not None:
            out.tracker.load_state_dict(state["tracker"])
        out.stopper = make_stopper(cfg)
        if state.get("stopper") is not None and hasattr(out.stopper, "load_state_dict"):
            out.stopper.load_state_dict(state["stopper"])
        out.extractor = ValueExtractor.from_config(
            cfg,
            tokenizer if tokenizer is not None else cfg.tokenizer,
            kind=state.get("kind") or "causal",
            baseline=state.get("tensors", {}).get("baseline", cfg.baseline),
        )
        return out


def start_run(
    cfg: InteractionConfig,
    *,
    train_dataset: Any,
    model: Any,
    tokenizer: Any,
    snapshot_root: str,
    max_steps: int | None,
    comm: Collective,
    lockstep: bool,
    main: bool,
    text_field: str = "text",
    source: str = "trainer.train_dataset",
    schedule: Any = None,
) -> CallbackState:
    """A fresh run: its probes (given or sampled), extractor, tracker, stopper, snapshot
    folder; the main process clears interrupted writes there and writes ``probes.json``.
    ``schedule``: the resolved spec (``schedule="eval"`` as steps), else ``cfg.schedule``."""
    kind = model_kind(model)
    probes = prepare_probes(
        cfg.probes,
        train_dataset=train_dataset,
        tokenizer=tokenizer,
        n_players=cfg.n_players,
        num_probes=cfg.num_probes,
        seed=cfg.seed,
        kind=kind,
        label_names=label_names_of(model) if kind == "classifier" else None,
        exclude_words=cfg.exclude_words,
        template=cfg.template,
        text_field=text_field,
        source=source,
    )
    extractor = ValueExtractor.from_config(
        cfg, tokenizer, kind=kind, baseline=cfg.baseline, comm=comm, lockstep=lockstep
    )
    snapshots = SnapshotDir(snapshot_root)
    if main:
        remove_stale_temp_files(snapshots.root)
        info = {"n_players": probes[0].n_players, "model_kind": kind}
        try_write("probes", lambda: snapshots.write_probes(probes, info))
    return CallbackState(
        probes=probes,
        schedule=ProbeSchedule(cfg.schedule if schedule is None else schedule, max_steps),
        tracker=make_tracker(cfg),
        stopper=make_stopper(cfg),
        extractor=extractor,
        snapshots=snapshots,
    )


def state_attribute(name: str) -> property:
    """A property of an owner object that reads and writes ``owner.run_state.<name>``.

    The callback exposes ``probes``, ``tracker``, ``stopper``, ... as attributes (users
    and tests read them); they live in its :class:`CallbackState`.
    """
    return property(
        lambda self: getattr(self.run_state, name),
        lambda self, value: setattr(self.run_state, name, value),
        doc=f"``run_state.{name}``",
    )
