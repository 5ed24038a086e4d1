"""The tuning analyses behind the stop rule's defaults (issue 13), on TUNING run folders only.

    python scripts/experiments/tune_stop_rule.py floors  "/tmp/tuneA_work/*" floors.json
    python scripts/experiments/tune_stop_rule.py schedule "/tmp/tuneA_work/*"
    python scripts/experiments/tune_stop_rule.py multiple "/tmp/tuneA_work/*" floors.json

``floors``: the noise floor of each run's step-0 model (``run/pretrained``), weights
perturbed by 1e-3 and 1e-2 of their std (perturbation seed = the run's seed), as the
callback measures it. ``schedule``: the chosen rule on thinner schedules and on half of
the probes. ``multiple``: floor multiple x patience x restore target. Run folders come
from ``study_a_demo.py`` (FULL settings, snapshots at every probe point).
"""

from __future__ import annotations

import glob
import json
import re
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from replay_stops import Rule, load_run_dir, replay_variant, variant_rule  # noqa: E402

SCHEDULES = {
    "default schedule": None,
    "no dense early tier (<=20: every 10)": lambda s: s > 20 or s % 10 == 0,
    "late tier halved (>120: every 80)": lambda s: s <= 120 or s % 80 == 0,
    "early tiers halved (<=120: every 4 / 20)": lambda s: (
        (s <= 20 and s % 4 == 0) or (20 < s <= 120 and s % 20 == 0) or s > 120
    ),
}
PROBES = {"8 probes": None, "probes 0-3": [0, 1, 2, 3], "probes 4-7": [4, 5, 6, 7]}


def _fmt(res: list[dict]) -> str:
    reg = [x["regret_pp"] for x in res]
    steps = ", ".join(f"{x['stop'] or 'end'}/{x['model_step']}" for x in res)
    per = ", ".join(f"{x:.1f}" for x in reg)
    return f"{statistics.fmean(reg):.2f} ± {statistics.stdev(reg):.2f} | {per} | {steps}"


def schedule(dirs: list[str]) -> None:
    rule = variant_rule(Rule("default", {}), "debounced", "pooled")
    for pname, probes in PROBES.items():
        for sname, keep in SCHEDULES.items():
            if probes is not None and keep is not None:
                continue
            res = []
            for d in dirs:
                run = load_run_dir(
                    Path(d), [("debounced", "pooled")], probes=probes, keep_step=keep
                )
                res.append(replay_variant(run, rule, "debounced"))
            print(f"| {pname} | {sname} | {_fmt(res)} |")


def multiple(dirs: list[str], floors_path: str) -> None:
    floors = json.loads(Path(floors_path).read_text())
    runs = [load_run_dir(Path(d), [("debounced", "pooled")]) for d in dirs]
    for rel in ("0.001", "0.01"):
        for mult in (0.0, 1.0, 3.0, 10.0):
            for p in (2, 3):
                for restore in ("last_good", "min"):
                    kw = {"floor_multiple": mult, "patience": p, "restore": restore}
                    rule = variant_rule(Rule("x", kw), "debounced", "pooled")
                    res = [
                        replay_variant(replace(r, floor=floors[r.name][rel]), rule, "debounced")
                        for r in runs
                    ]
                    print(f"| rel {rel} | x{mult} | patience {p} | {restore} | {_fmt(res)} |")


def measure_floors(dirs: list[str], out: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sft_interaction_callback.callback_state import make_tracker
    from sft_interaction_callback.config import InteractionConfig
    from sft_interaction_callback.engine import ValueExtractor
    from sft_interaction_callback.noise_floor import floor_of, perturbed_weights
    from sft_interaction_callback.probing import Probe

    torch.set_num_threads(1)
    result = {}
    for d in dirs:
        run = Path(d)
        seed = int(re.search(r"seed(\d+)", run.name).group(1))
        tok = AutoTokenizer.from_pretrained(run / "pretrained")
        model = AutoModelForCausalLM.from_pretrained(run / "pretrained").eval()
        probes_json = json.loads((run / "interactions" / "probes.json").read_text())
        probes = [Probe.from_dict(p) for p in probes_json["probes"]]
        cfg = InteractionConfig(n_players=probes[0].n_players)
        extractor = ValueExtractor.from_config(cfg, tok, kind="causal", baseline=cfg.baseline)
        tracker = make_tracker(cfg)
        tracker.set_base(extractor.measure(model, probes))
        row = {}
        for rel in (1e-3, 1e-2):
            with perturbed_weights(model, rel, seed=seed):
                row[str(rel)] = floor_of(tracker, extractor.measure(model, probes))
        result[run.name] = row
        print(run.name, row, flush=True)
    Path(out).write_text(json.dumps(result, indent=1))


def main(argv: list[str]) -> int:
    what, pattern, *rest = argv
    dirs = sorted(glob.glob(pattern))
    if what == "floors":
        measure_floors(dirs, rest[0])
    elif what == "schedule":
        schedule(dirs)
    elif what == "multiple":
        multiple(dirs, rest[0])
    else:
        raise SystemExit(f"unknown analysis {what!r}: floors, schedule or multiple")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
