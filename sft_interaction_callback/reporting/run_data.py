"""Load a run folder written by the interaction callback into plain Python data.

:func:`load_run` accepts a Trainer ``output_dir`` (holding ``interactions/`` or a custom
snapshot subfolder) or the snapshot folder itself, and returns a :class:`RunData`: the
probes, the per-probe-point metrics (``metrics.jsonl``), the early-stop decision, the
Trainer's loss history and lazy access to the ``step-*.safetensors`` snapshots. It also
derives what the plots and the HTML page need from the snapshots: order histograms of
the removed / preserved / emerged sets (:meth:`RunData.order_histograms`) and the
strongest interactions of every probe (:meth:`RunData.top_interactions`).

Everything here is read-only and tolerant: a missing optional file (reference, stop
decision, loss history) becomes ``None`` plus a note in :attr:`RunData.notes`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..andor.metrics import order_histogram, strength
from ..andor.transforms import subset_orders
from ..keys import (
    CATEGORIES,
    EMERGED,
    PRESERVED,
    REMOVED,
    SALIENT,
    STAGE_KEY,
)
from ..snapshots import (
    Snapshot,
    SnapshotDir,
    read_json,
    read_jsonl,
    read_snapshot,
    step_filename,
)
from .run_files import (
    NoInteractionsData,
    find_interactions_dir,
    load_log_history,
    num,
    read_rules,
    read_stop,
)

__all__ = [
    "Interaction",
    "NoInteractionsData",
    "ProbeInfo",
    "RunData",
    "find_interactions_dir",
    "load_log_history",
    "load_run",
]


@dataclass(frozen=True)
class ProbeInfo:
    """One probe as stored in ``probes.json``: players are character spans of ``prompt``."""

    index: int
    id: str
    prompt: str
    target: str
    players: tuple[tuple[int, int], ...]

    @property
    def words(self) -> list[str]:
        return [self.prompt[s:e] for s, e in self.players]

    @property
    def label(self) -> str:
        return self.id or f"#{self.index}"


@dataclass(frozen=True)
class Interaction:
    """One interaction of one probe: ``kind`` is ``"and"`` / ``"or"``, ``value`` is ``I(S)``."""

    kind: str
    subset: int
    players: tuple[int, ...]
    words: tuple[str, ...]
    value: float
    category: str  # removed / preserved / emerged, or "salient" without tracker masks
    step: int

    @property
    def order(self) -> int:
        return len(self.players)


@dataclass
class RunData:
    """Everything the report shows, loaded from one run folder (see :func:`load_run`)."""

    interactions_dir: Path
    run_dir: Path
    probes: list[ProbeInfo]
    n_players: int | None
    model_kind: str | None
    records: list[dict[str, Any]]  # probe points that were not skipped, by step
    skipped_steps: list[int]
    snapshot_steps: list[int]
    stop: dict[str, Any] | None  # {"step": int, "reason": str}
    log_history: list[dict[str, Any]]
    log_history_source: Path | None
    has_reference: bool
    notes: list[str] = field(default_factory=list)
    #: ``rules.json``: where the run's stop rule and its neighbours would have stopped
    rules: list[dict[str, Any]] = field(default_factory=list)
    _cache: dict[int, Snapshot] = field(default_factory=dict, repr=False)
    _hists: dict[int, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ scalar series
    @property
    def steps(self) -> list[int]:
        """Probe-point steps with metrics, ascending."""
        return [int(r["step"]) for r in self.records]

    def has(self, key: str) -> bool:
        """Whether any probe point holds a finite value for ``key``."""
        return any(math.isfinite(num(r.get(key))) for r in self.records)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one metric over the probe points (NaN where missing)."""
        return self.steps, [num(r.get(key)) for r in self.records]

    def record_at(self, step: int | None) -> dict[str, Any] | None:
        for r in self.records:
            if r["step"] == step:
                return r
        return None

    @property
    def stop_step(self) -> int | None:
        return None if self.stop is None else self.stop.get("step")

    @property
    def stage_end_step(self) -> int | None:
        """First probe point at which the stopper reported the first stage over, if logged."""
        if self.stop is not None and isinstance(self.stop.get("stage_ended_at"), int):
            return self.stop["stage_ended_at"]
        for r in self.records:
            if num(r.get(STAGE_KEY)) >= 2:
                return int(r["step"])
        return None

    def eval_at(self, step: int | None, key: str = "eval_loss") -> float | None:
        """``key`` of the latest evaluation at or before ``step`` (None: no such one)."""
        found = None
        for h in self.log_history:
            s = h.get("step")
            if isinstance(s, (int, float)) and step is not None and s <= step and key in h:
                found = (s, num(h[key])) if found is None or s >= found[0] else found
        return None if found is None or math.isnan(found[1]) else found[1]

    @property
    def last_step(self) -> int | None:
        steps = self.steps or self.snapshot_steps
        return steps[-1] if steps else None

    @property
    def focus_step(self) -> int | None:
        """The step the per-probe views describe: the stop step, else the last snapshot."""
        if self.stop_step is not None and self.stop_step in self.snapshot_steps:
            return self.stop_step
        if self.snapshot_steps:
            return self.snapshot_steps[-1]
        return self.last_step

    @property
    def base_step(self) -> int | None:
        """The first snapshot (the model before SFT, normally step 0)."""
        return self.snapshot_steps[0] if self.snapshot_steps else None

    @property
    def train_steps(self) -> int | None:
        """The last training step the run reached, as far as the files tell."""
        candidates = [h.get("step") for h in self.log_history]
        candidates += [self.last_step]
        steps = [int(s) for s in candidates if isinstance(s, (int, float)) and math.isfinite(s)]
        return max(steps) if steps else None

    # ------------------------------------------------------------------ losses
    def losses(self) -> dict[str, tuple[list[int], list[float]]]:
        """``{"train": (steps, loss), "eval_loss": ..., "eval_<name>_loss": ...}``.

        Only the series that have at least one finite value are returned.
        """
        out: dict[str, tuple[list[int], list[float]]] = {}
        for h in self.log_history:
            step = h.get("step")
            if not isinstance(step, (int, float)):
                continue
            for key, value in h.items():
                if key == "loss":
                    name = "train"
                elif key.startswith("eval_") and key.endswith("loss"):
                    name = key
                else:
                    continue
                v = num(value)
                if math.isfinite(v):
                    out.setdefault(name, ([], []))
                    out[name][0].append(int(step))
                    out[name][1].append(v)
        return out

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, step: int) -> Snapshot:
        """``step-<step>.safetensors``: its interactions and the tracker's masks (cached)."""
        if step not in self._cache:
            self._cache[step] = read_snapshot(self.interactions_dir / step_filename(step))
        return self._cache[step]

    def _has_masks(self, step: int) -> bool:
        masks = self.snapshot(step).masks
        return all(c in masks for c in CATEGORIES)

    def order_histograms(self, step: int | None = None) -> dict[str, dict[str, list[float]]] | None:
        """Order histograms of each category at ``step`` (default: :attr:`focus_step`).

        ``{c: {"count": [n + 1], "share": [n + 1]}}`` averaged over probes, AND and OR
        added up, index = order: the number of salient subsets of that order, and their
        strength as a share of the total strength ``sum_{S != {}} |I(S)|`` of the same
        checkpoint. Removed interactions are measured on the base snapshot (what the
        pretrained model encoded), as the tracker does. ``None`` without the masks.
        """
        step = self.focus_step if step is None else step
        if step is None or step not in self.snapshot_steps or not self._has_masks(step):
            return None
        if step not in self._hists:
            self._hists[step] = self._order_histograms(step)
        return copy.deepcopy(self._hists[step])

    def _order_histograms(self, step: int) -> dict[str, dict[str, list[float]]]:
        current = self.snapshot(step)
        table = current.interactions.concatenated().double()
        base = table
        if self.base_step is not None and self.base_step != step:
            base = self.snapshot(self.base_step).interactions.concatenated().double()
        n = (table.shape[-1] // 2).bit_length() - 1
        nonempty = (subset_orders(n) > 0).repeat(2)
        out: dict[str, dict[str, list[float]]] = {}
        for c in CATEGORIES:
            values = base if c == REMOVED else table
            mask = current.masks[c].bool()
            counts, strengths = order_histogram(values, mask, concatenated=True)
            total = strength(values, nonempty)[:, None]
            share = torch.where(total > 0, strengths / total.clamp_min(1e-300), 0.0)
            out[c] = {"count": counts.mean(0).tolist(), "share": share.mean(0).tolist()}
        return out

    def top_interactions(
        self, probe: int, k: int = 8, step: int | None = None
    ) -> dict[str, list[Interaction]]:
        """The ``k`` strongest interactions of one probe, by ``|I(S)|``.

        ``{"and": [...], "or": [...], "removed": [...]}``: the salient AND and OR
        interactions (preserved and emerged) at ``step`` (default :attr:`focus_step`), and
        the removed ones (AND and OR together) with their strength in the base snapshot.
        Without the tracker's masks in the snapshot, ``and`` / ``or`` hold the strongest
        nonempty subsets (category ``"salient"``) and ``removed`` is empty.
        """
        step = self.focus_step if step is None else step
        out: dict[str, list[Interaction]] = {"and": [], "or": [], REMOVED: []}
        if step is None or step not in self.snapshot_steps:
            return out
        words = self.probes[probe].words if probe < len(self.probes) else []
        snap = self.snapshot(step)
        both = snap.interactions.concatenated()
        if probe >= both.shape[0]:  # probes.json and the snapshots disagree
            return out
        half = both.shape[-1] // 2
        table = both[probe].double()
        if self._has_masks(step):
            cats = {c: snap.masks[c][probe].bool() for c in (PRESERVED, EMERGED)}
        else:
            nonempty = (subset_orders(half.bit_length() - 1) > 0).repeat(2)
            cats = {SALIENT: nonempty}
        for kind, lo in (("and", 0), ("or", half)):
            entries = []
            for cat, mask in cats.items():
                idx = torch.nonzero(mask[lo : lo + half]).flatten()
                entries += [(cat, int(s), float(table[lo + s])) for s in idx]
            entries.sort(key=lambda e: -abs(e[2]))
            out[kind] = [
                self._interaction(kind, s, v, cat, step, words) for cat, s, v in entries[:k]
            ]
        if self._has_masks(step) and self.base_step is not None:
            base = self.snapshot(self.base_step).interactions.concatenated()[probe].double()
            idx = torch.nonzero(snap.masks[REMOVED][probe].bool()).flatten().tolist()
            entries = sorted(idx, key=lambda j: -abs(float(base[j])))[:k]
            out[REMOVED] = [
                self._interaction(
                    "and" if j < half else "or",
                    j % half,
                    float(base[j]),
                    "removed",
                    self.base_step,
                    words,
                )
                for j in entries
            ]
        return out

    @staticmethod
    def _interaction(kind, subset, value, category, step, words) -> Interaction:
        players = tuple(i for i in range(subset.bit_length()) if (subset >> i) & 1)
        names = tuple(words[i] if i < len(words) else f"player {i}" for i in players)
        return Interaction(kind, subset, players, names, value, category, step)


def load_run(path: str | Path) -> RunData:
    """Read a run folder (Trainer ``output_dir`` or its snapshot folder) into :class:`RunData`.

    Raises :class:`NoInteractionsData` when no probe point was recorded there.
    """
    interactions_dir, run_dir = find_interactions_dir(path)
    notes: list[str] = []

    probes: list[ProbeInfo] = []
    n_players = model_kind = None
    probes_path = interactions_dir / "probes.json"
    if probes_path.is_file():
        try:
            data = read_json(probes_path)
        except (OSError, ValueError) as err:
            raise ValueError(f"{probes_path} is not valid JSON: {err}") from err
        for i, p in enumerate(data.get("probes", [])):
            spans = tuple((int(s), int(e)) for s, e in p.get("players", []))
            probes.append(
                ProbeInfo(
                    i, str(p.get("id", "")), str(p["prompt"]), str(p.get("target", "")), spans
                )
            )
        n_players = data.get("n_players")
        model_kind = data.get("model_kind")
    else:
        notes.append("probes.json is missing: probe texts are not shown")

    try:
        raw = read_jsonl(interactions_dir / "metrics.jsonl")
    except ValueError as err:
        raise ValueError(
            f"{interactions_dir / 'metrics.jsonl'} is not valid JSON lines: {err}"
        ) from err
    by_step: dict[int, dict[str, Any]] = {}
    for r in raw:
        if isinstance(r, dict) and isinstance(r.get("step"), (int, float)):
            by_step[int(r["step"])] = {**r, "step": int(r["step"])}
    records = [by_step[s] for s in sorted(by_step) if not by_step[s].get("skipped")]
    skipped = [s for s in sorted(by_step) if by_step[s].get("skipped")]
    snapshot_steps = SnapshotDir(interactions_dir).steps()
    if not records and not snapshot_steps:
        raise NoInteractionsData(
            f"{interactions_dir} holds no probe point yet (metrics.jsonl has no records and "
            "there is no step-*.safetensors snapshot); nothing to report"
        )
    if n_players is None and snapshot_steps:
        n_players = read_snapshot(
            interactions_dir / step_filename(snapshot_steps[0])
        ).interactions.n_players

    history, source = load_log_history(run_dir, interactions_dir)
    if source is None:
        notes.append(
            "no Trainer log history found (trainer_state.json, checkpoint-*/trainer_state.json "
            "or log_history.json): the loss plot is left out"
        )
    run = RunData(
        interactions_dir=interactions_dir,
        run_dir=run_dir,
        probes=probes,
        n_players=None if n_players is None else int(n_players),
        model_kind=model_kind,
        records=records,
        skipped_steps=skipped,
        snapshot_steps=snapshot_steps,
        stop=read_stop(interactions_dir, records),
        log_history=history,
        log_history_source=source,
        has_reference=(interactions_dir / "reference.safetensors").is_file()
        or any(k.endswith("/gamma") for r in records for k in r),
        notes=notes,
        rules=read_rules(interactions_dir),
    )
    if skipped:
        notes.append(f"probe points skipped (errors): steps {', '.join(map(str, skipped))}")
    return run
