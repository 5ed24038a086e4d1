"""When an iterative solver may stop early: its best objective has stopped moving."""

from __future__ import annotations

import torch


class Plateau:
    """True once no probe's best objective improved by more than ``tol`` (relative) over
    the last ``window`` checks. Cheap insurance for small games, which converge in a
    fraction of the default iteration budget."""

    def __init__(self, window: int = 30, tol: float = 1e-9) -> None:
        self.window, self.tol = window, tol
        self.history: list[torch.Tensor] = []

    def __call__(self, best_obj: torch.Tensor) -> bool:
        self.history.append(best_obj.detach().clone())
        if len(self.history) <= self.window:
            return False
        old = self.history.pop(0)
        gain = (old - best_obj) / best_obj.abs().clamp_min(1e-30)
        return bool((gain <= self.tol).all())
