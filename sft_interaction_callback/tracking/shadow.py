"""Shadow stops: run a stopping rule without stopping, and read the run at its stop.

To judge a stop after the fact, a run trains to ``max_steps`` while the rule only
*records* when it would have fired. Probing never changes the training trajectory, so
the model at the recorded step is exactly the model a real stop would have kept, and
one run yields every comparison (the demo and both studies work this way).

* :class:`ShadowStopper` wraps a rule (default :class:`NoiseRiseStopper`) and never stops.
* :func:`write_shadow_stop` writes ``stop.json`` marked as a shadow stop, for the report.
* :class:`ProbePoints` reads ``metrics.jsonl`` and answers "metric at a probe step" and
  "share of the final removal reached by the stop", the two numbers every summary needs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sft_interaction_callback.keys import REMOVED, category_key

__all__ = ["ProbePoints", "ShadowStopper", "write_shadow_stop"]

_REMOVED_STRENGTH = category_key(REMOVED, "strength")


class ShadowStopper:
    """Runs a stopping rule but never stops: it records when (and why) the rule fired.

    ``update`` feeds ``inner`` (default: ``NoiseRiseStopper()`` with its defaults) and
    returns False, so training goes on to ``max_steps``; :attr:`stop_step` and
    :attr:`reason` hold the first decision to stop. ``status`` / ``state_dict`` are the
    inner rule's, so the logged stopper curves are those of the real rule.
    """

    def __init__(self, inner: Any = None) -> None:
        if inner is None:
            from sft_interaction_callback.tracking.stopping import NoiseRiseStopper

            inner = NoiseRiseStopper()
        self.inner = inner
        self.stop_step: int | None = None
        self.reason: str | None = None
        #: the checkpoint restore-best would have loaded at the stop (the inner rule's
        #: ``restore_step`` then); None when the rule has none or never fired
        self.restore_step: int | None = None

    def update(self, step: int, metrics: Mapping[str, float]) -> bool:
        """Feed the inner rule; remember its first "stop"; never stop (always False)."""
        if self.inner.update(step, metrics) and self.stop_step is None:
            self.stop_step = int(getattr(self.inner, "stop_step", None) or step)
            self.reason = str(getattr(self.inner, "reason", None) or "the stopper fired")
            self.restore_step = getattr(self.inner, "restore_step", None)
        return False

    @property
    def stage_ended_at(self) -> int | None:
        """The inner rule's end of the denoising stage (None when it has none)."""
        return getattr(self.inner, "stage_ended_at", None)

    def set_floor(self, floor: float | None) -> None:
        """Pass the measured noise floor to the inner rule."""
        set_floor = getattr(self.inner, "set_floor", None)
        if callable(set_floor):
            set_floor(floor)

    def status(self) -> dict[str, float]:
        """The inner rule's status, so the logged stopper curves are the real rule's."""
        status = getattr(self.inner, "status", None)
        return status() if callable(status) else {}

    def state_dict(self) -> dict[str, Any]:
        """The inner rule's state plus the recorded stop (saved with checkpoints)."""
        return {
            "inner": self.inner.state_dict(),
            "stop_step": self.stop_step,
            "reason": self.reason,
            "restore_step": self.restore_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (a resumed run keeps its recorded stop)."""
        self.inner.load_state_dict(state["inner"])
        self.stop_step, self.reason = state.get("stop_step"), state.get("reason")
        self.restore_step = state.get("restore_step")


def write_shadow_stop(snap_dir: str | os.PathLike[str], shadow: ShadowStopper) -> None:
    """``stop.json`` for the report's stop marker, marked as a shadow (not enforced) stop.

    The callback writes it at the end of training when its stopper is a fired
    :class:`ShadowStopper`; call it yourself for a rule run outside the callback.
    """
    from sft_interaction_callback.snapshots import FORMAT, atomic_write_json

    atomic_write_json(
        Path(snap_dir) / "stop.json",
        {
            "format": FORMAT,
            "stop_step": shadow.stop_step,
            "reason": shadow.reason,
            "restore_step": shadow.restore_step,
            "shadow": True,
            "checkpoint_saved": False,
            "note": "shadow mode: the stop rule fired here; training went on to max_steps "
            "so that the end of the run could be measured",
        },
    )


class ProbePoints:
    """The probe points of a run (``metrics.jsonl``, skipped points left out), by step."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = [r for r in records if not r.get("skipped")]
        self.by_step = {int(r["step"]): r for r in self.records}
        self.steps = sorted(self.by_step)
        self.last = self.steps[-1] if self.steps else None

    @classmethod
    def read(cls, snap_dir: Path) -> ProbePoints:
        """The probe points in ``<snap_dir>/metrics.jsonl``."""
        from sft_interaction_callback.snapshots import read_jsonl

        return cls(read_jsonl(Path(snap_dir) / "metrics.jsonl"))

    def metric(self, step: int | None, key: str) -> float | None:
        """``key`` at probe step ``step`` exactly; None when either is missing."""
        if step is None or step not in self.by_step:
            return None
        x = self.by_step[step].get(key)
        return None if x is None else float(x)

    def removal(self, stop: int | None) -> tuple[float | None, float | None, float | None]:
        """``(removed strength at stop, at the last point, stop / last)``.

        The share says how much of the final removal had happened by the stop; None when
        the stop is not a probe point or the final removal is zero.
        """
        at_stop = self.metric(stop, _REMOVED_STRENGTH)
        at_end = self.metric(self.last, _REMOVED_STRENGTH)
        share = at_stop / at_end if at_stop is not None and at_end else None
        return at_stop, at_end, share
