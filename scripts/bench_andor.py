#!/usr/bin/env python
"""Benchmark the AND-OR core; every ratio is against a baseline timed in the same run.

1. Transforms: our O(n 2**n) butterfly Möbius vs a dense 2**n x 2**n matrix product and
   vs shapiq's ExactComputer Möbius transform, n = 8..16 (baselines skipped where they
   would need more than --max-dense-gib of memory or more than --shapiq-max-n players).
2. Solver: the default AND-OR solver (exact LP) and the previous first-order default
   (``admm-pdhg``) on random, planted and the demo model's recorded games, n = 6, 8, 10,
   batch 32: time per probe, the certified gap each reports, and the true excess over
   HiGHS's exact optimum of the dense LP (scipy), timed in the same run.

    python scripts/bench_andor.py            # full (several minutes on 2 cores)
    python scripts/bench_andor.py --quick    # small sizes, seconds
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from sft_interaction_callback.andor import fit_and_or, moebius


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    fn()  # warm up
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def dense_moebius_matrix(n: int) -> torch.Tensor:
    m = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    out = torch.ones(1, 1, dtype=torch.float64)
    for _ in range(n):
        out = torch.kron(m, out)
    return out


def shapiq_moebius(values: np.ndarray, n: int) -> np.ndarray:
    import shapiq

    def game(coalitions: np.ndarray) -> np.ndarray:
        idx = (coalitions.astype(np.int64) * (1 << np.arange(n))).sum(1)
        return values[idx]

    return shapiq.ExactComputer(game, n_players=n).moebius_transform.values


def bench_transforms(ns, batch: int, max_dense_gib: float, shapiq_max_n: int) -> None:
    print("\n## Transforms: butterfly vs dense matrix and shapiq (float64, CPU)")
    print(
        f"{'n':>3} {'batch':>5} {'ours ms':>10} {'dense ms':>10} {'dense/ours':>11} "
        f"{'shapiq ms':>10} {'shapiq/ours':>12} {'max |diff|':>11}"
    )
    for n in ns:
        v = torch.randn(batch, 1 << n, dtype=torch.float64)
        t_ours, ours = timed(lambda v=v: moebius(v))
        dense_gib = (1 << n) ** 2 * 8 / 2**30
        t_dense = diff = float("nan")
        if dense_gib <= max_dense_gib:
            mat = dense_moebius_matrix(n)
            t_dense, dense = timed(lambda mat=mat, v=v: v @ mat.T, repeat=1)
            diff = float((dense - ours).abs().max())
            del mat, dense
        t_shapiq = float("nan")
        if n <= shapiq_max_n:
            vals = v[0].numpy()
            t_shapiq, _ = timed(lambda vals=vals, n=n: shapiq_moebius(vals, n), repeat=1)
            t_one, _ = timed(lambda v=v: moebius(v[:1]))
            shapiq_ratio = t_shapiq / t_one  # shapiq handles one game at a time
        else:
            shapiq_ratio = float("nan")
        print(
            f"{n:>3} {batch:>5} {t_ours * 1e3:>10.2f} {t_dense * 1e3:>10.1f} "
            f"{t_dense / t_ours:>11.1f} {t_shapiq * 1e3:>10.1f} {shapiq_ratio:>12.1f} "
            f"{diff:>11.2e}"
        )
    print("(shapiq/ours compares one game each; dense/ours the whole batch)")


def planted_batch(n: int, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(1 << n)
    combos = [c for k in (2, 3) for c in itertools.combinations(range(n), k)]
    games = []
    for _ in range(batch):
        v = torch.zeros(1 << n, dtype=torch.float64)
        for term in range(6):
            players = combos[int(torch.randint(len(combos), (1,), generator=g))]
            s = sum(1 << p for p in players)
            coef = float(torch.empty(1).uniform_(1, 3, generator=g)) * (1 if term % 2 else -1)
            v += coef * (((idx & s) == s) if term < 3 else ((idx & s) != 0))
        v += 0.01 * torch.randn(1 << n, generator=g, dtype=torch.float64)
        games.append(v)
    return torch.stack(games)


def dense_highs_optimum(v: torch.Tensor, noise_bound: float = 0.02) -> float:
    """HiGHS (scipy, interior point) on the dense atom LP: the independent exact judge."""
    from scipy.optimize import linprog

    size = v.shape[-1]
    ts = np.arange(size)
    order = np.array([bin(s).count("1") for s in range(size)])
    and_atoms = ((ts[:, None] & ts[None, :]) == ts[None, :]).astype(float)
    or_sets = np.flatnonzero(order >= 2)
    or_atoms = ((ts[:, None] & or_sets[None, :]) != 0).astype(float)
    atoms = np.hstack([and_atoms, or_atoms])
    k = atoms.shape[1]
    a_eq = np.hstack([atoms, -atoms, -np.eye(size)])
    b = noise_bound * abs(float(v[-1] - v[0]))
    cost = np.concatenate([np.ones(2 * k), np.zeros(size)])
    bounds = [(0, None)] * (2 * k) + [(-b, b)] * size
    res = linprog(cost, A_eq=a_eq, b_eq=v.numpy(), bounds=bounds, method="highs-ipm")
    return float(res.fun)


def demo_games(n: int) -> torch.Tensor | None:
    """The demo model's own probe games recorded for the tests (n = 8; sub-games below)."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tests/andor/data/demo_games.safetensors"
    if n > 8 or not path.exists():
        return None
    from safetensors.torch import load_file

    return load_file(path)["v"][:, : 1 << n].contiguous()


