"""The linear map from the AND/OR split ``(p, q)`` to the folded AND-OR interactions.

DESIGN.md §4 writes both interaction vectors as affine functions of the learned split
``p`` and the bounded noise ``q``. Solvers need that map ``K``, its transpose and the
absolute row/column sums of its matrix (for diagonal step sizes), all batched and all
``O(n * 2**n)``. The AND and OR halves are stacked so that each application costs a
single butterfly over a ``[..., 2, 2**n]`` tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .transforms import _butterfly, subset_orders


@dataclass(frozen=True)
class FoldedInteractionMap:
    """``(p, q) -> (I_and, I_or)`` after folding orders <= 1 of OR into AND.

    ``apply(p, q, v)`` gives the interactions of the game ``v`` under split ``p`` and noise
    ``q``: ``I_and = moebius(v_and)``, ``I_or = or_interactions(v_or)`` with
    ``v_and = (v + q)/2 + p`` and ``v_or = (v + q)/2 - p``, then the fold.
    """

    n_players: int
    low_order: torch.Tensor  # bool [2**n], subsets of order <= 1 (folded into AND)

    @classmethod
    def build(
        cls, n_players: int, device: torch.device | str | None = None
    ) -> FoldedInteractionMap:
        return cls(n_players, subset_orders(n_players, device) <= 1)

    def raw(self, v_and: torch.Tensor, v_or: torch.Tensor, *, absolute: bool = False):
        """Unfolded ``(I_and, I_or)`` of the two value tables (``absolute``: of ``|matrix|``)."""
        sign = 1.0 if absolute else -1.0
        stacked = torch.stack((v_and, v_or.flip(-1)), dim=-2)
        moeb = _butterfly(stacked, upward=True, sign=sign)
        i_and = moeb[..., 0, :]
        i_or = moeb[..., 1, :] if absolute else -moeb[..., 1, :]
        i_or = torch.cat((v_or[..., :1], i_or[..., 1:]), dim=-1)
        return i_and, i_or

    def raw_transpose(self, g_and: torch.Tensor, g_or: torch.Tensor, *, absolute: bool = False):
        """Transpose of :meth:`raw`: from gradients on ``(I_and, I_or)`` to ``(v_and, v_or)``."""
        sign = 1.0 if absolute else -1.0
        head = g_or[..., :1]
        tail = torch.cat((torch.zeros_like(head), g_or[..., 1:]), dim=-1)
        stacked = torch.stack((g_and, tail if absolute else -tail), dim=-2)
        back = _butterfly(stacked, upward=False, sign=sign)
        d_or = back[..., 1, :].flip(-1)
        d_or = torch.cat((d_or[..., :1] + head, d_or[..., 1:]), dim=-1)
        return back[..., 0, :], d_or

    def fold(self, i_and: torch.Tensor, i_or: torch.Tensor):
        low = self.low_order.to(i_and.dtype)
        return i_and + low * i_or, (1 - low) * i_or

    def fold_transpose(self, g_and: torch.Tensor, g_or: torch.Tensor):
        low = self.low_order.to(g_and.dtype)
        return g_and, low * g_and + (1 - low) * g_or

    def apply(self, p: torch.Tensor, q: torch.Tensor, v: torch.Tensor | None = None):
        """Folded interactions for split ``p``, noise ``q`` (and game ``v``; 0 if omitted)."""
        half = 0.5 * q if v is None else 0.5 * (v + q)
        return self.fold(*self.raw(half + p, half - p))

    def linear(self, p: torch.Tensor, q: torch.Tensor, *, absolute: bool = False):
        """The linear part ``K (p, q)`` (``absolute``: ``|K| (p, q)``, an upper bound)."""
        if absolute:
            s = p + 0.5 * q
            i_and, i_or = self.raw(s, s, absolute=True)
            low = self.low_order.to(p.dtype)
            return i_and + low * i_or, (1 - low) * i_or
        return self.apply(p, q)

    def transpose(self, y_and: torch.Tensor, y_or: torch.Tensor, *, absolute: bool = False):
        """``K^T (y_and, y_or)`` as gradients on ``(p, q)``."""
        g_and, g_or = self.fold_transpose(y_and, y_or)
        d_and, d_or = self.raw_transpose(g_and, g_or, absolute=absolute)
        if absolute:
            return d_and + d_or, 0.5 * (d_and + d_or)
        return d_and - d_or, 0.5 * (d_and + d_or)
