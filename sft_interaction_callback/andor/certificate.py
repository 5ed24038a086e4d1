"""Certified lower bounds for the folded AND-OR objective, from any dual point.

The fit of DESIGN.md §4 (after the fold) is the linear program

    min  sum_S |x_S| + sum_{|S|>=2} |y_S|
    s.t. v(T) + q_T = sum_{S subset T} x_S + sum_{|S|>=2, S cap T != {}} y_S,  |q_T| <= b,

(``x`` are the folded AND interactions, ``y`` the OR ones). Its Lagrange dual is

    max  <lam, v> - b ||lam||_1   s.t.  |sum_{T superset S} lam_T| <= 1        (every S)
                                         |sum_{T cap S != {}} lam_T| <= 1      (|S| >= 2).

By weak duality every dual-feasible ``lam`` bounds the optimum from below, whatever the
solver. :func:`dual_lower_bound` takes any ``lam``, scales it into the feasible set (both
constraint families are ``O(n 2**n)`` butterflies) and evaluates the dual objective, so a
solver only has to supply a good direction; the bound it returns is always valid.
"""

from __future__ import annotations

import torch

from .transforms import subset_orders, superset_zeta, zeta

__all__ = ["dual_lower_bound", "relative_gap", "dual_constraint_norm"]


def dual_constraint_norm(lam: torch.Tensor) -> torch.Tensor:
    """``max(|Z^T lam|_inf, |O^T lam|_inf)`` per probe: how far ``lam`` is from feasible."""
    n = lam.shape[-1].bit_length() - 1
    and_side = superset_zeta(lam).abs().amax(dim=-1)
    total = lam.sum(dim=-1, keepdim=True)
    or_side = (total - zeta(lam).flip(-1)).abs()
    high = subset_orders(n, lam.device) >= 2
    or_max = or_side[..., high].amax(dim=-1) if bool(high.any()) else torch.zeros_like(and_side)
    return torch.maximum(and_side, or_max)


def dual_lower_bound(v: torch.Tensor, bound: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """A certified lower bound on the folded L1 optimum of each game (never negative).

    ``v``: ``[B, 2**n]`` values, ``bound``: ``[B]`` noise bounds ``b``, ``lam``: ``[B, 2**n]``
    any dual direction. Computed in float64.
    """
    v, lam = v.to(torch.float64), lam.to(torch.float64)
    bound = bound.to(torch.float64)
    norm = dual_constraint_norm(lam)
    value = (lam * v).sum(-1) - bound * lam.abs().sum(-1)
    scaled = torch.where(norm > 0, value / norm.clamp_min(1e-300), torch.zeros_like(value))
    return scaled.clamp_min(0.0)


def relative_gap(objective: torch.Tensor, lower_bound: torch.Tensor) -> torch.Tensor:
    """``(objective - lower_bound) / objective``, 0 where both are 0, clamped at 0 below."""
    objective = objective.to(torch.float64)
    lower_bound = lower_bound.to(torch.float64)
    diff = (objective - lower_bound).clamp_min(0.0)
    return torch.where(objective > 0, diff / objective.clamp_min(1e-300), torch.zeros_like(diff))
