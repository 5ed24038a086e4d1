"""Solvers for the sparse AND-OR split (DESIGN.md §4).

Both minimise the L1 norm of the interactions over the split ``p`` (free) and the noise
``q`` (box ``|q| <= bound``). The problem is a linear program in ``(p, q)``; every solver
here is batched over probes and runs on the tensors' device.

* :func:`solve_reference` is the published recipe: SGD with momentum 0.9 on
  ``sum|I_and| + sum|I_or|`` (before folding), learning rate decaying geometrically by
  10x, ``q`` clipped after every step.
* :func:`solve_pdhg` is the default: a diagonally preconditioned primal-dual hybrid
  gradient method (Chambolle-Pock) on the saddle form ``min_x max_{|y|<=1} <y, Kx + g>``
  of the *folded* objective, with restarts to the running average (as in PDLP), keeping
  the best primal iterate. Every primal iterate is feasible (``p`` is free and ``q`` is
  projected onto its box), so the objective it reports is always attained.
"""

from __future__ import annotations

import math

import torch

from .operators import FoldedInteractionMap

__all__ = ["solve_reference", "solve_pdhg", "game_scale"]


def game_scale(v: torch.Tensor) -> torch.Tensor:
    """Per-probe scale ``max_T |v(T) - v({})|`` (1 for constant games), shape ``[..., 1]``."""
    scale = (v - v[..., :1]).abs().amax(dim=-1, keepdim=True)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def _folded_l1(fmap: FoldedInteractionMap, v, p, q) -> torch.Tensor:
    i_and, i_or = fmap.apply(p, q, v)
    return i_and.abs().sum(-1) + i_or.abs().sum(-1)


def solve_reference(
    v: torch.Tensor,
    bound: torch.Tensor,
    *,
    iterations: int = 20_000,
    lr: float = 1e-4,
    momentum: float = 0.9,
    lr_decay: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Published recipe: SGD on the unfolded L1 loss; returns ``(p, q)``.

    The game is divided by :func:`game_scale` first so that one learning rate serves
    models whose outputs differ in scale by orders of magnitude; ``lr`` is in those units.
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
    iterations: int = 3000,
    restart_every: int = 300,
    step_balance: float = 0.3,
    check_every: int = 50,
    work_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Restarted, preconditioned PDHG on the folded objective; returns ``(p, q)``.

    ``step_balance`` trades primal against dual step sizes (``tau * sigma`` stays at the
    Pock-Chambolle limit). ``work_dtype`` defaults to float64 on CPU and float32 on
    accelerators; the best iterate is chosen by its objective evaluated in float64.
    """
    n = v.shape[-1].bit_length() - 1
    if work_dtype is None:
        work_dtype = torch.float64 if v.device.type == "cpu" else torch.float32
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

    # Start from the better of "all AND", "all OR" and the even split.
    zero = torch.zeros_like(vs64)
    starts = [zero, 0.5 * vs64, -0.5 * vs64]
    objs = torch.stack([_folded_l1(fmap, vs64, s, zero) for s in starts])
    pick = objs.argmin(dim=0)
    p64 = torch.stack(starts)[pick, torch.arange(pick.numel()).reshape(pick.shape)]
    best_obj, best_p, best_q = objs.amin(dim=0), p64.clone(), zero.clone()

    p, q = p64.to(work_dtype), torch.zeros_like(vs)
    y_and, y_or = torch.zeros_like(vs), torch.zeros_like(vs)
    sums = [torch.zeros_like(vs) for _ in range(4)]
    count = 0
    for it in range(1, iterations + 1):
        d_p, d_q = fmap.transpose(y_and, y_or)
        p_new = p - tau_p * d_p
        q_new = torch.maximum(torch.minimum(q - tau_q * d_q, box), -box)
        k_and, k_or = fmap.linear(2 * p_new - p, 2 * q_new - q)
        y_and = (y_and + sigma_and * (k_and + g_and)).clamp_(-1.0, 1.0)
        y_or = (y_or + sigma_or * (k_or + g_or)).clamp_(-1.0, 1.0)
        p, q = p_new, q_new
        for acc, cur in zip(sums, (p, q, y_and, y_or), strict=True):
            acc.add_(cur)
        count += 1
        if restart_every and count == restart_every:
            avg = [acc / count for acc in sums]
            use_avg = (_folded_l1(fmap, vs, avg[0], avg[1]) < _folded_l1(fmap, vs, p, q))[..., None]
            p, q, y_and, y_or = (
                torch.where(use_avg, a, c) for a, c in zip(avg, (p, q, y_and, y_or), strict=True)
            )
            for acc in sums:
                acc.zero_()
            count = 0
        if it % check_every == 0 or it == iterations:
            p_chk, q_chk = p.to(torch.float64), q.to(torch.float64)
            q_chk = torch.maximum(torch.minimum(q_chk, box64), -box64)
            obj = _folded_l1(fmap, vs64, p_chk, q_chk)
            better = obj < best_obj
            best_obj = torch.where(better, obj, best_obj)
            best_p = torch.where(better[..., None], p_chk, best_p)
            best_q = torch.where(better[..., None], q_chk, best_q)
    assert math.isfinite(float(best_obj.sum())), "PDHG produced a non-finite objective"
    return best_p * scale, best_q * scale
