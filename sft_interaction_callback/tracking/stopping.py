"""The early-stopping rule on the new-interaction noise signal (DESIGN.md §7).

Pure logic on plain dicts of floats: the callback calls ``stopper.update(step, metrics)``
at every probe point with the tracker's metrics and stops training when it returns True.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from ..keys import (
    BAD_POINTS_STATUS,
    BEST_STATUS,
    MIN_DELTA_STATUS,
    NOISE_KEY,
    REMOVED_FRACTION_KEY,
    STAGE_STATUS,
    metric_key,
)

__all__ = [
    "RESTORE_MEANING",
    "RESTORE_RULES",
    "NoiseRiseStopper",
    "Stopper",
    "ask_stopper",
    "stopper_status",
]

_STATE_FORMAT = "sft_interaction_callback.noise_rise_stopper/1"
STAGE_TESTS = ("plateau", "rate", "knee")
RESTORE_RULES = ("removal_peak", "min", "last_good", "stage_end")
#: what each restore target goes back to, in words (logs and summaries)
RESTORE_MEANING = {
    "removal_peak": "the peak of the removed share up to the stop: the most denoised checkpoint",
    "min": "the lowest noise since the stage end, up to the stop",
    "last_good": "the last point within min_delta of the lowest noise since the stage end",
    "stage_end": "the point where the stage end was confirmed",
}


@runtime_checkable
class Stopper(Protocol):
    """What the callback needs from a stopping rule.

    ``update`` is called once per probe point, in increasing ``step`` order, with the flat
    metrics dict of that point (keys as logged, e.g. ``"interactions/noise"``); return True
    to stop training. Optional extras the callback uses when present: ``state_dict()`` /
    ``load_state_dict(state)`` (JSON-able, for checkpoint resume), ``stop_step`` and
    ``reason`` (for the log line).
    """

    def update(self, step: int, metrics: Mapping[str, float]) -> bool: ...


def _value(metrics: Mapping[str, Any], key: str) -> float | None:
    """The finite float under ``key``, or None (missing, None, NaN, inf, not a number)."""
    raw = metrics.get(key)
    if raw is None:
        return None
    try:
        x = float(raw)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


class NoiseRiseStopper:
    """Stop once the new-interaction noise has risen, after the denoising stage has ended.

    **Stage 1 (denoising) never stops training.** Its end is read from ``stage_metric``
    (default ``interactions/removed/fraction``, ``r``: the share of the base salient
    strength that has been removed), with ``M`` the running max of ``r``.

    ``stage_test="plateau"`` (the default of sessions 5-7): a point at step ``s`` is
    *saturated* when the running max has grown by at most ``stage_tolerance * M(s)``
    since step ``stage_window * s`` (``M(s) - M(stage_window * s) <= stage_tolerance *
    M(s)``, with ``M`` read at the last point at or before that step, ``M = 0`` at step
    0): removal has levelled off over the last ``1 - stage_window`` of the run so far. It
    only looks at the running max, so a single dip of ``r`` changes nothing (it neither
    resets the count of saturated points nor moves ``M``), and comparing with a fixed
    share of the elapsed steps makes it independent of the probe spacing. For ``r = 1 -
    exp(-s / T)`` the defaults (0.5, 0.1) end the stage at about ``s = 4.6 T`` (99% of
    the plateau).

    ``stage_test="rate"`` (the previous rule, kept for comparison): with ``M`` the running
    max, a point at step ``s`` (previous valid point ``s'``, the origin being ``r = 0`` at
    step 0) is *saturated* when

    * ``r(s) >= stage_end_fraction * M`` (removal is near its peak, not collapsing), and
    * the removal rate has slowed down: ``(r(s) - r(s')) / (s - s')  <=
      stage_slowdown * M / s``, at most ``stage_slowdown`` times the average rate since
      step 0 (independent of probe spacing and amplitude). A single dip of ``r`` below
      ``stage_end_fraction * M`` resets its count.

    ``stage_test="knee"`` (default since session 8): with the *knee* ``K(s)`` the first
    probe step whose ``r`` reached ``stage_knee * M(s)`` (removal had done most of what it
    has done so far), a point is saturated when ``s >= stage_multiple * K(s)``: the run
    has gone on for ``stage_multiple`` times as long as removal took to get there. It
    reads no rate and no plateau, so a removal that keeps creeping up (real data) still
    hands over; a late jump of ``r`` moves the knee and re-opens the stage. The test is a
    duration already, so its first saturated point ends the stage (``stage_points`` is not
    used). The defaults (0.7, 4) and ``floor_multiple=0`` were chosen on tuning runs of
    four settings (demo, MiniLM, causal LM, SmolLM2;
    docs/results/stop_rule/session8_tuning.md), where the plateau test never handed over
    on MiniLM and handed over late on SmolLM2.

    The stage ends at the first point where ``stage_points`` consecutive valid points were
    saturated, at least ``warmup_points`` valid points (step > 0) have been seen, and
    ``M >= stage_min_fraction`` (removal actually happened; if it never does, the stopper
    never stops, and :attr:`stage_reason` says so). ``stage_end_step`` (optional) ends the
    stage at that step at the latest, whatever the curve.

    **Stage 2.** From the point where the stage ended (inclusive) the stopper tracks the
    running minimum ``m`` of ``metric`` (default ``interactions/noise``). A later point
    with ``metric > m + min_delta`` is *bad*; any other point resets the bad count (and may
    lower ``m``). Training stops at the ``patience``-th consecutive bad point. ``patience``
    counts probe points, not steps. ``min_delta=None`` (default) means
    ``floor_multiple * floor``, with ``floor`` the noise signal's measured floor (the
    step-0 model against itself with slightly perturbed weights; the callback passes it
    to :meth:`set_floor`); without a measured floor it is 0. ``floor_multiple`` is 0 by
    default (it was 3 to session 7): on the tuning runs 3x the floor delayed the stop
    without a better kept model, and a one-draw floor moves up to 3x from draw to draw.

    **Restore target** (:attr:`restore_step`, ``None`` while the stage has not ended;
    ``restore_best`` in the callback loads its checkpoint). ``restore="removal_peak"``
    (default): the point where ``stage_metric`` (the removed share of the base salient
    strength) was highest up to now (the earliest on a tie): the most denoised checkpoint,
    which is where the paper's denoising stage ends. The stage test confirms the stage
    end only later, so this point may lie before :attr:`stage_ended_at`; it is never a
    point from before removal happened. :attr:`keep_step` names it from the first point
    on, so the callback keeps its checkpoint before the stage end is confirmed (evidence:
    docs/results/stop_rule/README.md, session 6). ``restore="min"`` (the default
    before): the point of the running minimum of ``metric`` since the stage end.
    ``restore="stage_end"``: the point where the stage end was confirmed; the stop then
    only decides how long training goes on. ``restore="last_good"``: the last point that
    was not bad (within ``min_delta`` of the minimum); it goes back to later, worse
    checkpoints.

    A missing, NaN or infinite metric value does not count and does not reset: the point
    is skipped for that metric. Points with a step not after the last one seen are ignored
    (so re-feeding a point after a resume cannot count twice). Once stopped, ``update``
    keeps returning True. :attr:`stop_step` and :attr:`reason` describe the decision.
    """

    def __init__(
        self,
        patience: int = 2,
        min_delta: float | None = None,
        metric: str = NOISE_KEY,
        warmup_points: int = 2,
        stage_end_fraction: float = 0.8,
        *,
        stage_metric: str = REMOVED_FRACTION_KEY,
        stage_slowdown: float = 0.25,
        stage_points: int = 2,
        stage_min_fraction: float = 0.05,
        stage_end_step: int | None = None,
        stage_test: str = "knee",
        stage_window: float = 0.5,
        stage_tolerance: float = 0.1,
        floor_multiple: float = 0.0,
        restore: str = "removal_peak",
        stage_knee: float = 0.7,
        stage_multiple: float = 4.0,
    ) -> None:
        _check_int("patience", patience, 1)
        _check_int("warmup_points", warmup_points, 0)
        _check_int("stage_points", stage_points, 1)
        if stage_end_step is not None:
            _check_int("stage_end_step", stage_end_step, 0)
        if min_delta is not None and not (isinstance(min_delta, (int, float)) and min_delta >= 0):
            raise ValueError(f"min_delta must be None (auto) or a number >= 0, got {min_delta!r}")
        if restore not in RESTORE_RULES:
            raise ValueError(f"restore must be one of {RESTORE_RULES}, got {restore!r}")
        if stage_test not in STAGE_TESTS:
            raise ValueError(f"stage_test must be one of {STAGE_TESTS}, got {stage_test!r}")
        if not (isinstance(stage_window, (int, float)) and 0 <= stage_window < 1):
            raise ValueError(f"stage_window must be in [0, 1), got {stage_window!r}")
        if not (isinstance(stage_tolerance, (int, float)) and stage_tolerance >= 0):
            raise ValueError(f"stage_tolerance must be a number >= 0, got {stage_tolerance!r}")
        if not (isinstance(stage_knee, (int, float)) and 0 < stage_knee <= 1):
            raise ValueError(f"stage_knee must be in (0, 1], got {stage_knee!r}")
        if not (isinstance(stage_multiple, (int, float)) and stage_multiple >= 1):
            raise ValueError(f"stage_multiple must be a number >= 1, got {stage_multiple!r}")
        if not (isinstance(floor_multiple, (int, float)) and floor_multiple >= 0):
            raise ValueError(f"floor_multiple must be a number >= 0, got {floor_multiple!r}")
        if not (isinstance(stage_end_fraction, (int, float)) and 0 < stage_end_fraction <= 1):
            raise ValueError(f"stage_end_fraction must be in (0, 1], got {stage_end_fraction!r}")
        if not (isinstance(stage_slowdown, (int, float)) and stage_slowdown >= 0):
            raise ValueError(f"stage_slowdown must be a number >= 0, got {stage_slowdown!r}")
        if not (isinstance(stage_min_fraction, (int, float)) and 0 <= stage_min_fraction <= 1):
            raise ValueError(f"stage_min_fraction must be in [0, 1], got {stage_min_fraction!r}")
        if not isinstance(metric, str) or not isinstance(stage_metric, str):
            raise ValueError("metric and stage_metric must be metric-name strings")
        self.patience = patience
        self.min_delta_setting = None if min_delta is None else float(min_delta)
        self.stage_test = stage_test
        self.stage_window = float(stage_window)
        self.stage_tolerance = float(stage_tolerance)
        self.floor_multiple = float(floor_multiple)
        self.stage_knee = float(stage_knee)
        self.stage_multiple = float(stage_multiple)
        self.restore = restore
        self.metric = metric
        self.warmup_points = warmup_points
        self.stage_end_fraction = float(stage_end_fraction)
        self.stage_metric = stage_metric
        self.stage_slowdown = float(stage_slowdown)
        self.stage_points = stage_points
        self.stage_min_fraction = float(stage_min_fraction)
        self.stage_end_step = stage_end_step
        self.reset()

    def reset(self) -> None:
        """Forget everything seen (a fresh run)."""
        self.last_step: int | None = None
        self.stage_points_seen = 0
        self.stage_max = 0.0
        self._prev: tuple[int, float] = (0, 0.0)
        self._saturated_run = 0
        self.stage_ended_at: int | None = None
        self.stage_reason = "the denoising stage has not ended yet"
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_steps: list[int] = []
        self.stop_step: int | None = None
        self.reason: str | None = None
        self.floor: float | None = None
        self.last_good_step: int | None = None
        self.removal_peak: float | None = None
        self.removal_peak_step: int | None = None
        self._max_history: list[list[float]] = []  # [step, running max] per valid point
        self._r_history: list[list[float]] = []  # [step, r] per valid point (knee test)

    @property
    def in_first_stage(self) -> bool:
        return self.stage_ended_at is None

    @property
    def min_delta(self) -> float:
        """The effective ``min_delta``: as given, else ``floor_multiple * floor`` (0 without)."""
        if self.min_delta_setting is not None:
            return self.min_delta_setting
        return 0.0 if self.floor is None else self.floor_multiple * self.floor

    @property
    def restore_step(self) -> int | None:
        """The probe step to go back to (see the class docstring; None before the stage end)."""
        if self.stage_ended_at is None:
            return None
        if self.restore == "stage_end":
            return self.stage_ended_at
        if self.restore == "removal_peak":
            return self.removal_peak_step
        return self.last_good_step if self.restore == "last_good" else self.best_step

    @property
    def keep_step(self) -> int | None:
        """The probe step whose checkpoint restore-best must keep now: the restore target
        once the stage has ended; with ``"removal_peak"`` the removal peak from the first
        point on, since it may lie before the stage end is confirmed."""
        if self.restore == "removal_peak":
            return self.removal_peak_step
        return self.restore_step

    @property
    def knee_step(self) -> int | None:
        """The knee test's ``K``: the first step whose removed share reached
        ``stage_knee`` times its running max (None before any valid point)."""
        target = self.stage_knee * self.stage_max
        return next((int(s) for s, x in self._r_history if x >= target), None)

    def set_floor(self, floor: float | None) -> None:
        """The measured floor of ``metric`` (ignored when not a finite number >= 0)."""
        if isinstance(floor, (int, float)) and math.isfinite(floor) and floor >= 0:
            self.floor = float(floor)

    # ------------------------------------------------------------------ the rule
    def update(self, step: int, metrics: Mapping[str, float]) -> bool:
        """Feed one probe point; True when training should stop (and from then on)."""
        if self.stop_step is not None:
            return True
        step = int(step)
        if self.last_step is not None and step <= self.last_step:
            return False
        self.last_step = step
        y = _value(metrics, self.metric)
        r = _value(metrics, self.stage_metric)
        if r is not None and step > 0 and (self.removal_peak is None or r > self.removal_peak):
            self.removal_peak, self.removal_peak_step = r, step
        if self.stage_ended_at is None:
            self._observe_stage(step, r)
            if self.stage_ended_at is not None and y is not None:
                self.best, self.best_step = y, step
                self.last_good_step = step
            return False
        if y is None:
            return False
        if self.best is None:
            self.best, self.best_step = y, step
            self.last_good_step = step
            return False
        if y > self.best + self.min_delta:
            self.bad_steps.append(step)
        else:
            self.bad_steps = []
            self.last_good_step = step
        if y < self.best:
            self.best, self.best_step = y, step
        if len(self.bad_steps) >= self.patience:
            self.stop_step = step
            self.reason = (
                f"{self.metric} stayed above its minimum {self.best:.6g} (step {self.best_step})"
                f" by more than min_delta={self.min_delta:g} for {self.patience} consecutive "
                f"probe points (steps {', '.join(map(str, self.bad_steps))}) after the "
                f"denoising stage ended at step {self.stage_ended_at}; stopping at step {step}"
            )
            return True
        return False

    def _observe_stage(self, step: int, r: float | None) -> None:
        if r is not None and step > 0:
            self.stage_points_seen += 1
            self.stage_max = max(self.stage_max, r)
            prev_step, prev_r = self._prev
            if self.stage_test == "plateau":
                back = self.stage_window * step
                earlier = [m for s, m in self._max_history if s <= back]
                m_then = earlier[-1] if earlier else 0.0
                saturated = self.stage_max - m_then <= self.stage_tolerance * self.stage_max
                self._max_history.append([step, self.stage_max])
            elif self.stage_test == "knee":
                self._r_history.append([step, r])
                saturated = step >= self.stage_multiple * self.knee_step
            else:
                rate = (r - prev_r) / (step - prev_step)
                slowed = rate <= self.stage_slowdown * self.stage_max / step
                near_peak = r >= self.stage_end_fraction * self.stage_max
                saturated = slowed and near_peak
            self._saturated_run = self._saturated_run + 1 if saturated else 0
            self._prev = (step, r)
        if self.stage_end_step is not None and step >= self.stage_end_step:
            self._end_stage(step, f"reached stage_end_step={self.stage_end_step}")
            return
        if r is None or step <= 0:
            return
        if self.stage_max < self.stage_min_fraction:
            self.stage_reason = (
                f"removal has not reached stage_min_fraction={self.stage_min_fraction:g} "
                f"(max {self.stage_metric} so far {self.stage_max:.4g})"
            )
            return
        needed = 1 if self.stage_test == "knee" else self.stage_points
        if self.stage_points_seen >= self.warmup_points and self._saturated_run >= needed:
            why = (
                f"{self.stage_metric} saturated at {r:.4g} (max {self.stage_max:.4g}) for "
                f"{self.stage_points} probe point(s)"
            )
            if self.stage_test == "knee":
                why = (
                    f"step {step} >= {self.stage_multiple:g} x the knee at step "
                    f"{self.knee_step} (where {self.stage_metric} first reached "
                    f"{self.stage_knee:g} of its max {self.stage_max:.4g})"
                )
            self._end_stage(step, why)

    def _end_stage(self, step: int, why: str) -> None:
        self.stage_ended_at = step
        self.stage_reason = f"the denoising stage ended at step {step}: {why}"

    def status(self) -> dict[str, float]:
        """Loggable state: ``stopper/stage`` (1 or 2), ``stopper/bad_points``, ``stopper/best``."""
        return {
            STAGE_STATUS: 1.0 if self.stage_ended_at is None else 2.0,
            BAD_POINTS_STATUS: float(len(self.bad_steps)),
            BEST_STATUS: math.nan if self.best is None else self.best,
            MIN_DELTA_STATUS: self.min_delta,
        }

    # ------------------------------------------------------------------ state
    _FIELDS = (
        "last_step",
        "stage_points_seen",
        "stage_max",
        "_saturated_run",
        "stage_ended_at",
        "stage_reason",
        "best",
        "best_step",
        "bad_steps",
        "stop_step",
        "reason",
    )
    #: fields added later; a state without them keeps the defaults
    _OPTIONAL = {
        "floor": None,
        "_max_history": [],
        "_r_history": [],
        "last_good_step": None,
        "removal_peak": None,
        "removal_peak_step": None,
    }

    def state_dict(self) -> dict[str, Any]:
        """The decision state, JSON-able (strict JSON: no NaN or inf)."""
        state = {k.lstrip("_"): getattr(self, k) for k in self._FIELDS}
        state["bad_steps"] = list(self.bad_steps)
        state["prev"] = list(self._prev)
        for k in self._OPTIONAL:
            state[k.lstrip("_")] = getattr(self, k)
        state["max_history"] = [list(x) for x in self._max_history]
        state["r_history"] = [list(x) for x in self._r_history]
        state["settings"] = {k: getattr(self, k) for k in self._SETTINGS}
        state["format"] = _STATE_FORMAT
        return state

    #: constructor settings saved beside the state, so a resume under other ones is seen
    _SETTINGS = (
        *("patience", "min_delta_setting", "metric", "warmup_points", "stage_end_fraction"),
        *("stage_metric", "stage_slowdown", "stage_points", "stage_min_fraction"),
        *("stage_end_step", "stage_test", "stage_window", "stage_tolerance"),
        *("floor_multiple", "restore", "stage_knee", "stage_multiple"),
    )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output. The constructor's settings are kept; where
        they differ from those saved with the state, a warning names them (a run resumed
        under another version's defaults would otherwise switch rules silently)."""
        saved = state.get("settings")
        if isinstance(saved, Mapping):
            changed = [f"{k}={v!r} (now {getattr(self, k)!r})" for k, v in saved.items()
                       if k in self._SETTINGS and getattr(self, k) != v]  # fmt: skip
            if changed:
                warnings.warn(
                    "NoiseRiseStopper: resuming a state saved with other settings: "
                    f"{', '.join(changed)}; the current settings apply from here on",
                    stacklevel=2,
                )
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(
                f"unknown stopper state format {state.get('format')!r} (expected {_STATE_FORMAT})"
            )
        missing = [k for k in self._FIELDS if k.lstrip("_") not in state]
        if missing or "prev" not in state:
            raise ValueError(f"stopper state is missing {missing or ['prev']}")
        for k in self._FIELDS:
            setattr(self, k, state[k.lstrip("_")])
        self.bad_steps = list(self.bad_steps)
        for k, default in self._OPTIONAL.items():
            setattr(self, k, state.get(k.lstrip("_"), default))
        self._max_history = [list(x) for x in self._max_history or []]
        self._r_history = [list(x) for x in self._r_history or []]
        prev_step, prev_r = state["prev"]
        self._prev = (int(prev_step), float(prev_r))

    def __repr__(self) -> str:
        return (
            f"NoiseRiseStopper(patience={self.patience}, min_delta={self.min_delta}, "
            f"metric={self.metric!r}, stage_ended_at={self.stage_ended_at}, "
            f"stop_step={self.stop_step})"
        )


def ask_stopper(stopper: Any, step: int, metrics: Mapping[str, float]) -> tuple[int, str] | None:
    """``(step, reason)`` when ``stopper.update`` says stop; a raising stopper never stops."""
    try:
        if not bool(stopper.update(step, dict(metrics))):
            return None
    except Exception as err:  # noqa: BLE001 - a custom stopper must not break training
        warnings.warn(
            f"the stopper raised at step {step} ({type(err).__name__}: {err}); not stopping",
            stacklevel=3,
        )
        return None
    reason = getattr(stopper, "reason", None) or (
        f"{type(stopper).__name__}.update() returned True at step {step}"
    )
    return step, str(reason)


def stopper_status(stopper: Any) -> dict[str, float]:
    """The stopper's loggable ``status()`` as ``interactions/...`` metrics ({} if it has none)."""
    status = getattr(stopper, "status", None)
    if not callable(status):
        return {}
    try:
        return {metric_key(k): float(x) for k, x in status().items()}
    except Exception:  # noqa: BLE001 - a custom stopper's status is optional
        return {}
