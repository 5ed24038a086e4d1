"""The exact, canonical AND-OR fit: one small linear program per probe, solved by HiGHS.

Why an LP solver: the folded L1 problem (DESIGN.md §4, :mod:`.certificate`) is a linear
program whose sparse optima are exactly where first-order methods stall (their iterates
hover around a degenerate vertex). HiGHS (through ``highspy``, MIT-licensed, also the
engine of ``scipy.optimize.linprog``) solves it to optimality in milliseconds at
``n <= 8`` and about a second at ``n = 10`` when the problem is written in Möbius
coordinates, where it is sparse (``O(3**n)`` non-zeros instead of ``O(4**n)``):

    x_R - sum_{S superset R, |S|>=2} (-1)^{|R|} y_S - (M q)_R = (M v)_R    (every R),

with ``M`` the Möbius matrix, ``x`` the folded AND interactions, ``y`` the OR ones of
order >= 2 and ``|q| <= b`` the bounded noise (rows with ``R = {}`` carry no ``y``).

**The canonical answer.** The L1 problem is degenerate: many splits reach the optimum.
Among them we return the one that minimises a fixed tie-break, by solving

    min  sum_S w_S |x_S| + sum_S w'_S |y_S|,   w = 1 + eps * t,   0 <= t < 1,

where ``t`` grows with the order of the subset (less mass on high orders), puts AND
before OR at equal order, and orders subsets of equal order and type by a fixed
pseudo-random key. For a generic key this weighted LP has a unique optimum for every
game (its edge directions depend on the constraint matrix only), so the answer does not
depend on the solver's path or on which other probes share the batch, and it moves
continuously with the values wherever the optimum stays unique. Its plain L1 objective
is within ``eps`` (relative) of the optimum; the certificate (:mod:`.certificate`)
measures the actual gap from HiGHS's dual values. Each probe is solved from scratch (no
warm start from another probe), single-threaded inside HiGHS, probes in parallel threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from ..cpus import usable_cpus
from .transforms import moebius, or_reconstruct, subset_orders, superset_moebius

__all__ = ["solve_exact", "tie_break_keys", "EXACT_MAX_PLAYERS"]

EXACT_MAX_PLAYERS = 12  # 3**12 = 531k non-zeros; beyond, the LP takes minutes per probe


def _unit_hash(keys: np.ndarray) -> np.ndarray:
    """splitmix64 of ``keys`` mapped to ``[0, 1)``: a fixed, platform-independent key with
    no linear structure (a key linear in the subset index would tie on lattice moves)."""
    z = keys.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def tie_break_keys(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``t`` in ``[0, 1)`` for every AND subset and every OR subset (index = subset).

    ``t = (order + 0.5 [OR] + 0.45 hash(S, type)) / (n + 1)``: increasing in the order,
    AND before OR at equal order, then a fixed pseudo-random key that separates subsets of
    the same order and type.
    """
    subsets = np.arange(1 << n, dtype=np.uint64)
    order = np.array([bin(s).count("1") for s in range(1 << n)], dtype=np.float64)
    keys = []
    for is_or in (0, 1):
        frac = _unit_hash(subsets * np.uint64(2) + np.uint64(is_or))
        keys.append((order + 0.5 * is_or + 0.45 * frac) / (n + 1))
    return keys[0], keys[1]


@lru_cache(maxsize=8)
def _structure(n: int, eps: float):
    """The constraint matrix (CSC arrays) and costs of the Möbius-coordinate LP for ``n``."""
    import scipy.sparse as sp

    size = 1 << n
    mob = sp.csc_matrix(np.array([[1.0, 0.0], [-1.0, 1.0]]))
    h2 = sp.csc_matrix(np.array([[1.0, 1.0], [0.0, -1.0]]))
    m_mat = sp.csc_matrix(np.ones((1, 1)))
    h_mat = sp.csc_matrix(np.ones((1, 1)))
    for _ in range(n):
        m_mat = sp.kron(mob, m_mat, format="csc")
        h_mat = sp.kron(h2, h_mat, format="csc")
    order = subset_orders(n).numpy()
    or_sets = np.flatnonzero(order >= 2)
    h_mat = h_mat[:, or_sets].tolil()
    h_mat[0, :] = 0.0  # the empty row does not depend on the OR atoms
    h_mat = h_mat.tocsc()
    h_mat.eliminate_zeros()
    eye = sp.identity(size, format="csc")
    a_mat = sp.hstack([eye, -eye, -h_mat, h_mat, -m_mat], format="csc")
    t_and, t_or = tie_break_keys(n)
    w_and, w_or = 1.0 + eps * t_and, 1.0 + eps * t_or[or_sets]
    cost = np.concatenate([w_and, w_and, w_or, w_or, np.zeros(size)])
    return a_mat, cost, or_sets


