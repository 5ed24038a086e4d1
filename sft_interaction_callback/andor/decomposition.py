"""The sparse AND-OR decomposition of a game (DESIGN.md §4) and its container."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from .operators import FoldedInteractionMap
from .solvers import solve_default, solve_pdhg, solve_reference
from .transforms import n_players_of, or_reconstruct, zeta

__all__ = ["AndOrInteractions", "fit_and_or", "SOLVERS"]

SOLVERS = ("default", "pdhg", "reference")


@dataclass
class AndOrInteractions:
    """AND and OR interactions of a batch of games, all tensors with last dim ``2**n``.

    ``v`` is the game, ``p`` the learned AND/OR split and ``q`` the bounded noise;
    ``i_and`` and ``i_or`` are folded: empty-set and single-player OR effects live in
    ``i_and`` and ``i_or`` is zero for ``|S| <= 1``.
    """

    v: torch.Tensor
    i_and: torch.Tensor
    i_or: torch.Tensor
    p: torch.Tensor
    q: torch.Tensor
    n_players: int

    def reconstruct(self) -> torch.Tensor:
        """The value of every mask rebuilt from the interactions; equals ``v + q``."""
        return zeta(self.i_and) + or_reconstruct(self.i_or)

    def objective(self) -> torch.Tensor:
        """``sum_S |I_and(S)| + sum_S |I_or(S)|`` per probe."""
        return self.i_and.abs().sum(-1) + self.i_or.abs().sum(-1)

    def concatenated(self) -> torch.Tensor:
        """AND then OR along the last dimension (``2 * 2**n``), for the joint metrics."""
        return torch.cat((self.i_and, self.i_or), dim=-1)

    def to(self, *args: Any, **kwargs: Any) -> AndOrInteractions:
        moved = {
            f.name: getattr(self, f.name).to(*args, **kwargs)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return AndOrInteractions(n_players=self.n_players, **moved)

    def __getitem__(self, index: Any) -> AndOrInteractions:
        """Select probes along the leading dimensions (``interactions[3]``)."""
        return AndOrInteractions(
            v=self.v[index],
            i_and=self.i_and[index],
            i_or=self.i_or[index],
            p=self.p[index],
            q=self.q[index],
            n_players=self.n_players,
        )


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
