"""The pure math core: subset transforms, AND-OR extraction and interaction metrics.

No Hugging Face import happens here. Tables over all subsets of ``n`` players have last
dimension ``2**n`` and index ``s`` holds the subset of the set bits of ``s`` (DESIGN.md §3).
"""

from .decomposition import SOLVERS, fit_and_or
from .metrics import (
    classify,
    generalizability,
    order_histogram,
    salient,
    strength,
    uncancelled_ratio,
)
from .result import AndOrInteractions, Interaction
from .transforms import (
    moebius,
    n_players_of,
    or_interactions,
    or_reconstruct,
    subset_orders,
    superset_moebius,
    superset_zeta,
    zeta,
)

__all__ = [
    "SOLVERS",
    "AndOrInteractions",
    "Interaction",
    "classify",
    "fit_and_or",
    "generalizability",
    "moebius",
    "n_players_of",
    "or_interactions",
    "or_reconstruct",
    "order_histogram",
    "salient",
    "strength",
    "subset_orders",
    "superset_moebius",
    "superset_zeta",
    "uncancelled_ratio",
    "zeta",
]