def _new_highs(highspy: Any) -> Any:
    """A bare HiGHS instance. ``highspy.Highs`` (the Python wrapper) prints a banner to
    stdout from native code when created and wires Python callbacks we do not use; its
    core class does neither. Falls back to the wrapper where the core is not exposed."""
    core = getattr(getattr(highspy, "_core", None), "_Highs", None)
    return core() if core is not None else highspy.Highs()


def _solve_one(n: int, eps: float, rhs: np.ndarray, bound: float, method: str, time_limit: float):
    """One probe: ``(x, y_or_sets, q, row_duals, status)`` in normalised units."""
    import highspy

    a_mat, cost, or_sets = _structure(n, eps)
    size, k = 1 << n, len(or_sets)
    n_abs = 2 * size + 2 * k
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = a_mat.shape[1], size
    lp.col_cost_ = cost
    lp.col_lower_ = np.concatenate([np.zeros(n_abs), np.full(size, -bound)])
    lp.col_upper_ = np.concatenate([np.full(n_abs, np.inf), np.full(size, bound)])
    lp.row_lower_ = rhs
    lp.row_upper_ = rhs
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = a_mat.indptr
    lp.a_matrix_.index_ = a_mat.indices
    lp.a_matrix_.value_ = a_mat.data
    solver = _new_highs(highspy)
    for key, value in (
        ("output_flag", False),
        ("threads", 1),
        ("solver", method),
        ("random_seed", 0),
        ("primal_feasibility_tolerance", 1e-9),
        ("dual_feasibility_tolerance", 1e-9),
        ("ipm_optimality_tolerance", 1e-10),
        ("time_limit", float(time_limit)),
    ):
        solver.setOptionValue(key, value)
    solver.passModel(lp)
    solver.run()
    status = solver.modelStatusToString(solver.getModelStatus())
    sol = solver.getSolution()
    col = np.asarray(sol.col_value, dtype=np.float64)
    duals = np.asarray(sol.row_dual, dtype=np.float64)
    if col.size != a_mat.shape[1]:  # no solution at all (should not happen: always feasible)
        return None, None, None, None, status
    x = col[:size] - col[size : 2 * size]
    y = col[2 * size : 2 * size + k] - col[2 * size + k : n_abs]
    q = col[n_abs:]
    return x, y, q, duals, status


def solve_exact(
    v: torch.Tensor,
    bound: torch.Tensor,
    *,
    tie_break: float = 1e-4,
    method: str = "ipm",
    threads: int | None = None,
    time_limit: float = 600.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Canonical exact split of every game: ``(p, q, lam, statuses)``.

    ``v``: ``[B, 2**n]`` (float64, any scale), ``bound``: ``[B]``. ``lam`` is a dual
    direction for :func:`.certificate.dual_lower_bound` (value coordinates). ``method``:
    HiGHS's ``"ipm"`` (with crossover to a vertex) or ``"simplex"``; ``threads``: probes
    solved at once (default: the CPUs this process may use, at most 8).
    """
    n = v.shape[-1].bit_length() - 1
    if n > EXACT_MAX_PLAYERS:
        raise ValueError(
            f"the exact solver handles n <= {EXACT_MAX_PLAYERS} players (got {n}); "
            "use solver='admm-pdhg' for larger games"
        )
    work = v.detach().to("cpu", torch.float64)
    scale = (work - work[..., :1]).abs().amax(dim=-1, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    vs = work / scale
    box = (bound.detach().to("cpu", torch.float64) / scale[:, 0]).tolist()
    rhs = moebius(vs).numpy()
    if threads is None:
        threads = min(8, usable_cpus())
    jobs = [(n, float(tie_break), rhs[i], box[i], method, time_limit) for i in range(len(box))]
    if threads > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(jobs))) as pool:
            results = list(pool.map(lambda job: _solve_one(*job), jobs))
    else:
        results = [_solve_one(*job) for job in jobs]

    size = 1 << n
    _, _, or_sets = _structure(n, float(tie_break))
    x_all = torch.zeros(len(jobs), size, dtype=torch.float64)
    y_all = torch.zeros_like(x_all)
    q_all = torch.zeros_like(x_all)
    mu_all = torch.zeros_like(x_all)
    statuses = []
    for i, (x, y, q, duals, status) in enumerate(results):
        statuses.append(status)
        if x is None:
            x_all[i] = torch.from_numpy(rhs[i])  # all-AND split, q = 0: feasible, not optimal
            continue
        x_all[i] = torch.from_numpy(x)
        y_all[i, torch.from_numpy(or_sets)] = torch.from_numpy(y)
        q_all[i] = torch.from_numpy(np.clip(q, -box[i], box[i]))
        mu_all[i] = torch.from_numpy(duals)
    # Rebuild (p, q) from the atoms: v + q = zeta(x) + or_reconstruct(y).
    v_or = or_reconstruct(y_all)
    v_and = vs + q_all - v_or
    p = 0.5 * (v_and - v_or)
    lam = superset_moebius(mu_all)  # row duals of the Möbius rows, in value coordinates
    dev = v.device
    return (p * scale).to(dev), (q_all * scale).to(dev), lam.to(dev), statuses
