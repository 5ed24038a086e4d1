"""Every stop, replayed from the curves that one training run stored (issue 14).

A study run trains to its last step and records, at every point of one grid (probe
points = evaluation points): the ``interactions/...`` metrics the callback logged, the
EB-criterion statistic, eval loss on the tuning split and accuracy on the judging split.
A stop is then a function of those curves: ``rule(run) -> Decision(stop, used)`` where
``stop`` is the step at which training ends and ``used`` the step whose model is kept
(``used != stop`` for rules that restore an earlier checkpoint). Only the rules' own
inputs are read: label-free rules read interaction / EB curves, eval-loss rules read the
tuning-split loss; the judging accuracy is read only to score a decision (and by the
oracle "best in hindsight").

Adding a rule is one function registered in :data:`RULES` (``@rule("name")``).

``run`` is a dict with ``"grid"`` (sorted steps), ``"max_steps"`` and per-step series
``"points"``: ``{step: {"interactions": {...}, "eb": float|None, "tune_loss": float,
"tune_acc": float, "judge_acc": float}}`` (JSON keys may be strings).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from compare import patience_stop  # noqa: E402


@dataclass(frozen=True)
class Decision:
    """Where a rule ended training (``stop``) and which step's model it keeps (``used``)."""

    stop: int
    used: int
    fired: bool


Rule = Callable[[Mapping[str, Any]], Decision]
RULES: dict[str, Rule] = {}
#: human-readable names, in table order
LABELS: dict[str, str] = {}
#: rules that read labelled data (eval loss on the tuning split, or the judging split)
NEEDS_LABELS: set[str] = set()


def rule(name: str, label: str, *, labels: bool = False) -> Callable[[Rule], Rule]:
    """Register ``fn`` as stop ``name`` (``labels``: it reads labelled evaluation data)."""

    def wrap(fn: Rule) -> Rule:
        RULES[name] = fn
        LABELS[name] = label
        if labels:
            NEEDS_LABELS.add(name)
        return fn

    return wrap


# ---------------------------------------------------------------------- access
def grid(run: Mapping[str, Any]) -> list[int]:
    return sorted(int(s) for s in run["grid"])


def point(run: Mapping[str, Any], step: int) -> Mapping[str, Any]:
    pts = run["points"]
    return pts[step] if step in pts else pts[str(step)]


def series(run: Mapping[str, Any], key: str, *, skip_zero: bool = False) -> dict[int, float]:
    """``{step: value}`` of a per-point field (None / NaN left out)."""
    out = {}
    for s in grid(run):
        if skip_zero and s == 0:
            continue
        x = point(run, s).get(key)
        if x is not None and not (isinstance(x, float) and math.isnan(x)):
            out[s] = float(x)
    return out


def end_step(run: Mapping[str, Any]) -> int:
    return grid(run)[-1]


# ---------------------------------------------------------------------- rules
def _replay(run: Mapping[str, Any], stopper: Any, field: str, floor: bool) -> Any:
    """Feed ``stopper`` the per-point metrics under ``field``, in step order, until it fires.

    ``floor``: hand it the noise floor the callback logged at step 0
    (``interactions/noise_floor``), as the callback does (``set_floor``)."""
    if floor:
        x = (point(run, grid(run)[0]).get(field) or {}).get("interactions/noise_floor")
        if x is not None:
            stopper.set_floor(float(x))
    for s in grid(run):
        metrics = point(run, s).get(field) or {}
        if metrics and stopper.update(s, metrics):
            break
    return stopper


def _new_rule(run: Mapping[str, Any], **kw: Any) -> Any:
    """``NoiseRiseStopper(**kw)``, the package's default rule where ``kw`` is empty, on
    the debounced categories and pooled signal, replayed as the callback runs it."""
    from sft_interaction_callback.tracking.stopping import NoiseRiseStopper

    return _replay(run, NoiseRiseStopper(**kw), "interactions", floor=True)


@rule("interaction_v1", "interaction stop, pre-issue-13 rule (shipped before)")
def interaction_v1(run: Mapping[str, Any]) -> Decision:
    """The rule shipped before issue 13: ``NoiseRiseStopper(patience=3, min_delta=0,
    stage_test="rate")`` on the DESIGN.md §5 categories and §7 signal; keeps the model
    at the stop."""
    from sft_interaction_callback.tracking.stopping import NoiseRiseStopper

    old = NoiseRiseStopper(patience=3, min_delta=0.0, stage_test="rate")
    st = _replay(run, old, "interactions_design", floor=False)
    stop = st.stop_step if st.stop_step is not None else end_step(run)
    return Decision(stop, stop, st.stop_step is not None)


