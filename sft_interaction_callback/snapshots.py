"""Interaction snapshots on disk, written atomically and read back.

Layout of ``<args.output_dir>/<output_subdir>/``:

* ``probes.json``: the probes (id, prompt, target, players as spans and as words) and
  ``n_players``;
* ``step-<8 digits>.safetensors``: the :class:`~sft_interaction_callback.andor.AndOrInteractions`
  of that probe point (``v``, ``i_and``, ``i_or``, ``p``, ``q`` ``[P, 2**n]``, the probes'
  ids and words, the step) with the tracker's boolean masks ``salient``, ``removed``,
  ``preserved``, ``emerged``, ``noise`` ``[P, 2 * 2**n]`` (AND then OR) as its extras;
* ``reference.safetensors``: the reference model's ``AndOrInteractions``;
* ``metrics.jsonl``: one JSON object per probe point, with ``step`` (NaN written as null);
* ``stop.json``: the early-stop decision (step and reason), when training was stopped.

Every write goes to a temporary file in the same folder, is fsynced, then
``os.replace``-d over the target, so a reader (or a crash) never sees half a file.
:func:`read_snapshot` and :func:`load_tensors` also read the flat tensor files that
earlier versions wrote (same tensor names, no ``p``/``q``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from sft_interaction_callback.andor import AndOrInteractions
from sft_interaction_callback.atomic_io import TMP_SUFFIX, atomic_write_bytes
from sft_interaction_callback.keys import EMERGED, NOISE, PRESERVED, REMOVED, SALIENT

__all__ = [
    "FORMAT",
    "Snapshot",
    "SnapshotDir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "json_safe",
    "load_tensors",
    "read_json",
    "read_jsonl",
    "read_snapshot",
    "remove_stale_temp_files",
    "step_filename",
    "try_write",
    "write_probe_point",
]

FORMAT = "sft_interaction_callback.snapshots/1"
_STEP_RE = re.compile(r"^step-(\d{8})\.safetensors$")
T = TypeVar("T")


def try_write(what: str, write: Callable[[], T]) -> T | None:
    """``write()``, or None with a warning: a full disk must not end training."""
    try:
        return write()
    except Exception as err:  # noqa: BLE001
        warnings.warn(f"could not write the {what} snapshot: {err}", stacklevel=3)
        return None


def step_filename(step: int) -> str:
    return f"step-{int(step):08d}.safetensors"


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that an interrupted atomic write left in ``folder``.

    Only names of the form ``.<target>.<random>.tmp`` (what :func:`atomic_write_bytes`
    creates) are touched; call it when no other process writes into the folder.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN / inf floats as None and tensors / tuples as lists (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, torch.Tensor):
        return json_safe(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):  # numpy scalars
        return json_safe(obj.item())
    return str(obj)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (an absent file has none)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@dataclasses.dataclass
class Snapshot:
    """A step or reference snapshot read back: interactions, tracker masks, metadata."""

    interactions: AndOrInteractions
    masks: dict[str, torch.Tensor]
    meta: dict[str, Any]

    def flat(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """``(tensors, metadata)`` as in a flat file: ``v``, ``i_and``, ... and the masks by
        name; the metadata as strings (``step``, ``n_players``, then the saved meta)."""
        inter = self.interactions
        names = ("v", "i_and", "i_or", "p", "q", "lower_bound", "gap")
        tensors = {k: getattr(inter, k) for k in names if getattr(inter, k) is not None}
        meta = {"n_players": inter.n_players, **self.meta}
        if inter.step is not None:
            meta["step"] = inter.step
        return {**tensors, **self.masks}, {str(k): str(v) for k, v in meta.items()}


def _safetensors_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        meta = dict(fh.metadata() or {})
        for key in fh.keys():
            tensors[key] = fh.get_tensor(key)
    return tensors, meta


def read_snapshot(path: str | os.PathLike) -> Snapshot:
    """A snapshot of this version (an ``AndOrInteractions`` file) or an earlier flat one."""
    try:
        inter = AndOrInteractions.load(path)
    except ValueError:  # no AndOrInteractions description: a flat file of an earlier version
        return _flat_snapshot(*_safetensors_file(path))
    masks, meta = AndOrInteractions.read_extras(path)
    return Snapshot(inter, masks, meta)


def _flat_snapshot(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Snapshot:
    i_and, i_or = tensors.pop("i_and"), tensors.pop("i_or")

    def zeros() -> torch.Tensor:  # earlier versions did not store the split p, q
        return torch.zeros_like(i_and)

    inter = AndOrInteractions(
        v=tensors.pop("v") if "v" in tensors else zeros(),
        i_and=i_and,
        i_or=i_or,
        p=tensors.pop("p") if "p" in tensors else zeros(),
        q=tensors.pop("q") if "q" in tensors else zeros(),
        n_players=int(meta.pop("n_players", i_and.shape[-1].bit_length() - 1)),
        step=int(meta.pop("step")) if "step" in meta else None,
    )
    return Snapshot(inter, tensors, dict(meta))


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file, on CPU, by plain names.

    A snapshot is flattened (:meth:`Snapshot.flat`); any other file (a checkpoint's
    callback state, a flat snapshot of an earlier version) is returned as stored.
    """
    try:
        return read_snapshot(path).flat()
    except (KeyError, ValueError):  # not a snapshot: no interactions in it
        return _safetensors_file(path)


