"""The sparse AND-OR decomposition of a game (DESIGN.md §4): pick a solver, certify its answer."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from .certificate import dual_lower_bound, relative_gap
from .exact import EXACT_MAX_PLAYERS, solve_exact
from .operators import FoldedInteractionMap
from .result import AndOrInteractions
from .solvers import solve_default, solve_pdhg, solve_reference
from .transforms import n_players_of

__all__ = ["AndOrInteractions", "fit_and_or", "resolve_solver", "SOLVERS"]

SOLVERS = ("default", "exact", "admm-pdhg", "pdhg", "reference")
_EXACT_OPTIONS = frozenset({"tie_break", "method", "threads", "time_limit"})
_log = logging.getLogger(__name__)


def _highs_available() -> bool:
    try:
        import highspy  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_solver(solver: str, n_players: int) -> str:
    """The solver that ``solver`` means for a game of ``n_players``.

    ``"default"`` is the exact canonical LP (:mod:`.exact`) up to
    ``EXACT_MAX_PLAYERS`` players, and ``"admm-pdhg"`` beyond (or, with a warning, when
    ``highspy`` is not installed); the certificate tells how close the latter came.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if solver != "default":
        return solver
    if n_players > EXACT_MAX_PLAYERS:
        return "admm-pdhg"
    if not _highs_available():
        warnings.warn(
            "highspy is not installed, so fit_and_or() falls back to the approximate "
            "'admm-pdhg' solver (its certified gap is in the result); pip install highspy",
            RuntimeWarning,
            stacklevel=3,
        )
        return "admm-pdhg"
    return "exact"


def _solve(name: str, work: torch.Tensor, bound: torch.Tensor, options: dict[str, Any]):
    """``(p, q, lam)`` from the named solver (``lam`` None where it has no dual)."""
    if name == "exact":
        exact_opts = {k: v for k, v in options.items() if k in _EXACT_OPTIONS}
        fallback_opts = {k: v for k, v in options.items() if k not in _EXACT_OPTIONS}
        p, q, lam, statuses = solve_exact(work, bound, **exact_opts)
        failed = [i for i, status in enumerate(statuses) if status != "Optimal"]
        if failed:
            _log.warning(
                "exact AND-OR solver ended with %s on %d probe(s); using admm-pdhg there "
                "(see the result's gap)",
                sorted({statuses[i] for i in failed}),
                len(failed),
            )
            rows = torch.tensor(failed, device=work.device)
            p2, q2, lam2 = solve_default(work[rows], bound[rows], return_dual=True, **fallback_opts)
            p[rows], q[rows], lam[rows] = p2, q2, lam2
        return p, q, lam
    if name == "admm-pdhg":
        return solve_default(work, bound, return_dual=True, **options)
    if name == "pdhg":
        return solve_pdhg(work, bound, return_dual=True, **options)
    p, q = solve_reference(work, bound, **options)
    return p, q, None


def fit_and_or(
    v: torch.Tensor,
    *,
    noise_bound: float = 0.02,
    solver: str = "default",
    **options: Any,
) -> AndOrInteractions:
    """Extract sparse AND-OR interactions from the values of all ``2**n`` masks.

    ``v[..., s]`` is the model's value on the mask keeping the players in bits of ``s``.
    The noise ``q`` obeys ``|q_T| <= noise_bound * |v(N) - v({})|`` per probe.

    ``solver``: ``"default"`` (``"exact"`` up to 12 players, else ``"admm-pdhg"``);
    ``"exact"``, the canonical optimum of :mod:`.exact` (options: ``tie_break``,
    ``method``, ``threads``, ``time_limit``; other options go to its ``admm-pdhg``
    fallback); ``"admm-pdhg"`` / ``"pdhg"`` (fast, batched, approximate; options:
    ``iterations``, ``step_balance``, ...); or ``"reference"`` (the published SGD recipe;
    options: ``iterations``, ``lr``, ``momentum``, ``lr_decay``).

    Every result is certified: ``lower_bound`` is a lower bound on the optimum from a
    dual-feasible point and ``gap = (objective - lower_bound) / objective``, per probe.
    Results keep ``v``'s dtype and device; the solve runs in float64.
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
    name = resolve_solver(solver, n)

    lead = v.shape[:-1]
    work = v.reshape(-1, 1 << n).to(torch.float64)
    bound = noise_bound * (work[:, -1] - work[:, 0]).abs()
    p, q, lam = _solve(name, work, bound, dict(options))
    q = torch.maximum(torch.minimum(q, bound[:, None]), -bound[:, None])
    fmap = FoldedInteractionMap.build(n, work.device)
    i_and, i_or = fmap.apply(p, q, work)
    objective = i_and.abs().sum(-1) + i_or.abs().sum(-1)
    # The sign pattern of the answer is a dual direction too; keep the better bound.
    sign_lam = fmap.transpose(torch.sign(i_and), torch.sign(i_or))[1]
    lower = dual_lower_bound(work, bound, sign_lam)
    if lam is not None:
        lower = torch.maximum(lower, dual_lower_bound(work, bound, lam))
    lower = torch.minimum(lower, objective)

    def back(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(*lead, 1 << n).to(v.dtype)

    return AndOrInteractions(
        v=v,
        i_and=back(i_and),
        i_or=back(i_or),
        p=back(p),
        q=back(q),
        n_players=n,
        lower_bound=lower.reshape(lead).to(v.dtype),
        gap=relative_gap(objective, lower).reshape(lead).to(v.dtype),
        meta={"solver": name, "noise_bound": noise_bound},
    )
