"""Solvers for the sparse AND-OR split (DESIGN.md §4).

Both minimise the L1 norm of the interactions over the split ``p`` (free) and the noise
``q`` (box ``|q| <= bound``). The problem is a linear program in ``(p, q)``; every solver
here is batched over probes and runs on the tensors' device.

* :func:`solve_reference` is the published recipe: SGD with momentum 0.9 on
  ``sum|I_and| + sum|I_or|`` (before folding), learning rate decaying geometrically by
  10x, ``q`` clipped after every step.
* :func:`solve_pdhg`: a diagonally preconditioned primal-dual hybrid gradient method
  (Chambolle-Pock) on the saddle form ``min_x max_{|y|<=1} <y, Kx + g>`` of the *folded*
  objective, in its reflected Halpern form with restarts, keeping the best primal
  iterate. Every primal iterate is feasible (``p`` is free and ``q`` is projected onto
  its box), so the objective it reports is always attained.
* :func:`solve_default` (``solver="admm-pdhg"``): ADMM with exact Kronecker solves for
  the split at fixed noise (:mod:`.admm`), PDHG from its result to move the noise too,
  and ADMM again.

These are approximate; the library's default is the exact LP of :mod:`.exact`, and these
serve games too large for it (``n > 12``) and comparisons. Every fit is certified by
:mod:`.certificate`, so an approximate answer says how far from optimal it may be.
"""

from __future__ import annotations

import torch

from .admm import solve_or_atoms
from .convergence import Plateau
from .operators import FoldedInteractionMap

__all__ = ["solve_default", "solve_pdhg", "solve_reference", "game_scale"]


def game_scale(v: torch.Tensor) -> torch.Tensor:
    """Per-probe scale ``max_T |v(T) - v({})|`` (1 for constant games), shape ``[..., 1]``."""
    scale = (v - v[..., :1]).abs().amax(dim=-1, keepdim=True)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def _folded_l1(fmap: FoldedInteractionMap, v, p, q) -> torch.Tensor:
    i_and, i_or = fmap.apply(p, q, v)
    return i_and.abs().sum(-1) + i_or.abs().sum(-1)


def _best_split(fmap: FoldedInteractionMap, v, candidates):
    """Per probe, the candidate ``(p, q)`` with the lowest folded objective: ``(p, q, obj)``."""
    objs = torch.stack([_folded_l1(fmap, v, p, q) for p, q in candidates])
    pick = objs.argmin(dim=0)
    rows = torch.arange(pick.numel(), device=v.device)
    p = torch.stack([c[0] for c in candidates])[pick, rows]
    q = torch.stack([c[1] for c in candidates])[pick, rows]
    return p, q, objs.amin(dim=0)


