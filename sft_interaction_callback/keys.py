"""Every name the package logs or shares, in one place.

Metric names are a public interface: W&B panels, ``metric_for_best_model``, the report and
the experiment scripts read them back. Defining each exactly once keeps writers and readers
from drifting apart (``tests/test_layout.py`` checks that no other module spells an
``"interactions/..."`` name). This module imports nothing from the package.
"""

from __future__ import annotations

PREFIX = "interactions/"

# ---------------------------------------------------------------------- categories
REMOVED = "removed"
PRESERVED = "preserved"
EMERGED = "emerged"
CATEGORIES = (REMOVED, PRESERVED, EMERGED)
"""The tracker's categories, in the order they are reported."""

SALIENT = "salient"
NOISE = "noise"
MASKS = (SALIENT, REMOVED, PRESERVED, EMERGED, NOISE)
"""Boolean masks stored with a step snapshot (salient = preserved | emerged)."""

CATEGORY_METRICS = ("count", "strength", "strength_norm", "rho", "gamma", "mean_order")
"""Per-category metrics (``gamma`` only with a reference model)."""


def metric_key(name: str) -> str:
    """``interactions/<name>``: the logged name of a metric."""
    return PREFIX + name


def category_key(category: str, metric: str) -> str:
    """``interactions/<category>/<metric>``, e.g. ``interactions/emerged/count``."""
    return f"{PREFIX}{category}/{metric}"


# ---------------------------------------------------------------------- metrics
NOISE_KEY = metric_key("noise")
REMOVED_FRACTION_KEY = category_key(REMOVED, "fraction")
TOTAL_STRENGTH_KEY = metric_key("total_strength")
SKIPPED_KEY = metric_key("skipped")
STOP_STEP_KEY = metric_key("stop_step")
STOP_REASON_KEY = metric_key("stop_reason")
SECONDS_KEY = metric_key("probe_seconds")
SECONDS_MAX_KEY = metric_key("probe_seconds_max")
SOLVER_GAP_MAX = metric_key("solver_gap_max")
"""Max over probes of the certified per-probe solver gap (primal minus dual bound)."""
FORWARD_SECONDS_KEY = metric_key("seconds/forward")
"""Seconds of a probe point spent in the masked forward passes (all probes)."""
FIT_SECONDS_KEY = metric_key("seconds/fit")
"""Seconds of a probe point spent in the AND-OR fit (all probes)."""

STOPPER_STATUS_PREFIX = "stopper/"
STAGE_STATUS = STOPPER_STATUS_PREFIX + "stage"
BAD_POINTS_STATUS = STOPPER_STATUS_PREFIX + "bad_points"
BEST_STATUS = STOPPER_STATUS_PREFIX + "best"
STAGE_KEY = metric_key(STAGE_STATUS)

# W&B extras (tables and histograms, not scalar curves)
TOP_TABLE_KEY = metric_key("top_interactions")
ORDER_HISTOGRAM_KEY = metric_key("order_histogram")

# ---------------------------------------------------------------------- evaluation
EVAL_METRIC = "interaction_noise"
"""Added to every evaluation as ``eval_interaction_noise`` (``metric_for_best_model``)."""


EVAL_RESTORE_SCORE = "interaction_restore_score"
"""Added to every evaluation as ``eval_interaction_restore_score``: its best is the
checkpoint restore-best loads (``metric_for_best_model`` for ``load_best_model_at_end``)."""


def eval_metric_key(prefix: str = "eval", metric: str = EVAL_METRIC) -> str:
    """An evaluation metric under an evaluation prefix (``eval``, ``eval_<name>``)."""
    return f"{prefix}_{metric}"


# ---------------------------------------------------------------------- shared limits
MAX_PLAYERS = 20
"""Most word players per probe (2**20 forward passes per probe is already a lot)."""

SNAPSHOT_SUBDIR = "interactions"
"""Default folder of the snapshots under the Trainer's ``output_dir``."""

NAMED_BASELINES = ("pad", "unk", "mask", "zero", "mean")
"""Baselines computed directly from the model's embeddings."""

BASELINES = (*NAMED_BASELINES, "learned")
"""Every baseline name the config accepts (``learned`` is fitted from a named one)."""

# ---------------------------------------------------------------------- the trusted stop (issue 13)
NOISE_DESIGN_KEY = metric_key("noise_design")
"""DESIGN.md §7's noise signal (per-probe ``(1 - rho)``-weighted share, probe mean), kept
beside the default pooled ``interactions/noise`` for comparison."""

NOISE_FLOOR_KEY = metric_key("noise_floor")
"""The noise signal of the step-0 model against itself with weights perturbed by a tiny
relative noise: what the measurement alone produces (logged once, at step 0; the mean
over ``floor_draws`` perturbation draws)."""

NOISE_FLOOR_SD_KEY = metric_key("noise_floor_sd")
"""The standard deviation of the floor over its perturbation draws (``floor_draws > 1``)."""

RESTORE_STEP_KEY = metric_key("restore_step")
"""The probe step whose checkpoint restore-best restored (or, in shadow mode, would)."""

MIN_DELTA_STATUS = STOPPER_STATUS_PREFIX + "min_delta"
"""The stopper's effective ``min_delta`` (a multiple of the measured floor by default)."""
