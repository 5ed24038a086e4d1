"""Record the demo model's own probe games (the values of all 2**8 masks) for the tests.

    sft-interactions demo --output-dir /tmp/demo_run --report-to none
    python tests/andor/data/record_demo_games.py /tmp/demo_run/<run>/interactions

keeps ``v`` of the 8 probes at step 0 (the pretrained model) and at step 640 (deep in the
overfitting stage): 16 real-model games, the ones on which the old first-order default
was furthest from the optimum.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from sft_interaction_callback.andor import AndOrInteractions


def main(folder: str, steps: tuple[int, ...] = (0, 640)) -> None:
    fits = [AndOrInteractions.load(Path(folder) / f"step-{s:08d}.safetensors") for s in steps]
    v = torch.cat([f.v.to(torch.float64) for f in fits])
    meta = {"steps": json.dumps([s for s, f in zip(steps, fits, strict=True) for _ in f.v])}
    meta["words"] = json.dumps([w for f in fits for w in f.words])
    save_file({"v": v.contiguous()}, Path(__file__).with_name("demo_games.safetensors"), meta)


if __name__ == "__main__":
    main(sys.argv[1])
