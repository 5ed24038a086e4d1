"""Getting the callback's metrics to every logger without disturbing the trainer's own logs.

Scalars go through the base ``transformers.Trainer.log`` (so ``state.log_history`` and
every ``report_to`` integration see them), W&B tables through
:class:`~sft_interaction_callback.reporting.wandb_log.WandbExtras`, and the evaluation
metric ``eval_interaction_noise`` is added to evaluation logs in place. A failing sink
is reported once and never reaches the training loop.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

from sft_interaction_callback.callback.progress import console_hidden, print_summary
from sft_interaction_callback.keys import EVAL_METRIC, eval_metric_key
from sft_interaction_callback.reporting.wandb_log import WandbExtras

__all__ = ["MetricLog", "add_eval_metric", "add_eval_metrics", "eval_prefixes"]


class MetricLog:
    """Logs probe points through ``trainer.log``; points logged before training are queued.

    Step 0 is probed in ``on_train_begin``, possibly before the integrations have set
    themselves up, so those points wait for the next step event (:meth:`flush`).
    """

    def __init__(self, log_tables: bool = True, top_k: int = 10) -> None:
        self.trainer: Any = None
        self.wandb = WandbExtras(log_tables, top_k)
        self._pending: list[tuple[dict[str, float], dict[str, Any] | None]] = []
        self._failed = False

    def emit(
        self, logs: Mapping[str, float | None], control: Any, tables: dict[str, Any] | None = None
    ) -> None:
        """Log ``logs`` (NaN and None values left out), then the W&B tables."""
        clean = {k: float(x) for k, x in logs.items() if x is not None and math.isfinite(x)}
        if control is None or self.trainer is None:
            self._pending.append((clean, tables))
            return
        self._log_now(clean, tables, control)

    def flush(self, control: Any) -> None:
        """Log the queued points (a step event has a ``control`` to restore)."""
        while self._pending and self.trainer is not None:
            self._log_now(*self._pending.pop(0), control=control)

    def _log_now(self, logs: dict[str, float], tables: dict[str, Any] | None, control: Any) -> None:
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
            with console_hidden(trainer) as printed:  # one line instead of a raw dict
                if Trainer is not None and isinstance(trainer, Trainer):
                    Trainer.log(trainer, logs)
                else:
                    trainer.log(logs)
            if printed:
                print_summary(trainer, logs)
        except Exception as err:  # noqa: BLE001 - a failing sink (W&B, ...) must not stop training
            if not self._failed:
                self._failed = True
                warnings.warn(
                    f"interaction callback: logging the interaction metrics failed "
                    f"({type(err).__name__}: {err}); training continues, the metrics stay in "
                    "state.log_history and metrics.jsonl (further logging errors are not reported)",
                    stacklevel=4,
                )
        finally:
            for ctl in {id(control): control, id(trainer.control): trainer.control}.values():
                ctl.should_log, ctl.should_evaluate, ctl.should_save = flags
        if tables is not None:
            self.wandb.log_point(trainer.args, tables.pop("step"), **tables)


def eval_prefixes(logs: Mapping[str, Any]) -> list[str]:
    """Metric prefixes of evaluation logs (``eval``, ``eval_<name>``), from speed metrics."""
    out = []
    for name in logs:
        if name.endswith("_runtime"):
            prefix = name[: -len("_runtime")]
            if prefix != "train" and f"{prefix}_samples_per_second" in logs:
                out.append(prefix)
    return out


def add_eval_metrics(
    args: Any,
    metrics: dict[str, Any],
    prefix: str,
    values: list[tuple[str, float | None]],
    history: list[dict[str, Any]] | None,
) -> None:
    """:func:`add_eval_metric` for each ``(metric, value)`` of ``values``."""
    for metric, value in values:
        add_eval_metric(args, metrics, prefix, value, history, metric)


def add_eval_metric(
    args: Any,
    metrics: dict[str, Any],
    prefix: str,
    value: float | None,
    history: list[dict[str, Any]] | None,
    metric: str = EVAL_METRIC,
) -> None:
    """Add ``<prefix>_<metric>`` (default ``interaction_noise``) to evaluation ``metrics``.

    With no value yet it is added as NaN only when ``metric_for_best_model`` asks for it
    (the Trainer's best-model lookup would fail without it). ``history``: the trainer's
    ``log_history``, whose last entry is the copy of ``metrics`` made just before ``on_log``.
    """
    name = eval_metric_key(prefix, metric)
    if name in metrics:
        return
    if value is None:
        wanted = getattr(args, "metric_for_best_model", None) or ""
        if metric not in wanted:
            return
        value = math.nan  # keeps metric_for_best_model lookups from failing
    metrics[name] = value
    if history:
        last = history[-1]
        if all(last.get(k) is v or last.get(k) == v for k, v in metrics.items() if k != name):
            last[name] = value
