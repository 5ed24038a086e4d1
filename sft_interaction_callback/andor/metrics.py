"""Salience, the removed/preserved/emerged classification, and the quality metrics.

All functions are per probe: they reduce over the last dimension (one entry per subset,
DESIGN.md §3) and keep the leading ones. To treat AND and OR interactions together, the
caller concatenates them along the last dimension and says so (``concatenated=True``)
where positions matter (:func:`salient`, :func:`order_histogram`).
"""

from __future__ import annotations

import torch

from .transforms import n_players_of, subset_orders

__all__ = [
    "salient",
    "uncancelled_ratio",
    "generalizability",
    "order_histogram",
    "classify",
    "strength",
]


def _orders(size: int, concatenated: bool, device) -> torch.Tensor:
    """Order (popcount) of the subset at every position of one table or of AND|OR."""
    n = n_players_of(torch.empty(size // 2 if concatenated else size))
    orders = subset_orders(n, device)
    return orders.repeat(2) if concatenated else orders


def salient(
    i: torch.Tensor,
    *,
    rel: float | None = 0.05,
    abs: float | None = None,  # noqa: A002
    concatenated: bool = False,
) -> torch.Tensor:
    """Boolean mask of salient subsets: ``|I(S)| >= tau``, never the empty set.

    ``tau = rel * max_{S != {}} |I(S)|`` per probe (DESIGN.md §5); with ``abs`` given, the
    absolute threshold is used instead (``rel=None``) or as well (the larger of the two).
    A probe whose interactions are all zero has no salient subset. Pass
    ``concatenated=True`` for AND and OR concatenated (``AndOrInteractions.concatenated()``):
    the threshold is then relative to the maximum over both types, and neither empty set
    is marked.
    """
    if rel is None and abs is None:
        raise ValueError("salient() needs a relative threshold `rel`, an absolute `abs`, or both")
    if rel is not None and not 0 < rel <= 1:
        raise ValueError(f"rel must be in (0, 1], got {rel}")
    if abs is not None and abs < 0:
        raise ValueError(f"abs must be >= 0, got {abs}")
    empty = _orders(i.shape[-1], concatenated, i.device) == 0
    # The empty set is never salient and does not set the threshold either: for a language
    # model I_and({}) = v({}) is the whole masked output and would dwarf every interaction.
    mag = i.abs().masked_fill(empty, 0)
    tau = torch.zeros_like(mag[..., :1])
    if rel is not None:
        tau = rel * mag.amax(dim=-1, keepdim=True)
    if abs is not None:
        tau = torch.clamp(tau, min=float(abs))
    return (mag >= tau) & (mag > 0)


def strength(i: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Total strength ``sum_{S in mask} |I(S)|`` per probe."""
    return (i.abs() * mask).sum(dim=-1)


def uncancelled_ratio(i: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``rho = |sum_{S in mask} I(S)| / sum_{S in mask} |I(S)|`` per probe (NaN if empty).

    Near 0 the selected effects cancel each other, as noise does (DESIGN.md §6).
    """
    num = (i * mask).sum(dim=-1).abs()
    den = strength(i, mask)
    return torch.where(den > 0, num / torch.where(den > 0, den, 1), torch.nan)


def generalizability(
    i: torch.Tensor, mask: torch.Tensor, ref_i: torch.Tensor, ref_mask: torch.Tensor
) -> torch.Tensor:
    """``gamma``: the share of strength in ``mask`` that a reference model shares.

    ``G(S) = 1`` when ``S`` is salient for the reference (``ref_mask``) with the same sign,
    so ``gamma = sum |I(S)| G(S) / sum |I(S)|`` over ``S`` in ``mask``; NaN if empty.
    Types are matched by position: concatenate AND and OR the same way for both models.
    """
    if ref_i.shape[-1] != i.shape[-1]:
        raise ValueError(
            "the reference interactions must cover the same players as the model's "
            f"(last dimension {ref_i.shape[-1]} vs {i.shape[-1]})"
        )
    shared = ref_mask & (torch.sign(ref_i) == torch.sign(i)) & (i != 0)
    num = strength(i, mask & shared)
    den = strength(i, mask)
    return torch.where(den > 0, num / torch.where(den > 0, den, 1), torch.nan)


def order_histogram(
    i: torch.Tensor, mask: torch.Tensor, *, concatenated: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Count and strength of the masked subsets by order: two tensors ``[..., n + 1]``.

    Works on one table (last dim ``2**n``) or, with ``concatenated=True``, on AND and OR
    concatenated (``2 * 2**n``), adding both types up per order.
    """
    orders = _orders(i.shape[-1], concatenated, i.device)
    n = int(orders.max())
    onehot = torch.nn.functional.one_hot(orders, n + 1).to(i.dtype)  # [size, n+1]
    sel = mask.to(i.dtype)
    return sel @ onehot, (i.abs() * sel) @ onehot


def classify(
    base_mask: torch.Tensor,
    preserved_mask: torch.Tensor,
    current_mask: torch.Tensor,
    *,
    by_subset: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Removed, preserved and newly emerged subsets at one checkpoint (DESIGN.md §5).

    ``base_mask`` is ``Omega_0`` (before SFT), ``preserved_mask`` is ``P_{t-1}`` (pass
    ``base_mask`` at the first checkpoint) and ``current_mask`` is ``Omega_t``:
    ``R_t = Omega_0 - Omega_t``, ``P_t = P_{t-1} & Omega_t``, ``E_t = Omega_t - P_t``.

    ``by_subset=True`` reads the masks as AND then OR (last dim ``2 * 2**n``) and matches
    interactions by subset whatever their type (a subset salient as AND at one checkpoint
    and as OR at the next is preserved); each returned set holds the salient entries, of
    either type, of its subsets (removed: at the base; preserved, emerged: now).
    """
    if not (base_mask.shape == preserved_mask.shape == current_mask.shape):
        raise ValueError(
            "classify() needs masks of one shape; got "
            f"{tuple(base_mask.shape)}, {tuple(preserved_mask.shape)}, {tuple(current_mask.shape)}"
        )
    if by_subset:
        half = base_mask.shape[-1] // 2

        def fold(m: torch.Tensor) -> torch.Tensor:
            return m[..., :half] | m[..., half:]

        r, p, e = classify(fold(base_mask), fold(preserved_mask), fold(current_mask))
        return (
            torch.cat((r, r), -1) & base_mask,
            torch.cat((p, p), -1) & current_mask,
            torch.cat((e, e), -1) & current_mask,
        )
    removed = base_mask & ~current_mask
    preserved = preserved_mask & current_mask
    emerged = current_mask & ~preserved
    return removed, preserved, emerged
