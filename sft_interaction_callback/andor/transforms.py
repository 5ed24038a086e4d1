"""Subset-sum (zeta) and Möbius transforms over the subset lattice, as butterflies.

A table over all subsets of ``n`` players is a tensor whose last dimension is ``2**n``;
index ``s`` holds the subset whose players are the set bits of ``s`` (DESIGN.md §3).
Every transform here runs in ``O(n * 2**n)`` time and ``O(2**n)`` extra memory per
leading index, on the input's device and dtype, and is differentiable: a dense
``2**n x 2**n`` matrix is never built.
"""

from __future__ import annotations

import torch

__all__ = [
    "n_players_of",
    "moebius",
    "zeta",
    "superset_moebius",
    "superset_zeta",
    "or_interactions",
    "or_reconstruct",
    "subset_orders",
]


def n_players_of(table: torch.Tensor) -> int:
    """The ``n`` with ``table.shape[-1] == 2**n``; raises a clear error otherwise."""
    size = table.shape[-1] if table.dim() else 0
    n = size.bit_length() - 1
    if size < 1 or (1 << n) != size:
        raise ValueError(
            f"the last dimension must have size 2**n (one entry per subset of n players); "
            f"got {size}"
        )
    return n


def _butterfly_inplace(table: torch.Tensor, *, upward: bool, sign: float) -> torch.Tensor:
    """Apply, for every player bit, ``with += sign*without`` (upward) or the reverse.

    "upward" sums over subsets (the value at ``S`` collects its subsets); the other
    direction sums over supersets. Works on a private contiguous copy, in place.
    """
    n = n_players_of(table)
    out = table.contiguous().clone()
    lead = out.shape[:-1]
    for bit in range(n):
        pairs = out.view(*lead, -1, 2, 1 << bit)
        if upward:
            pairs[..., 1, :].add_(pairs[..., 0, :], alpha=sign)
        else:
            pairs[..., 0, :].add_(pairs[..., 1, :], alpha=sign)
    return out


class _Butterfly(torch.autograd.Function):
    """Differentiable butterfly: the gradient of a subset transform is its superset twin."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, upward: bool, sign: float) -> torch.Tensor:  # type: ignore[override]
        ctx.upward, ctx.sign = upward, sign
        return _butterfly_inplace(table, upward=upward, sign=sign)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return _butterfly_inplace(grad, upward=not ctx.upward, sign=ctx.sign), None, None


def _butterfly(table: torch.Tensor, *, upward: bool, sign: float) -> torch.Tensor:
    if not torch.is_floating_point(table):
        raise TypeError(f"expected a floating-point tensor, got {table.dtype}")
    if table.requires_grad and torch.is_grad_enabled():
        return _Butterfly.apply(table, upward, sign)
    return _butterfly_inplace(table, upward=upward, sign=sign)


def moebius(v: torch.Tensor) -> torch.Tensor:
    """AND (Harsanyi) interactions ``I(S) = sum_{L subset S} (-1)^{|S|-|L|} v(L)``."""
    return _butterfly(v, upward=True, sign=-1.0)


def zeta(i: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`moebius`: ``v(T) = sum_{S subset T} I(S)``."""
    return _butterfly(i, upward=True, sign=1.0)


def superset_moebius(v: torch.Tensor) -> torch.Tensor:
    """``sum_{L superset S} (-1)^{|L|-|S|} v(L)``; the transpose of :func:`moebius`."""
    return _butterfly(v, upward=False, sign=-1.0)


def superset_zeta(i: torch.Tensor) -> torch.Tensor:
    """``sum_{L superset S} i(L)``; the transpose of :func:`zeta`."""
    return _butterfly(i, upward=False, sign=1.0)


def or_interactions(v_or: torch.Tensor) -> torch.Tensor:
    """OR interactions of DESIGN.md §4.

    ``I_or(S) = -sum_{L subset S} (-1)^{|S|-|L|} v_or(N \\ L)`` for ``S != {}`` and
    ``I_or({}) = v_or({})``. Complementing a subset reverses its index, so this is a
    Möbius transform of the reversed table.
    """
    out = -moebius(v_or.flip(-1))
    return torch.cat((v_or[..., :1], out[..., 1:]), dim=-1)


def or_reconstruct(i_or: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`or_interactions`: ``v_or(T) = I_or({}) + sum_{S cap T != {}} I_or(S)``.

    Uses ``sum_{S cap T != {}} I(S) = sum_{S != {}} I(S) - sum_{S subset N\\T, S != {}} I(S)``.
    """
    nonempty = torch.cat((torch.zeros_like(i_or[..., :1]), i_or[..., 1:]), dim=-1)
    below_complement = zeta(nonempty).flip(-1)
    return i_or[..., :1] + nonempty.sum(dim=-1, keepdim=True) - below_complement


def subset_orders(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Popcount of every subset index ``0 .. 2**n - 1`` (the order of the subset)."""
    idx = torch.arange(1 << n, device=device)
    order = torch.zeros_like(idx)
    for bit in range(n):
        order += (idx >> bit) & 1
    return order


def kron_apply(table: torch.Tensor, factor: torch.Tensor | list[list[float]]) -> torch.Tensor:
    """Apply the Kronecker power ``factor (x) ... (x) factor`` (a 2x2 matrix, one per bit).

    Every subset transform here is such a power (e.g. :func:`moebius` is
    ``[[1, 0], [-1, 1]]``); the general form also serves spectral solves. ``O(n * 2**n)``.
    """
    (a, b), (c, d) = (
        factor.tolist() if isinstance(factor, torch.Tensor) else factor  # type: ignore[misc]
    )
    n = n_players_of(table)
    out = table.contiguous().clone()
    lead = out.shape[:-1]
    for bit in range(n):
        pairs = out.view(*lead, -1, 2, 1 << bit)
        x0, x1 = pairs[..., 0, :], pairs[..., 1, :]
        keep = x0.clone()
        x0.mul_(a).add_(x1, alpha=b)
        x1.mul_(d).add_(keep, alpha=c)
    return out
