#!/usr/bin/env python
"""Benchmark the AND-OR core; every ratio is against a baseline timed in the same run.

1. Transforms: our O(n 2**n) butterfly Möbius vs a dense 2**n x 2**n matrix product and
   vs shapiq's ExactComputer Möbius transform, n = 8..16 (baselines skipped where they
   would need more than --max-dense-gib of memory or more than --shapiq-max-n players).
2. Solver: the default AND-OR solver vs the published SGD recipe (20,000 iterations) on
   random and planted games, n = 10, batch 32: objective and wall time.

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


def bench_solver(n: int, batch: int, ref_iterations: int) -> None:
    print(
        f"\n## Solver: default vs reference SGD recipe ({ref_iterations} iterations), "
        f"n = {n}, batch {batch}"
    )
    print(
        f"{'games':>8} {'ref s':>8} {'ours s':>8} {'time ratio':>11} {'ref obj':>10} "
        f"{'ours obj':>10} {'ours worse':>11} {'max rel diff':>13}"
    )
    g = torch.Generator().manual_seed(0)
    for name, v in [
        ("random", torch.randn(batch, 1 << n, dtype=torch.float64, generator=g)),
        ("planted", planted_batch(n, batch, seed=1)),
    ]:
        start = time.perf_counter()
        ref = fit_and_or(v, solver="reference", iterations=ref_iterations)
        t_ref = time.perf_counter() - start
        start = time.perf_counter()
        ours = fit_and_or(v)
        t_ours = time.perf_counter() - start
        rel = (ours.objective() - ref.objective()) / ref.objective()
        print(
            f"{name:>8} {t_ref:>8.1f} {t_ours:>8.1f} {t_ref / t_ours:>10.1f}x "
            f"{ref.objective().mean():>10.2f} {ours.objective().mean():>10.2f} "
            f"{int((rel > 1e-6).sum()):>8}/{batch} {rel.max():>13.2e}"
        )
    print(
        "(obj columns are means over the batch; 'ours worse' counts games where the "
        "default's objective exceeds the reference's by more than 1e-6 relative)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-dense-gib", type=float, default=2.0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.quick:
        bench_transforms([6, 8], batch=4, max_dense_gib=args.max_dense_gib, shapiq_max_n=6)
        bench_solver(n=6, batch=4, ref_iterations=500)
    else:
        bench_transforms(range(8, 17), batch=8, max_dense_gib=args.max_dense_gib, shapiq_max_n=14)
        bench_solver(n=10, batch=32, ref_iterations=20_000)


if __name__ == "__main__":
    main()