def bench_solver(ns, batch: int, judge_games: int) -> None:
    print(
        f"\n## Solver: default (exact LP) vs admm-pdhg (the previous default) vs HiGHS on the "
        f"dense LP (scipy, IPM), batch {batch} ({judge_games} judged by HiGHS)"
    )
    print(
        f"{'n':>3} {'games':>8} {'default s/probe':>16} {'gap max':>9} {'excess max':>11} "
        f"{'admm s/probe':>13} {'gap max':>9} {'excess max':>11} {'HiGHS dense s':>14}"
    )
    g = torch.Generator().manual_seed(0)
    for n in ns:
        kinds = [
            ("random", torch.randn(batch, 1 << n, dtype=torch.float64, generator=g)),
            ("planted", planted_batch(n, batch, seed=n)),
        ]
        recorded = demo_games(n)
        if recorded is not None:
            kinds.append(("demo", recorded))
        for name, v in kinds:
            start = time.perf_counter()
            ours = fit_and_or(v)
            t_ours = (time.perf_counter() - start) / len(v)
            start = time.perf_counter()
            old = fit_and_or(v, solver="admm-pdhg")
            t_old = (time.perf_counter() - start) / len(v)
            judged = range(min(judge_games, len(v)))
            start = time.perf_counter()
            opt = torch.tensor([dense_highs_optimum(v[i]) for i in judged], dtype=torch.float64)
            t_judge = (time.perf_counter() - start) / len(judged)
            ex_ours = ((ours.objective()[: len(judged)] - opt) / opt).max()
            ex_old = ((old.objective()[: len(judged)] - opt) / opt).max()
            print(
                f"{n:>3} {name:>8} {t_ours:>16.3f} {ours.gap.max():>9.1e} {ex_ours:>11.1e} "
                f"{t_old:>13.3f} {old.gap.max():>9.1e} {ex_old:>11.1e} {t_judge:>14.2f}"
            )
    print(
        "(s/probe: wall time of one batched fit / batch; gap: the certified relative gap the "
        "result reports; excess: (objective - HiGHS optimum) / optimum on the judged games)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-dense-gib", type=float, default=2.0)
    parser.add_argument(
        "--judge-games", type=int, default=4, help="games per row judged by dense HiGHS"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.quick:
        bench_transforms([6, 8], batch=4, max_dense_gib=args.max_dense_gib, shapiq_max_n=6)
        bench_solver([6, 8], batch=4, judge_games=2)
    else:
        bench_transforms(range(8, 17), batch=8, max_dense_gib=args.max_dense_gib, shapiq_max_n=14)
        bench_solver([6, 8, 10], batch=32, judge_games=args.judge_games)


if __name__ == "__main__":
    main()
