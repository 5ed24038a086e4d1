"""The files of a run folder besides the snapshots: where they are, and the optional ones.

:func:`find_interactions_dir` tells the snapshot folder and the Trainer's run folder apart;
:func:`load_log_history`, :func:`read_stop` and :func:`read_rules` read the Trainer's log,
the stop decision and the rule comparison. All are tolerant: an optional file that is
missing or unreadable reads as empty (``load_run`` then adds a note).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ..keys import SNAPSHOT_SUBDIR, STOP_REASON_KEY, STOP_STEP_KEY
from ..snapshots import SnapshotDir, read_json

__all__ = [
    "NoInteractionsData",
    "find_interactions_dir",
    "load_log_history",
    "num",
    "read_rules",
    "read_stop",
]

DEFAULT_SUBDIR = SNAPSHOT_SUBDIR
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class NoInteractionsData(FileNotFoundError):
    """The folder holds no interaction snapshots (no probe point was ever recorded)."""


def num(x: Any) -> float:
    """A metric value as float; None, strings and non-finite values become NaN."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return math.nan
    return float(x) if math.isfinite(x) else math.nan


def _looks_like_snapshots(path: Path) -> bool:
    try:
        if not path.is_dir():
            return False
        if (path / "probes.json").is_file() or (path / "metrics.jsonl").is_file():
            return True
        return bool(SnapshotDir(path).steps())
    except OSError:  # an unreadable folder holds nothing we can report on
        return False


def find_interactions_dir(path: str | Path) -> tuple[Path, Path]:
    """``(interactions_dir, run_dir)`` for a Trainer output folder or the snapshot folder.

    Looks at ``path`` itself, then ``path/interactions``, then the immediate subfolders
    of ``path`` (a custom ``output_subdir``). Raises :class:`NoInteractionsData` when
    none holds snapshots and ``FileNotFoundError`` / ``NotADirectoryError`` for a bad path.
    """
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such folder")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder (pass the Trainer output_dir)")
    if _looks_like_snapshots(path):
        run_dir = path if _has_trainer_files(path) else path.parent
        return path, run_dir
    if _looks_like_snapshots(path / DEFAULT_SUBDIR):
        return path / DEFAULT_SUBDIR, path
    found = sorted(p for p in path.iterdir() if _looks_like_snapshots(p))
    if len(found) == 1:
        return found[0], path
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise NoInteractionsData(
            f"{path} holds several snapshot folders ({names}); pass the one to report on"
        )
    raise NoInteractionsData(
        f"{path} holds no interaction data: no probes.json, metrics.jsonl or "
        f"step-*.safetensors there or in {path / DEFAULT_SUBDIR}. Was the InteractionCallback "
        "attached to the Trainer whose output_dir this is?"
    )


def _has_trainer_files(path: Path) -> bool:
    if (path / "trainer_state.json").is_file():
        return True
    return any(_CHECKPOINT_RE.match(p.name) and p.is_dir() for p in path.iterdir())


def load_log_history(run_dir: Path, interactions_dir: Path) -> tuple[list[dict], Path | None]:
    """The Trainer's ``log_history`` and the file it came from (``([], None)`` if none).

    Sources: ``trainer_state.json`` in the run folder, every
    ``checkpoint-*/trainer_state.json``, and ``log_history.json`` in the snapshot folder
    (a list of log entries or an object with a ``log_history`` list; the callback writes
    the whole run's there at the end of training). The one that reaches the latest step
    wins (the first in that order on a tie): a checkpoint kept for restore-best holds the
    log only up to its own step, and with ``save_strategy="no"`` it may be the only one.
    """
    candidates: list[Path] = []
    for folder in dict.fromkeys((run_dir, interactions_dir)):
        candidates.append(folder / "trainer_state.json")
        checkpoints = []
        if folder.is_dir():
            for p in folder.iterdir():
                m = _CHECKPOINT_RE.match(p.name)
                if m and (p / "trainer_state.json").is_file():
                    checkpoints.append((int(m.group(1)), p / "trainer_state.json"))
        candidates.extend(p for _, p in sorted(checkpoints, reverse=True))
    candidates.append(interactions_dir / "log_history.json")
    best: tuple[float, list[dict], Path | None] = (-math.inf, [], None)
    for path in candidates:
        if not path.is_file():
            continue
        try:
            data = read_json(path)
        except (OSError, ValueError):
            continue
        history = data.get("log_history") if isinstance(data, dict) else data
        if isinstance(history, list):
            entries = [h for h in history if isinstance(h, dict)]
            last = max((num(h.get("step")) for h in entries), default=-1.0)
            last = -1.0 if math.isnan(last) else last
            if last > best[0]:
                best = (last, entries, path)
    return best[1], best[2]


def read_stop(interactions_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The stop decision from ``stop.json`` (``stop_step`` or ``step``), else the metrics."""
    path = interactions_dir / "stop.json"
    if path.is_file():
        try:
            data = read_json(path)
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            step = data.get("stop_step", data.get("step"))
            if isinstance(step, (int, float)) and not isinstance(step, bool):
                stop = dict(data)
                stop["step"] = int(step)
                stop["reason"] = str(data.get("reason") or "")
                return stop
    for r in records:
        step = r.get(STOP_STEP_KEY)
        if isinstance(step, (int, float)) and math.isfinite(step):
            return {"step": int(step), "reason": str(r.get(STOP_REASON_KEY) or "")}
    return None


def read_rules(interactions_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``rules.json`` (empty when absent or unreadable: it is optional)."""
    try:
        data = read_json(interactions_dir / "rules.json")
    except (OSError, ValueError):
        return []
    rows = data.get("rules") if isinstance(data, dict) else None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