class SnapshotDir:
    """The snapshot folder of one run; every method writes atomically.

    ``metrics.jsonl`` is rewritten whole from the records held in memory (it stays small:
    one line per probe point), which keeps each update atomic; records already on disk
    are loaded by :meth:`load_metrics` (for a resumed run).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.records: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ paths
    @property
    def probes_path(self) -> Path:
        return self.root / "probes.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def stop_path(self) -> Path:
        return self.root / "stop.json"

    @property
    def reference_path(self) -> Path:
        return self.root / "reference.safetensors"

    def step_path(self, step: int) -> Path:
        return self.root / step_filename(step)

    def steps(self) -> list[int]:
        """Steps with a snapshot file on disk, ascending."""
        if not self.root.is_dir():
            return []
        found = (_STEP_RE.match(p.name) for p in self.root.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    # ------------------------------------------------------------------ writes
    def write_probes(self, probes: Iterable[Any], extra: Mapping[str, Any] | None = None) -> Path:
        items = [p.to_dict() if hasattr(p, "to_dict") else dict(p) for p in probes]
        payload = {"format": FORMAT, **(extra or {}), "probes": items}
        return atomic_write_json(self.probes_path, payload)

    def write_step(
        self,
        step: int,
        interactions: AndOrInteractions,
        masks: Mapping[str, torch.Tensor] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Path:
        """``step-<step>.safetensors``: the interactions with ``masks`` as extras."""
        data = dataclasses.replace(interactions, step=int(step)).to_bytes(
            extra=masks, meta={"format": FORMAT, **(metadata or {})}
        )
        return atomic_write_bytes(self.step_path(step), data)

    def write_reference(
        self, interactions: AndOrInteractions, metadata: Mapping[str, Any] | None = None
    ) -> Path:
        """``reference.safetensors``: the reference model's interactions."""
        data = interactions.to_bytes(meta={"format": FORMAT, **(metadata or {})})
        return atomic_write_bytes(self.reference_path, data)

    def append_metrics(self, record: Mapping[str, Any]) -> Path:
        """Add one probe-point record (replacing an earlier one for the same step)."""
        record = json_safe(dict(record))
        step = record.get("step")
        self.records = [r for r in self.records if r.get("step") != step] + [record]
        lines = [json.dumps(r, allow_nan=False, ensure_ascii=False) for r in self.records]
        return atomic_write_text(self.metrics_path, "".join(line + "\n" for line in lines))

    def write_stop(self, info: Mapping[str, Any]) -> Path:
        return atomic_write_json(self.stop_path, {"format": FORMAT, **info})

    def rewind(self, step: int) -> dict[str, list]:
        """Forget everything after ``step`` (a resumed run continues from there).

        Drops ``metrics.jsonl`` records with a later step (rewriting the file), deletes
        later ``step-*.safetensors`` files and a ``stop.json`` whose stop step is later,
        and removes temporary files of interrupted writes. Returns what was dropped.
        """
        self.load_metrics()
        dropped = [r.get("step") for r in self.records if (r.get("step") or 0) > step]
        if dropped or self.metrics_path.exists():
            self.records = [r for r in self.records if (r.get("step") or 0) <= step]
            lines = [json.dumps(r, allow_nan=False, ensure_ascii=False) for r in self.records]
            if dropped:
                atomic_write_text(self.metrics_path, "".join(line + "\n" for line in lines))
        files = []
        for s in self.steps():
            if s > step:
                with contextlib.suppress(OSError):
                    self.step_path(s).unlink()
                    files.append(s)
        stop = False
        if self.stop_path.exists():
            try:
                stop_step = int(read_json(self.stop_path).get("stop_step"))
            except (OSError, ValueError, TypeError, AttributeError):
                stop_step = step + 1  # unreadable: it cannot describe the resumed run
            if stop_step > step:
                with contextlib.suppress(OSError):
                    self.stop_path.unlink()
                    stop = True
        remove_stale_temp_files(self.root)
        return {"records": dropped, "step_files": files, "stop": [stop] if stop else []}

    # ------------------------------------------------------------------ reads
    def load_metrics(self) -> list[dict[str, Any]]:
        self.records = read_jsonl(self.metrics_path)
        return list(self.records)

    def read_probes(self) -> list[Any]:
        from sft_interaction_callback.probing.probes import Probe

        data = read_json(self.probes_path)
        return [Probe.from_dict(p) for p in data["probes"]]

    def read_step(self, step: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The flat view (:func:`load_tensors`) of a step snapshot."""
        return load_tensors(self.step_path(step))

    def load_step(self, step: int) -> Snapshot:
        return read_snapshot(self.step_path(step))

    def read_reference(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        return load_tensors(self.reference_path)


def write_probe_point(
    snapshots: SnapshotDir,
    step: int,
    interactions: AndOrInteractions,
    sets: Mapping[str, torch.Tensor] | None,
    record: Mapping[str, Any],
    stop: tuple[int, str] | None = None,
) -> Path | None:
    """One probe point on disk: its step snapshot, its ``metrics.jsonl`` record and, when
    training stops there, ``stop.json``. Never raises; returns the snapshot's path."""
    masks = {}
    if sets:
        masks[SALIENT] = sets[PRESERVED] | sets[EMERGED]
        masks.update({k: sets[k] for k in (REMOVED, PRESERVED, EMERGED, NOISE)})
    meta = {"n_players": interactions.n_players, "num_probes": interactions.num_probes}
    path = try_write("step", lambda: snapshots.write_step(step, interactions, masks, meta))
    try_write("metrics", lambda: snapshots.append_metrics(record))
    if stop is not None:
        info = {"stop_step": stop[0], "reason": stop[1], "checkpoint_saved": True}
        try_write("stop", lambda: snapshots.write_stop(info))
    return path