@rule("interaction", "interaction stop (default rule, no restore)")
def interaction(run: Mapping[str, Any]) -> Decision:
    """The rule as it ships today, keeping the model at the stop."""
    st = _new_rule(run)
    stop = st.stop_step if st.stop_step is not None else end_step(run)
    return Decision(stop, stop, st.stop_step is not None)


def _with_restore(st: Any, run: Mapping[str, Any]) -> Decision:
    """At the stop, or at the end when it never fires, the model of the rule's
    ``restore_step`` is kept (the model at the stop while the stage has not ended)."""
    stop = st.stop_step if st.stop_step is not None else end_step(run)
    used = st.restore_step if st.restore_step is not None else stop
    return Decision(stop, used, st.stop_step is not None)


@rule("interaction_restore", "interaction stop + restore-best")
def interaction_restore(run: Mapping[str, Any]) -> Decision:
    """The shipped rule with ``restore_best`` (the callback's default)."""
    return _with_restore(_new_rule(run), run)


@rule(
    "interaction_plateau",
    "interaction stop + restore-best, plateau stage test (default to session 7)",
)
def interaction_plateau(run: Mapping[str, Any]) -> Decision:
    """The default of sessions 6-7: the plateau stage test and ``min_delta`` = 3x the
    floor (issue 13), restore-best."""
    return _with_restore(_new_rule(run, stage_test="plateau", floor_multiple=3.0), run)


@rule("patience", "eval-loss patience 3", labels=True)
def patience(run: Mapping[str, Any]) -> Decision:
    """``EarlyStoppingCallback(patience=3)`` on the tuning-split eval loss (no step 0)."""
    s = patience_stop(series(run, "tune_loss", skip_zero=True), patience=3)
    stop = s if s is not None else end_step(run)
    return Decision(stop, stop, s is not None)


@rule("patience_best", "eval-loss patience 3 + load best", labels=True)
def patience_best(run: Mapping[str, Any]) -> Decision:
    """The same stop with ``load_best_model_at_end``: lowest eval loss up to the stop."""
    d = patience(run)
    loss = {s: v for s, v in series(run, "tune_loss", skip_zero=True).items() if s <= d.stop}
    used = min(loss, key=lambda s: (loss[s], s)) if loss else d.stop
    return Decision(d.stop, used, d.fired)


@rule("eb", "EB-criterion (label-free)")
def eb(run: Mapping[str, Any]) -> Decision:
    """Mahsereci et al. (2017): stop at the first point (step > 0) whose EB statistic
    ``1 - (B/D) sum_k g_k^2 / S_k`` is positive."""
    for s, x in series(run, "eb", skip_zero=True).items():
        if x > 0:
            return Decision(s, s, True)
    e = end_step(run)
    return Decision(e, e, False)


@rule("fraction", "fixed half of the run")
def fraction(run: Mapping[str, Any]) -> Decision:
    """The grid point nearest to half of ``max_steps`` (fixed before any run)."""
    target = 0.5 * float(run["max_steps"])
    s = min(grid(run), key=lambda x: (abs(x - target), x))
    return Decision(s, s, True)


@rule("end", "train to the end")
def end(run: Mapping[str, Any]) -> Decision:
    e = end_step(run)
    return Decision(e, e, False)


@rule("best", "best step in hindsight (oracle)", labels=True)
def best(run: Mapping[str, Any]) -> Decision:
    acc = series(run, "judge_acc")
    s = max(acc, key=lambda k: (acc[k], -k))
    return Decision(s, s, True)


# ---------------------------------------------------------------------- scoring
def judge(run: Mapping[str, Any], rules: Mapping[str, Rule] | None = None) -> dict[str, Any]:
    """Every rule's decision on ``run`` and its judging accuracy and regret (pp)."""
    rules = RULES if rules is None else rules
    acc = series(run, "judge_acc")
    top = max(acc.values())
    out = {}
    for name, fn in rules.items():
        d = fn(run)
        a = acc.get(d.used)
        out[name] = {
            "stop_step": d.stop,
            "used_step": d.used,
            "fired": d.fired,
            "accuracy": a,
            "regret_pp": None if a is None else 100.0 * (top - a),
        }
    return out


def t_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)``: the t-interval of the mean of paired differences."""
    xs = [float(x) for x in diffs if x is not None and not math.isnan(float(x))]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = statistics.fmean(xs)
    if n == 1:
        return m, math.nan, math.nan, 1
    from scipy import stats

    half = stats.t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(xs) / math.sqrt(n)
    return m, m - half, m + half, n
