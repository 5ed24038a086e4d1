#!/usr/bin/env python
"""Compare the stop's stage-2 signals on tuning runs only (issue 23 part 1; session-9 plan).

Stage 2 of ``NoiseRiseStopper`` watches one metric for a rise. The issue names, beside the
pooled noise, a rise in the emerged interactions' order and a fall in their rho; this
replays each (a fall as a rise of the negated value) with the shipped knee stage test,
through the package's own stopper with restore-best, on the session-8 tuning runs, and
ranks them by session 8's objective (``tune_knee_stop.evaluate``). The demo's stored runs
carry only the noise and the removed share, so the emerged signals are ranked on the three
real-data settings.

    python scripts/experiments/tune_stage2_signal.py --out docs/results/stop_rule/session9_tuning.md

No judging split and no judging seed is read. See docs/results/stop_rule/session9_plan.md.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from tune_knee_stop import emit, evaluate, markdown, ranked, tuning_runs  # noqa: E402

#: candidate name -> (metric key the stopper watches, source key, sign)
SIGNALS = {
    "noise": ("interactions/noise", "interactions/noise", 1.0),
    "emerged order": ("emerged_order_rise", "interactions/emerged/mean_order", 1.0),
    "emerged rho fall": ("emerged_rho_fall", "interactions/emerged/rho", -1.0),
    "emerged share": ("emerged_share_rise", "interactions/emerged/strength_norm", 1.0),
}
SHIPPED = "noise k4 p2 removal_peak"


def with_derived_signals(runs: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """A copy of ``runs`` whose replayed metrics also carry the signed derived signals
    (the stopper only watches for rises)."""
    out = copy.deepcopy(runs)
    for rs in out.values():
        for run in rs:
            for p in run["points"].values():
                m = p.get("interactions") or {}
                for key, src, sign in SIGNALS.values():
                    if key != src and src in m and m[src] is not None:
                        m[key] = sign * float(m[src])
    return out


def signal_grid() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    restores = ("removal_peak", "stage_end", "min")
    axes = itertools.product(SIGNALS.items(), (2.0, 3.0, 4.0), (1, 2), restores)
    for (name, (key, _, _)), k, patience, restore in axes:
        out[f"{name} k{k:g} p{patience} {restore}"] = {
            "metric": key,
            "stage_test": "knee",
            "stage_knee": 0.7,
            "stage_multiple": k,
            "patience": patience,
            "floor_multiple": 0.0,
            "restore": restore,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args(argv)
    runs = with_derived_signals(tuning_runs())
    grid = signal_grid()
    noise = {n: kw for n, kw in grid.items() if kw["metric"] == SIGNALS["noise"][0]}
    rows, rival = evaluate(runs, noise)
    # the demo's stored runs carry only the noise and the removed share: the emerged
    # signals are compared on the three real-data settings ("n/a" under demo)
    others, _ = evaluate({s: rs for s, rs in runs.items() if s != "demo"},
                         {n: kw for n, kw in grid.items() if n not in noise})  # fmt: skip
    emit(markdown(ranked(rows + others), rival, args.top, shipped=SHIPPED), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
