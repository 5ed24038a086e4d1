"""W&B extras: tables of the strongest interactions and order histograms per probe point.

The scalar curves reach W&B through ``trainer.log`` like every other ``report_to`` sink;
this module adds what a scalar cannot show. It runs only when W&B is active for the run
(``"wandb"`` in ``args.report_to`` and ``wandb.run`` is not None); it never imports
``wandb`` otherwise. Any W&B error is caught, warned about once, and ignored.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..andor import AndOrInteractions
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
    interactions: AndOrInteractions,
    k: int,
    sets: Mapping[str, torch.Tensor] | None = None,
) -> list[list[Any]]:
    """Rows ``[probe, type, words, order, strength, category]``, the ``k`` strongest per probe.

    Ranked by :meth:`AndOrInteractions.top_k` (``|I(S)|``, the empty set left out);
    ``strength`` is the signed interaction ``I(S)``. ``category`` is ``preserved`` /
    ``emerged`` (from ``sets``) or ``""`` for a subset that is not salient.
    """
    rows: list[list[Any]] = []
    size = interactions.i_and.shape[-1]
    ids = interactions.probe_ids or [str(p) for p in range(interactions.num_probes)]
    for p in range(interactions.num_probes):
        for it in interactions.top_k(k, probe=p):
            col = it.subset + (size if it.kind == "or" else 0)
            category = ""
            for name in (PRESERVED, EMERGED):
                if sets is not None and name in sets and bool(sets[name][p, col]):
                    category = name
            words = it.words if it.words is not None else tuple(map(str, it.players))
            rows.append(
                [ids[p], it.kind.upper(), " & ".join(words), len(it.players), it.value, category]
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
        interactions: AndOrInteractions,
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
            if interactions.words is None:  # name the players after the probes' words
                interactions = dataclasses.replace(
                    interactions,
                    probe_ids=[p.id for p in probes],
                    words=[list(p.words) for p in probes],
                )
            rows = top_interactions(interactions, self.top_k, sets)
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
