"""W&B extras: tables of the strongest interactions and order histograms per probe point.

The scalar curves reach W&B through ``trainer.log`` like every other ``report_to`` sink;
this module adds what a scalar cannot show. It runs only when W&B is active for the run
(``"wandb"`` in ``args.report_to`` and ``wandb.run`` is not None); it never imports
``wandb`` otherwise. Any W&B error is caught, warned about once, and ignored.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..keys import EMERGED, ORDER_HISTOGRAM_KEY, PRESERVED, TOP_TABLE_KEY

__all__ = ["WandbExtras", "wandb_run", "top_interactions"]

STEP_KEY = "train/global_step"
TOP_KEY = TOP_TABLE_KEY
HIST_KEY = ORDER_HISTOGRAM_KEY


def _report_to(args: Any) -> list[str]:
    value = getattr(args, "report_to", None)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def wandb_run(args: Any) -> Any:
    """The active ``wandb.run`` when W&B reporting is on for these arguments, else None."""
    if "wandb" not in _report_to(args):
        return None
    wandb = sys.modules.get("wandb")
    if wandb is None:
        if importlib.util.find_spec("wandb") is None:
            return None
        import wandb  # noqa: F811 - imported only when reporting to W&B
    return getattr(wandb, "run", None)


def top_interactions(
    i_and: torch.Tensor,
    i_or: torch.Tensor,
    words: Sequence[Sequence[str]],
    ids: Sequence[str],
    k: int,
    sets: Mapping[str, torch.Tensor] | None = None,
) -> list[list[Any]]:
    """Rows ``[probe, type, words, order, strength, category]``, the ``k`` strongest per probe.

    ``strength`` is the signed interaction ``I(S)``; rows are ordered by ``|I(S)|``. The
    empty set is left out. ``category`` is ``preserved`` / ``emerged`` (from ``sets``) or
    ``""`` for a subset that is not salient.
    """
    rows: list[list[Any]] = []
    size = i_and.shape[-1]
    table = torch.cat((i_and, i_or), -1).float()
    for p in range(table.shape[0]):
        mag = table[p].abs().clone()
        mag[0] = mag[size] = -1.0
        count = min(k, table.shape[-1] - 2)
        for idx in torch.topk(mag, count).indices.tolist():
            kind, s = ("AND", idx) if idx < size else ("OR", idx - size)
            members = [words[p][b] for b in range(len(words[p])) if (s >> b) & 1]
            category = ""
            for name in (PRESERVED, EMERGED):
                if sets is not None and name in sets and bool(sets[name][p, idx]):
                    category = name
            rows.append(
                [ids[p], kind, " & ".join(members), len(members), float(table[p, idx]), category]
            )
    return rows


class WandbExtras:
    """Logs the tables; every failure is a single warning, then silence."""

    def __init__(self, enabled: bool = True, top_k: int = 10) -> None:
        self.enabled = enabled
        self.top_k = top_k
        self._warned = False

    def _warn(self, err: BaseException) -> None:
        if not self._warned:
            warnings.warn(
                f"W&B logging of interaction tables failed ({type(err).__name__}: {err}); "
                "training continues, further W&B errors are not reported",
                stacklevel=3,
            )
            self._warned = True

    def log_point(
        self,
        args: Any,
        step: int,
        *,
        interactions: Any,
        probes: Sequence[Any],
        sets: Mapping[str, torch.Tensor] | None,
        histograms: Mapping[str, Mapping[str, torch.Tensor]] | None,
    ) -> bool:
        """Log the tables of one probe point; True when something was logged."""
        if not self.enabled:
            return False
        try:
            run = wandb_run(args)
            if run is None:
                return False
            import wandb

            payload: dict[str, Any] = {STEP_KEY: int(step)}
            rows = top_interactions(
                interactions.i_and,
                interactions.i_or,
                [p.words for p in probes],
                [p.id for p in probes],
                self.top_k,
                sets,
            )
            payload[TOP_KEY] = wandb.Table(
                columns=["step", "probe", "type", "words", "order", "strength", "category"],
                data=[[int(step), *r] for r in rows],
            )
            if histograms:
                hist_rows = []
                for cat, h in histograms.items():
                    for order in range(len(h["count"])):
                        hist_rows.append(
                            [
                                int(step),
                                cat,
                                order,
                                float(h["count"][order]),
                                float(h["strength"][order]),
                                float(h["strength_norm"][order]),
                            ]
                        )
                payload[HIST_KEY] = wandb.Table(
                    columns=["step", "category", "order", "count", "strength", "strength_norm"],
                    data=hist_rows,
                )
            run.log(payload)
            return True
        except Exception as err:  # noqa: BLE001 - W&B must never break training
            self._warn(err)
            return False

    def set_summary(self, args: Any, values: Mapping[str, Any]) -> None:
        try:
            run = wandb_run(args)
            if run is None:
                return
            for key, value in values.items():
                run.summary[key] = value
        except Exception as err:  # noqa: BLE001
            self._warn(err)