def solve_reference(
    v: torch.Tensor,
    bound: torch.Tensor,
    *,
    iterations: int = 20_000,
    lr: float = 1e-5,
    momentum: float = 0.9,
    lr_decay: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Published recipe: SGD on the unfolded L1 loss; returns ``(p, q)``.

    The game is divided by :func:`game_scale` first so that one learning rate serves
    models whose outputs differ in scale by orders of magnitude; ``lr`` is in those units.
    The default 1e-5 was the best of {1e-5, 3e-5, 1e-4, 3e-4, 1e-3} on both random and
    planted games at n = 10 (larger rates leave SGD bouncing on the L1 kinks).
    """
    fmap = FoldedInteractionMap.build(v.shape[-1].bit_length() - 1, v.device)
    scale = game_scale(v)
    vs = (v / scale).detach()
    box = (bound[..., None] / scale).detach()
    p = torch.zeros_like(vs, requires_grad=True)
    q = torch.zeros_like(vs, requires_grad=True)
    opt = torch.optim.SGD([p, q], lr=lr, momentum=momentum)
    gamma = lr_decay ** (-1.0 / max(iterations, 1))
    with torch.enable_grad():
        for step in range(iterations):
            for group in opt.param_groups:
                group["lr"] = lr * gamma**step
            half = 0.5 * (vs + q)
            i_and, i_or = fmap.raw(half + p, half - p)
            loss = i_and.abs().sum() + i_or.abs().sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                q.copy_(torch.maximum(torch.minimum(q, box), -box))
    return (p.detach() * scale), (q.detach() * scale)


@torch.no_grad()
def solve_pdhg(
    v: torch.Tensor,
    bound: torch.Tensor,
    *,
    iterations: int = 2500,
    step_balance: float = 0.3,
    reflection: float = 1.0,
    restart_ratio: float = 0.2,
    min_restart: int = 50,
    check_every: int = 10,
    work_dtype: torch.dtype | None = None,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
    return_dual: bool = False,
):
    """Reflected, restarted Halpern PDHG on the folded objective; returns ``(p, q)``.

    One PDHG step ``T`` (diagonal Pock-Chambolle step sizes; ``step_balance`` trades
    primal against dual) is iterated as ``z <- (k+1)/(k+2) ((1+r) T(z) - r z) + z0/(k+2)``
    with reflection ``r``; a probe restarts (``z0 <- T(z)``, ``k <- 0``) once its
    fixed-point residual has fallen to ``restart_ratio`` of its value at the last
    restart (checked every ``check_every`` steps). Every primal point is feasible, so the
    best one seen (its objective evaluated in float64) is returned; the loop ends early
    once no probe's best objective has moved for 30 checks. The iterations run in
    ``work_dtype`` (float32 by default: the game is normalised to unit scale first).
    ``start`` adds a candidate starting point ``(p, q)`` in the units of ``v``; the best of
    it, "all AND", "all OR" and the even split is used. ``return_dual`` also returns the
    dual direction ``lam = K_q^T y`` of the last iterate, for the certificate.
    """
    n = v.shape[-1].bit_length() - 1
    work_dtype = work_dtype or torch.float32
    scale = game_scale(v).to(torch.float64)
    vs64 = v.to(torch.float64) / scale
    box64 = bound.to(torch.float64)[..., None] / scale
    fmap = FoldedInteractionMap.build(n, v.device)

    vs, box = vs64.to(work_dtype), box64.to(work_dtype)
    g_and, g_or = fmap.apply(torch.zeros_like(vs), torch.zeros_like(vs), vs)
    ones = torch.ones_like(vs)
    rows_and, rows_or = fmap.linear(ones, ones, absolute=True)
    cols_p, cols_q = fmap.transpose(ones, ones, absolute=True)
    sigma_and = 1.0 / (rows_and.clamp_min(1e-12) * step_balance)
    sigma_or = torch.where(rows_or > 0, 1.0 / (rows_or.clamp_min(1e-12) * step_balance), 0.0)
    tau_p = step_balance / cols_p
    tau_q = step_balance / cols_q

    def pdhg_step(z: torch.Tensor) -> torch.Tensor:
        """One PDHG step on the stacked state ``[p, q, y_and, y_or]`` (``[4, ..., 2**n]``)."""
        p, q, y_and, y_or = z.unbind(0)
        d_p, d_q = fmap.transpose(y_and, y_or)
        p_new = p - tau_p * d_p
        q_new = torch.maximum(torch.minimum(q - tau_q * d_q, box), -box)
        k_and, k_or = fmap.linear(2 * p_new - p, 2 * q_new - q)
        y_and = (y_and + sigma_and * (k_and + g_and)).clamp_(-1.0, 1.0)
        y_or = (y_or + sigma_or * (k_or + g_or)).clamp_(-1.0, 1.0)
        return torch.stack((p_new, q_new, y_and, y_or))

    # Start from the best of "all AND", "all OR", the even split and ``start``.
    zero = torch.zeros_like(vs64)
    starts = [(zero, zero), (0.5 * vs64, zero), (-0.5 * vs64, zero)]
    if start is not None:
        starts.append((start[0].to(torch.float64) / scale, start[1].to(torch.float64) / scale))
    best_p, best_q, best_obj = _best_split(fmap, vs64, starts)

    z = torch.stack(
        (best_p.to(work_dtype), best_q.to(work_dtype), zero.to(work_dtype), zero.to(work_dtype))
    )
    anchor = z.clone()
    k = torch.zeros_like(vs[..., :1])
    res0 = torch.full_like(k, float("inf"))
    plateau = Plateau()
    for it in range(1, iterations + 1):
        tz = pdhg_step(z)
        checking = it % check_every == 0 or it == iterations
        if checking:  # restarts and the best iterate are decided every check_every steps
            res = (tz - z).square().sum(dim=(0, -1)).sqrt()[..., None]
        w = (k + 1) / (k + 2)
        # z <- w ((1 + r) T(z) - r z) + (1 - w) z0, in place
        z.mul_(-reflection).add_(tz, alpha=1 + reflection).mul_(w).add_((1 - w) * anchor)
        k = k + 1
        if not checking:
            continue
        res0 = torch.where(torch.isinf(res0), res, res0)
        restart = (k >= min_restart) & (res <= restart_ratio * res0)
        if bool(restart.any()):
            z = torch.where(restart, tz, z)
            anchor = torch.where(restart, tz, anchor)
            k = torch.where(restart, 0.0, k)
            res0 = torch.where(restart, float("inf"), res0)
        p_chk = tz[0].to(torch.float64)
        q_chk = torch.maximum(torch.minimum(tz[1].to(torch.float64), box64), -box64)
        obj = _folded_l1(fmap, vs64, p_chk, q_chk)
        better = obj < best_obj
        best_obj = torch.where(better, obj, best_obj)
        best_p = torch.where(better[..., None], p_chk, best_p)
        best_q = torch.where(better[..., None], q_chk, best_q)
        if plateau(best_obj):
            break
    if not bool(torch.isfinite(best_obj).all()):
        raise FloatingPointError("PDHG produced a non-finite objective")
    if return_dual:
        lam = fmap.transpose(z[2].to(torch.float64), z[3].to(torch.float64))[1]
        return best_p * scale, best_q * scale, lam
    return best_p * scale, best_q * scale


@torch.no_grad()
def solve_default(
    v: torch.Tensor,
    bound: torch.Tensor,
    *,
    iterations: int = 1500,
    admm_iterations: int = 300,
    return_dual: bool = False,
    **pdhg_options,
):
    """ADMM on the OR atoms (no noise), then PDHG from there (with noise), then ADMM again.

    The ADMM stages solve the split exactly-conditioned but with ``q`` held fixed (they
    find sparse, planted-like structure fast); PDHG moves ``p`` and ``q`` together. Each
    stage starts from the previous best, and the best split by folded objective wins.
    ``return_dual`` also returns PDHG's dual direction (for the certificate).
    """
    scale = game_scale(v).to(torch.float64)
    vs = v.to(torch.float64) / scale
    fmap = FoldedInteractionMap.build(v.shape[-1].bit_length() - 1, v.device)
    zero = torch.zeros_like(vs)
    p0 = solve_or_atoms(vs, zero, iterations=admm_iterations)
    p1, q1, lam = solve_pdhg(
        vs,
        bound / scale[..., 0],
        iterations=iterations,
        start=(p0, zero),
        return_dual=True,
        **pdhg_options,
    )
    p2 = solve_or_atoms(vs, q1, iterations=admm_iterations)
    candidates = [(p0, zero), (p1, q1), (p2, q1)]
    p, q, _ = _best_split(fmap, vs, candidates)
    if return_dual:
        return p * scale, q * scale, lam
    return p * scale, q * scale
