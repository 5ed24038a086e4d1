"""The pieces of the tracker that issue 13 changed, with the reasons (DESIGN.md §9).

**Debounced categories** (``categories="debounced"``, default): an interaction's salience
``D_t`` changes only once the raw salience ``Omega_t`` has taken the new value at two
consecutive probe points (``D_t = Omega_t`` where ``Omega_t == Omega_{t-1}``, else
``D_{t-1}``; ``D_0 = Omega_0``), and the §5 sets are computed on ``D``:
``R_t = Omega_0 - D_t``, ``P_t = P_{t-1} & D_t``, ``E_t = D_t - P_t``. A single flicker
below (or above) the threshold therefore changes nothing, and the preserved set no longer
ratchets on noise (with raw salience, one dip and an interaction can only come back as
"emerged", so the emerged floor grows with the number of probe points); a real change is
reported one probe point later. A 2-point debounce was chosen over a hysteresis band
because it adds no second threshold to tune, works the same for relative and absolute
salience, and is what the measurements of issue 13 (floor and ratchet cut 2-3x, 97-100%
of the removal kept) were made with. ``categories="design"`` uses the raw ``Omega_t``.

**Pooled noise signal** (``noise_signal="pooled"``, default)::

    noise = sum_p sum_{S in N_t,p} |I_t(S)|  /  sum_p sum_{S != {}} |I_t,p(S)|

the strength share of the noise-like emerged interactions ``N_t`` (see the tracker),
pooled over probes: each probe weighs by its total strength instead of each per-probe
ratio weighing the same. The design's ``(1 - rho)`` factor is left out: it is exactly 0
for a noise set that is empty, single or one-signed, which gave the old signal a floor of
exactly 0 and most of its point-to-point jitter. The pooled signal is 0 only when no
probe has any noise-like emerged interaction. ``rho`` is still logged per category.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..andor.transforms import n_players_of

#: ``"debounced"``: salience must hold (or fail) at two consecutive probe points before an
#: interaction changes category; ``"design"``: DESIGN.md §5 on the raw salient sets.
CATEGORY_MODES = ("debounced", "design")
#: ``"pooled"``: strength of noise-like emerged interactions over total strength, pooled
#: over probes; ``"design"``: DESIGN.md §7, per-probe ``(1 - rho)``-weighted, averaged.
NOISE_SIGNALS = ("pooled", "design")

__all__ = ["CATEGORY_MODES", "NOISE_SIGNALS", "debounce", "pooled_share"]


def debounce(raw: torch.Tensor, prev_raw: torch.Tensor, stable: torch.Tensor) -> torch.Tensor:
    """``D_t``: the raw mask where it agrees with the previous raw mask, else ``D_{t-1}``."""
    prev_raw, stable = prev_raw.to(raw.device), stable.to(raw.device)
    return torch.where(raw == prev_raw, raw, stable)


def pooled_share(part: torch.Tensor, total: torch.Tensor) -> float:
    """``sum(part) / sum(total)`` over probes (0 when the total is 0)."""
    den = float(total.sum())
    return float(part.sum()) / den if den > 0 else 0.0


def _as_table(first: Any, second: Any, what: str) -> torch.Tensor:
    """AND and OR interactions as one ``[num_probes, 2 * 2**n]`` table (AND then OR).

    Accepts an ``AndOrInteractions`` (anything with ``i_and`` / ``i_or``), a pair, or two
    tensors ``[num_probes, 2**n]`` (a single probe ``[2**n]`` is allowed).
    """
    if second is None:
        if hasattr(first, "i_and") and hasattr(first, "i_or"):
            first, second = first.i_and, first.i_or
        elif isinstance(first, (tuple, list)) and len(first) == 2:
            first, second = first
        else:
            raise TypeError(
                f"{what} needs an AndOrInteractions, or the AND and OR interaction tensors "
                "[num_probes, 2**n] as two arguments"
            )
    if not isinstance(first, torch.Tensor) or not isinstance(second, torch.Tensor):
        raise TypeError(f"{what}: AND and OR interactions must be torch tensors")
    if first.shape != second.shape:
        raise ValueError(
            f"{what}: AND and OR interactions must have one shape, got "
            f"{tuple(first.shape)} and {tuple(second.shape)}"
        )
    if first.dim() == 1:
        first, second = first[None], second[None]
    if first.dim() != 2:
        raise ValueError(
            f"{what}: expected interactions of shape [num_probes, 2**n], got {tuple(first.shape)}"
        )
    n_players_of(first)
    if not (torch.is_floating_point(first) and torch.is_floating_point(second)):
        raise TypeError(f"{what}: interactions must be floating-point tensors")
    table = torch.cat((first, second), dim=-1).detach()
    table = table.to(torch.promote_types(table.dtype, torch.float32))
    if not torch.isfinite(table).all():
        raise ValueError(f"{what}: interactions contain NaN or inf")
    return table


def _nanmean(x: torch.Tensor) -> float:
    """Mean over probes where defined; NaN if defined nowhere (no warning)."""
    ok = ~torch.isnan(x)
    if not bool(ok.any()):
        return math.nan
    return float(x[ok].mean())


def _ratio(num: torch.Tensor, den: torch.Tensor, empty: float) -> torch.Tensor:
    """``num / den`` where ``den > 0``, ``empty`` elsewhere."""
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, torch.full_like(num, empty))
