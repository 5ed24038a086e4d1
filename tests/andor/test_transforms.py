"""The butterflies against the definitions, shapiq, and each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sft_interaction_callback.andor import (
    moebius,
    or_interactions,
    or_reconstruct,
    subset_orders,
    superset_moebius,
    superset_zeta,
    zeta,
)

from .games import brute_moebius, brute_or, popcount, subsets_of


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_moebius_and_zeta_match_brute_force(n):
    v = torch.randn(3, 2, 1 << n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    i = moebius(v)
    assert torch.allclose(i, brute_moebius(v), atol=1e-9, rtol=0)
    brute_zeta = torch.stack(
        [sum(i[..., sub] for sub in subsets_of(s)) for s in range(1 << n)], dim=-1
    )
    assert torch.allclose(zeta(i), brute_zeta, atol=1e-9, rtol=0)
    assert torch.allclose(zeta(i), v, atol=1e-9, rtol=0)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_or_interactions_match_definition_and_universal_matching(n):
    v = torch.randn(4, 1 << n, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    i_or = or_interactions(v)
    assert torch.allclose(i_or, brute_or(v), atol=1e-9, rtol=0)
    # v_or(T) = I_or({}) + sum_{S cap T != {}} I_or(S), for every T
    rebuilt = torch.stack(
        [
            i_or[..., 0] + sum(i_or[..., s] for s in range(1, 1 << n) if s & t)
            for t in range(1 << n)
        ],
        dim=-1,
    )
    assert torch.allclose(rebuilt, v, atol=1e-9, rtol=0)
    assert torch.allclose(or_reconstruct(i_or), v, atol=1e-9, rtol=0)


def test_superset_transforms_are_transposes():
    n = 5
    eye = torch.eye(1 << n, dtype=torch.float64)
    # row j of f(eye) is f(e_j), i.e. the matrix of f transposed
    assert torch.equal(superset_moebius(eye), moebius(eye).T)
    assert torch.equal(superset_zeta(eye), zeta(eye).T)


@pytest.mark.parametrize("n", [3, 6, 8])
def test_moebius_agrees_with_shapiq_exact_computer(n):
    shapiq = pytest.importorskip("shapiq")
    rng = np.random.default_rng(n)
    values = rng.normal(size=1 << n)

    def game(coalitions: np.ndarray) -> np.ndarray:
        idx = (coalitions.astype(np.int64) * (1 << np.arange(coalitions.shape[1]))).sum(1)
        return values[idx]

    iv = shapiq.ExactComputer(game, n_players=n).moebius_transform
    ours = moebius(torch.tensor(values)).numpy()
    for players, pos in iv.interaction_lookup.items():
        s = sum(1 << p for p in players)
        assert ours[s] == pytest.approx(iv.values[pos], abs=1e-9)
    assert len(iv.interaction_lookup) == 1 << n


def test_n16_batch8_runs_without_dense_matrix():
    n = 16
    v = torch.randn(8, 1 << n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    i = moebius(v)
    # spot-check a few subsets of every order against the brute-force sum
    for s in [0, 1, 0b1011, (1 << 16) - 1 - 0b1, 0b1010_0000_0001_0110]:
        if popcount(s) > 6:
            continue
        want = sum((-1) ** (popcount(s) - popcount(sub)) * v[:, sub] for sub in subsets_of(s))
        assert torch.allclose(i[:, s], want, atol=1e-8)
    assert torch.allclose(zeta(i), v, atol=1e-8)
    assert torch.allclose(superset_zeta(superset_moebius(v)), v, atol=1e-8)


def test_dtype_device_and_batch_shape_preserved():
    v = torch.randn(2, 3, 32, dtype=torch.float32)
    for f in (moebius, zeta, or_interactions, or_reconstruct, superset_moebius):
        out = f(v)
        assert out.shape == v.shape and out.dtype == torch.float32 and out.device == v.device
    assert torch.allclose(zeta(moebius(v)), v, atol=1e-5)


def test_bad_sizes_and_dtypes_are_rejected():
    with pytest.raises(ValueError, match="2\\*\\*n"):
        moebius(torch.randn(3, 6))
    with pytest.raises(TypeError, match="floating"):
        moebius(torch.ones(8, dtype=torch.int64))


def test_transforms_are_differentiable():
    v = torch.randn(2, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(moebius, (v,))
    assert torch.autograd.gradcheck(or_interactions, (v,))


def test_subset_orders_is_popcount():
    assert subset_orders(4).tolist() == [popcount(s) for s in range(16)]


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    a=st.floats(-3, 3),
    b=st.floats(-3, 3),
)
def test_linearity_and_inverses(n, seed, a, b):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1 << n, dtype=torch.float64, generator=g)
    y = torch.randn(1 << n, dtype=torch.float64, generator=g)
    assert torch.allclose(moebius(a * x + b * y), a * moebius(x) + b * moebius(y), atol=1e-9)
    assert torch.allclose(moebius(zeta(x)), x, atol=1e-9)
    assert torch.allclose(or_interactions(or_reconstruct(x)), x, atol=1e-9)
