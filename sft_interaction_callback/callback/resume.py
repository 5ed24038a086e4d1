"""The callback's state in a checkpoint, and finding it again on ``resume_from_checkpoint``.

Why not ``transformers.ExportableState``: the Trainer restores such callbacks (only with
``args.restore_callback_states_from_checkpoint``) by *constructing a new instance* from
JSON keyword arguments and replacing the user's object in its callback list. Our
callback is configured with objects (probes, a custom stopper, a tokenizer, a reference
model) that JSON cannot carry, and users hold on to their callback object (``stop_step``,
``last_noise``, ``state_dict()``). Its state also holds tensors. So the callback is not an
``ExportableState``; instead:

* ``on_save`` writes :data:`STATE_FILE` (``interaction_callback_state.safetensors``) into
  the checkpoint folder that the Trainer has just written (``<run dir>/checkpoint-<step>``).
  Its tensors are the tracker's masks (salient sets of step 0, preserved set ``P_t``, the
  reference's salient set) and the baseline embedding; its metadata holds one JSON
  document: schedule position, stopper state, probes, run metadata, and the file names
  and SHA-256 checksums of the step-0 and reference snapshots. The step-0 and reference
  *interactions* are not copied: they come back from their snapshot files (checked
  against the checksums), never recomputed from the fine-tuned model.
* ``on_train_begin`` of a run that starts at ``global_step > 0`` locates the checkpoint
  being resumed (:func:`find_resume_checkpoint`) and restores into the same callback
  object, whatever ``restore_callback_states_from_checkpoint`` says. Every save writes
  one file in its own checkpoint folder, so nothing piles up in ``trainer_state.json``.

A missing or unreadable snapshot raises :class:`SnapshotError`, naming the file and the
``on_missing_snapshot="rebuild"`` option (re-base from the current model instead).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sft_interaction_callback.callback.trainer_link import requested_checkpoint
from sft_interaction_callback.snapshots import (
    atomic_write_bytes,
    json_safe,
    load_tensors,
    step_filename,
    try_write,
)

__all__ = [
    "STATE_FILE",
    "ResumePlan",
    "save_into_checkpoint",
    "SnapshotError",
    "checkpoint_dir",
    "find_resume_checkpoint",
    "plan_resume",
    "table_checksum",
    "write_state",
]

STATE_FILE = "interaction_callback_state.safetensors"
#: a file-format name, not a module path: it stays as written by every earlier layout
FORMAT = "sft_interaction_callback.resume/1"
_REBUILD_HINT = (
    'pass InteractionCallback(on_missing_snapshot="rebuild") to re-base from the current '
    "model instead (loud warning; exact for PEFT adapters over frozen weights)"
)
#: tracker tensors that come from snapshot files, not from the state file
_FROM_SNAPSHOTS = ("base_interactions", "reference_interactions")


class SnapshotError(RuntimeError):
    """A snapshot (or the state file) needed to resume is missing or unreadable."""

    def __init__(self, path: str | os.PathLike, problem: str, what: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.what = what
        super().__init__(
            f"cannot resume interaction tracking: {self.problem_text()}; restore the file, "
            f"or {_REBUILD_HINT}"
        )

    def problem_text(self) -> str:
        return f"the {self.what} {self.path} {self.problem}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, for the broadcast to every rank
        return (type(self), (self.path, self.problem, self.what))


def table_checksum(table: torch.Tensor) -> str:
    """SHA-256 of a float32, contiguous CPU copy of ``table`` (shape included)."""
    t = table.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(repr(tuple(t.shape)).encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------- save
def checkpoint_dir(trainer: Any, args: Any, state: Any, step: int | None = None) -> Path:
    """The folder the Trainer saves the checkpoint of ``step`` (default
    ``state.global_step``) into."""
    run_dir = None
    get = getattr(trainer, "_get_output_dir", None)
    if callable(get):
        try:
            run_dir = get(trial=None)
        except Exception:  # noqa: BLE001 - hyper-parameter search helpers may need a trial
            run_dir = None
    run_dir = run_dir or args.output_dir
    return Path(run_dir) / f"checkpoint-{int(state.global_step if step is None else step)}"


def save_into_checkpoint(
    trainer: Any, args: Any, state: Any, state_dict: Callable[[], Mapping[str, Any]]
) -> None:
    """Write the callback's state into the checkpoint the Trainer has just saved; a missing
    folder or a failed write warns (a resume from it then re-bases the interactions)."""
    folder = checkpoint_dir(trainer, args, state)
    if not folder.is_dir():
        warnings.warn(
            f"interaction callback: checkpoint folder {folder} not found; its state is not "
            "saved with this checkpoint (a resume from it re-bases the interactions)",
            stacklevel=3,
        )
        return
    step = state.global_step
    try_write("callback state", lambda: write_state(folder, state_dict(), step))


def write_state(folder: str | os.PathLike, cb_state: Mapping[str, Any], step: int) -> Path:
    """Write :data:`STATE_FILE` into ``folder`` from ``InteractionCallback.state_dict()``."""
    from safetensors.torch import save

    tracker = cb_state.get("tracker") or {"tensors": {}, "meta": None}
    tensors = {
        f"tracker/{k}": v.detach().to("cpu").contiguous()
        for k, v in tracker["tensors"].items()
        if k not in _FROM_SNAPSHOTS
    }
    for k, v in (cb_state.get("tensors") or {}).items():
        tensors[f"callback/{k}"] = v.detach().to("cpu").contiguous()
    meta = cb_state["meta"]
    base_step = meta.get("base_step")
    snapshots: dict[str, Any] = {"dir": cb_state.get("snapshot_dir")}
    t = tracker["tensors"]
    if "base_interactions" in t and base_step is not None:
        snapshots["base"] = {
            "file": step_filename(base_step),
            "sha256": table_checksum(t["base_interactions"]),
        }
    if "reference_interactions" in t:
        snapshots["reference"] = {
            "file": "reference.safetensors",
            "sha256": table_checksum(t["reference_interactions"]),
        }
    doc = {
        "format": FORMAT,
        "global_step": int(step),
        "callback": {k: v for k, v in cb_state.items() if k not in ("tracker", "tensors")},
        "tracker_meta": tracker["meta"],
        "snapshots": snapshots,
    }
    text = json.dumps(json_safe(doc), allow_nan=False, ensure_ascii=False)
    data = save(tensors, metadata={"format": FORMAT, "state": text})
    return atomic_write_bytes(Path(folder) / STATE_FILE, data)


# ---------------------------------------------------------------------- find
def _global_step_of(folder: Path) -> int | None:
    try:
        with open(folder / "trainer_state.json", encoding="utf-8") as fh:
            return int(json.load(fh)["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_resume_checkpoint(args: Any, state: Any, trainer: Any = None) -> Path | None:
    """The checkpoint folder a run starting at ``state.global_step > 0`` was resumed from.

    The Trainer does not hand ``resume_from_checkpoint`` to callbacks; in order:
    the argument of the running ``trainer.train`` (recorded by
    :func:`~sft_interaction_callback.callback.trainer_link.record_resume_argument`), then
    ``<output_dir>/checkpoint-<global_step>``, then ``args.resume_from_checkpoint``. A
    candidate counts when it is a folder whose ``trainer_state.json`` has this global
    step; one holding :data:`STATE_FILE` is preferred.
    """
    step = int(state.global_step)
    candidates: list[Path] = []
    found = requested_checkpoint(trainer) if trainer is not None else None
    if found:
        candidates.append(Path(found))
    if trainer is not None:
        candidates.append(checkpoint_dir(trainer, args, state))
    candidates.append(Path(args.output_dir) / f"checkpoint-{step}")
    extra = getattr(args, "resume_from_checkpoint", None)
    if isinstance(extra, (str, os.PathLike)):
        candidates.append(Path(extra))
    good = [c for c in candidates if c.is_dir() and _global_step_of(c) in (step, None)]
    for c in good:
        if (c / STATE_FILE).is_file():
            return c
    return good[0] if good else None


# ---------------------------------------------------------------------- load
@dataclass
class ResumePlan:
    """What rank 0 read from a checkpoint; broadcast to every rank and applied there.

    ``state`` is an ``InteractionCallback.state_dict()``-shaped dict whose tracker
    tensors are complete except where ``rebuild`` names ``"base"`` / ``"reference"``.
    """

    checkpoint: str
    step: int
    state: dict[str, Any]
    rebuild: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)
    #: snapshot files read from another folder than this run's (a resume into a new
    #: output_dir): copied over, so that the new folder is complete for reports
    foreign: list[str] = field(default_factory=list)


def _read_state_file(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise SnapshotError(path, "does not exist", "callback state file")
    try:
        tensors, meta = load_tensors(path)
        doc = json.loads(meta["state"])
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise SnapshotError(
            path, f"is corrupt or truncated ({type(err).__name__}: {err})", "callback state file"
        ) from err
    if doc.get("format") != FORMAT:
        raise SnapshotError(path, f"has an unknown format {doc.get('format')!r}", "state file")
    return doc, tensors


def _snapshot_path(entry: Mapping[str, Any], roots: list[Path]) -> Path:
    for root in roots:
        p = root / entry["file"]
        if p.is_file():
            return p
    return roots[0] / entry["file"]


def _read_table(path: Path, entry: Mapping[str, Any], what: str) -> torch.Tensor:
    if not path.is_file():
        raise SnapshotError(path, "does not exist", what)
    try:
        tensors, _ = load_tensors(path)
        table = torch.cat((tensors["i_and"], tensors["i_or"]), dim=-1).to(torch.float32)
    except Exception as err:  # noqa: BLE001
        raise SnapshotError(
            path, f"is corrupt or truncated ({type(err).__name__}: {err})", what
        ) from err
    if table_checksum(table) != entry.get("sha256"):
        raise SnapshotError(
            path,
            "does not hold the interactions this checkpoint was saved with (checksum "
            "mismatch: overwritten by another run?)",
            what,
        )
    return table


def plan_resume(
    checkpoint: str | os.PathLike, snapshot_root: str | os.PathLike, on_missing: str
) -> ResumePlan:
    """Read :data:`STATE_FILE` and the snapshots it names; rank 0 only.

    ``on_missing="error"``: a missing or corrupt file raises :class:`SnapshotError`.
    ``"rebuild"``: a missing or corrupt snapshot is listed in ``plan.rebuild`` (the
    callback re-extracts it); a missing or corrupt state file still raises, so that the
    caller can fall back to a fresh start.
    """
    folder = Path(checkpoint)
    doc, tensors = _read_state_file(folder / STATE_FILE)
    cb = dict(doc["callback"])
    tracker_tensors = {
        k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("tracker/")
    }
    cb["tensors"] = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("callback/")}
    roots = [Path(snapshot_root)]
    stored = doc["snapshots"].get("dir")
    if stored and Path(stored) != Path(snapshot_root):
        roots.append(Path(stored))
    plan = ResumePlan(str(folder), int(doc["global_step"]), cb)
    for key, name, what in (
        ("base", "base_interactions", "step-0 interaction snapshot"),
        ("reference", "reference_interactions", "reference-model snapshot"),
    ):
        entry = doc["snapshots"].get(key)
        if entry is None:
            continue
        plan.checksums[key] = entry["sha256"]
        path = _snapshot_path(entry, roots)
        try:
            tracker_tensors[name] = _read_table(path, entry, what)
            if path.parent != Path(snapshot_root):
                plan.foreign.append(str(path))
        except SnapshotError as err:
            if on_missing != "rebuild":
                raise
            plan.rebuild.append(key)
            plan.problems.append(err.problem_text())
    if plan.foreign and len(roots) > 1:
        for name in ("probes.json", "metrics.jsonl"):
            if (roots[1] / name).is_file():
                plan.foreign.append(str(roots[1] / name))
    cb["tracker"] = (
        None
        if doc["tracker_meta"] is None
        else {"tensors": tracker_tensors, "meta": doc["tracker_meta"]}
    )
    plan.state = cb
    return plan
