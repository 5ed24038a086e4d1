"""Test games with known structure: brute-force definitions and planted interactions."""

from __future__ import annotations

import itertools

import torch


def subsets_of(s: int):
    """All subsets of the bitmask ``s`` (including empty and ``s``)."""
    r = s
    while True:
        yield r
        if r == 0:
            return
        r = (r - 1) & s


def popcount(s: int) -> int:
    return bin(s).count("1")


def brute_moebius(v: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(v)
    for s in range(v.shape[-1]):
        for sub in subsets_of(s):
            out[..., s] += (-1) ** (popcount(s) - popcount(sub)) * v[..., sub]
    return out


def brute_or(v_or: torch.Tensor) -> torch.Tensor:
    """OR interactions straight from DESIGN.md §4 (``N \\ L`` spelled out)."""
    size = v_or.shape[-1]
    full = size - 1
    out = torch.zeros_like(v_or)
    out[..., 0] = v_or[..., 0]
    for s in range(1, size):
        for sub in subsets_of(s):
            out[..., s] -= (-1) ** (popcount(s) - popcount(sub)) * v_or[..., full & ~sub]
    return out


def planted_game(n: int, and_terms, or_terms, noise: float = 0.0, seed: int = 0):
    """``v(T) = sum a*1[S subset T] + sum b*1[S cap T != {}] + noise``.

    ``and_terms``/``or_terms`` are lists of ``(players, coefficient)``.
    """
    idx = torch.arange(1 << n)
    v = torch.zeros(1 << n, dtype=torch.float64)
    for players, a in and_terms:
        s = sum(1 << p for p in players)
        v += a * ((idx & s) == s)
    for players, b in or_terms:
        s = sum(1 << p for p in players)
        v += b * ((idx & s) != 0)
    if noise:
        g = torch.Generator().manual_seed(seed)
        v += noise * torch.randn(1 << n, generator=g, dtype=torch.float64)
    return v


def random_planted(n: int, k_and: int, k_or: int, seed: int, noise: float = 0.0):
    """A planted game with random distinct term supports of order 2..3; returns terms too."""
    g = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    and_terms, or_terms = [], []
    combos = [c for k in (2, 3) for c in itertools.combinations(range(n), k)]
    while len(and_terms) + len(or_terms) < k_and + k_or:
        players = combos[int(torch.randint(len(combos), (1,), generator=g))]
        mask = sum(1 << p for p in players)
        if mask in seen:
            continue
        seen.add(mask)
        coef = float(torch.empty(1).uniform_(1.0, 3.0, generator=g))
        coef *= 1 if torch.rand(1, generator=g) < 0.5 else -1
        (and_terms if len(and_terms) < k_and else or_terms).append((players, coef))
    return planted_game(n, and_terms, or_terms, noise, seed), and_terms, or_terms
