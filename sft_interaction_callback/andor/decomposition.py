"""The sparse AND-OR decomposition of a game (DESIGN.md §4) and its container."""

from __future__ import annotations

from typing import Any

import torch

from .operators import FoldedInteractionMap
from .result import AndOrInteractions
from .solvers import solve_default, solve_pdhg, solve_reference
from .transforms import n_players_of

__all__ = ["AndOrInteractions", "fit_and_or", "SOLVERS"]

SOLVERS = ("default", "pdhg", "reference")


def fit_and_or(
    v: torch.Tensor,
    *,
    noise_bound: float = 0.02,
    solver: str = "default",
    **options: Any,
) -> AndOrInteractions:
    """Extract sparse AND-OR interactions from the values of all ``2**n`` masks.

    ``v[..., s]`` is the model's value on the mask keeping the players in bits of ``s``.
    The noise ``q`` obeys ``|q_T| <= noise_bound * |v(N) - v({})|`` per probe. ``solver``:
    ``"default"`` / ``"pdhg"`` (fast, batched; options: ``iterations``, ``restart_every``,
    ``step_balance``), or ``"reference"`` (the published SGD recipe; options:
    ``iterations``, ``lr``, ``momentum``, ``lr_decay``). Results keep ``v``'s dtype and
    device; the solve runs on ``v``'s device in float64 (PDHG iterates in float32 on
    accelerators).
    """
    if not isinstance(v, torch.Tensor) or not torch.is_floating_point(v):
        raise TypeError("fit_and_or() needs a floating-point torch.Tensor of values")
    n = n_players_of(v)
    if not torch.isfinite(v).all():
        raise ValueError(
            "fit_and_or() got non-finite values (NaN or inf); check the model's outputs "
            "or the probability clamp before extracting interactions"
        )
    if noise_bound < 0:
        raise ValueError(f"noise_bound must be >= 0, got {noise_bound}")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")

    lead = v.shape[:-1]
    flat = v.reshape(-1, 1 << n)
    work = flat.to(torch.float64)
    bound = noise_bound * (work[:, -1] - work[:, 0]).abs()
    solve = {"default": solve_default, "pdhg": solve_pdhg, "reference": solve_reference}[solver]
    p, q = solve(work, bound, **options)
    q = torch.maximum(torch.minimum(q, bound[:, None]), -bound[:, None])
    i_and, i_or = FoldedInteractionMap.build(n, work.device).apply(p, q, work)

    def back(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(*lead, 1 << n).to(v.dtype)

    return AndOrInteractions(
        v=v, i_and=back(i_and), i_or=back(i_or), p=back(p), q=back(q), n_players=n
    )
