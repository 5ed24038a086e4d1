"""fit_and_or against its definition: exact reconstruction, the noise bound, planted
interactions, an exact LP optimum (scipy HiGHS) and the published SGD recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from sft_interaction_callback.andor import fit_and_or, or_interactions, salient
from sft_interaction_callback.andor.solvers import solve_default

from .games import popcount, random_planted


def lp_optimum(v: torch.Tensor, noise_bound: float = 0.02) -> float:
    """The folded L1 optimum as an LP built from the atoms themselves (no transforms).

    ``v(T) + q(T) = sum_S x_S 1[S subset T] + sum_{|S|>=2} y_S 1[S cap T != {}]``; order
    <= 1 OR atoms equal AND atoms, which is exactly the fold.
    """
    size = v.shape[-1]
    ts = np.arange(size)
    and_atoms = np.array([((ts & s) == s) for s in range(size)], dtype=float).T
    or_sets = [s for s in range(size) if popcount(s) >= 2]
    or_atoms = np.array([((ts & s) != 0) for s in or_sets], dtype=float).T
    k = size + len(or_sets)
    atoms = np.hstack([and_atoms, or_atoms])
    # variables: plus part (k), minus part (k), q (size)
    a_eq = np.hstack([atoms, -atoms, -np.eye(size)])
    b = noise_bound * abs(float(v[-1] - v[0]))
    cost = np.concatenate([np.ones(2 * k), np.zeros(size)])
    bounds = [(0, None)] * (2 * k) + [(-b, b)] * size
    res = linprog(cost, A_eq=a_eq, b_eq=v.numpy(), bounds=bounds, method="highs")
    assert res.status == 0
    return float(res.fun)


def test_reconstruction_is_exact_and_noise_bound_holds():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 3, 64, dtype=torch.float64, generator=g) * 5
    for solver, opts in [
        ("default", {}),
        ("pdhg", {"iterations": 300}),
        ("reference", {"iterations": 300}),
    ]:
        r = fit_and_or(v, solver=solver, **opts)
        assert r.i_and.shape == r.i_or.shape == r.q.shape == v.shape
        rebuilt = r.reconstruct()
        rel = (rebuilt - (v + r.q)).abs().max() / (v + r.q).abs().max()
        assert rel <= 1e-6, solver
        bound = 0.02 * (v[..., -1] - v[..., 0]).abs()
        assert (r.q.abs() <= bound[..., None] * (1 + 1e-12)).all(), solver
        low_order = torch.tensor([popcount(s) <= 1 for s in range(64)])
        assert (r.i_or[..., low_order] == 0).all(), "low-order OR must be folded into AND"


def test_interactions_follow_the_design_formulas_for_the_fitted_split():
    v = torch.randn(3, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    r = fit_and_or(v, iterations=200)
    v_or = 0.5 * (v + r.q) - r.p
    raw_or = or_interactions(v_or)
    low = torch.tensor([popcount(s) <= 1 for s in range(32)])
    assert torch.allclose(r.i_or[..., ~low], raw_or[..., ~low], atol=1e-9)


def test_float32_input_keeps_dtype_and_reconstructs():
    v = torch.randn(4, 128, generator=torch.Generator().manual_seed(2)) * 10
    r = fit_and_or(v, iterations=300)
    assert r.i_and.dtype == torch.float32
    rel = (r.reconstruct() - (v + r.q)).abs().max() / v.abs().max()
    assert rel < 1e-5


@pytest.mark.parametrize("seed", range(4))
def test_default_reaches_the_exact_lp_optimum_on_small_games(seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(5, 32, dtype=torch.float64, generator=g)
    if seed % 2:
        v = torch.stack(
            [random_planted(5, 2, 2, seed=seed * 10 + k, noise=0.05)[0] for k in range(5)]
        )
    got = fit_and_or(v).objective()
    want = torch.tensor([lp_optimum(row) for row in v], dtype=torch.float64)
    assert (got >= want - 1e-6).all(), "no split can beat the LP optimum"
    assert ((got - want) / want).max() < 1.5e-2


@pytest.mark.parametrize("seed", range(3))
def test_planted_noise_free_games_are_recovered(seed):
    n = 8
    games = [random_planted(n, 3, 3, seed=seed * 100 + k) for k in range(6)]
    v = torch.stack([g for g, _, _ in games])
    r = fit_and_or(v)
    planted_l1 = torch.tensor(
        [sum(abs(c) for _, c in a) + sum(abs(c) for _, c in o) for _, a, o in games],
        dtype=torch.float64,
    )
    span = (v[:, -1] - v[:, 0]).abs()
    assert (r.objective() <= planted_l1 + 0.01 * span + 1e-9).all()


def test_planted_terms_come_out_salient_with_their_sign():
    n = 8
    games = [random_planted(n, 3, 2, seed=seed, noise=0.01) for seed in range(4)]
    r = fit_and_or(torch.stack([v for v, _, _ in games]))
    both = r.concatenated()
    mask = salient(both, concatenated=True)
    for k, (_, and_terms, or_terms) in enumerate(games):
        for players, coef in and_terms:
            s = sum(1 << p for p in players)
            assert mask[k, s] and torch.sign(both[k, s]) == np.sign(coef), (k, players)
        for players, coef in or_terms:
            s = (1 << n) + sum(1 << p for p in players)
            assert mask[k, s] and torch.sign(both[k, s]) == np.sign(coef), (k, players)


def test_default_never_worse_than_reference_recipe():
    g = torch.Generator().manual_seed(3)
    random_games = torch.randn(6, 64, dtype=torch.float64, generator=g)
    planted = torch.stack([random_planted(6, 2, 2, seed=k, noise=0.02)[0] for k in range(6)])
    for v in (random_games, planted):
        bound = 0.02 * (v[:, -1] - v[:, 0]).abs()
        ours = fit_and_or(v).objective()
        ref = fit_and_or(v, solver="reference", iterations=3000)
        assert (ref.q.abs() <= bound[:, None] * (1 + 1e-12)).all()
        assert (ours <= ref.objective() * (1 + 1e-6)).all()


def test_default_solver_returns_feasible_split_in_game_units():
    v = 1000.0 * torch.randn(2, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    bound = 0.02 * (v[:, -1] - v[:, 0]).abs()
    p, q = solve_default(v, bound)
    assert (q.abs() <= bound[:, None] * (1 + 1e-9)).all()
    assert p.abs().max() < 1e6


def test_bad_inputs_are_rejected_with_clear_messages():
    with pytest.raises(ValueError, match="non-finite"):
        fit_and_or(torch.tensor([0.0, float("nan"), 1.0, 2.0]))
    with pytest.raises(ValueError, match="unknown solver"):
        fit_and_or(torch.zeros(4), solver="magic")
    with pytest.raises(ValueError, match="noise_bound"):
        fit_and_or(torch.zeros(4), noise_bound=-1)
    with pytest.raises(TypeError, match="floating"):
        fit_and_or(torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="2\\*\\*n"):
        fit_and_or(torch.zeros(6))


def test_constant_game_has_only_the_empty_set():
    r = fit_and_or(torch.full((1, 16), 3.0, dtype=torch.float64))
    assert r.i_and[0, 0].item() == pytest.approx(3.0)
    assert r.objective().item() == pytest.approx(3.0)
