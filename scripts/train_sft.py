#!/usr/bin/env python
"""Fine-tune from a YAML config: the same code as ``sft-interactions train``.

python scripts/train_sft.py --config configs/experiments/qwen2.5-7b_goemotions.yaml
accelerate launch --num_processes 8 scripts/train_sft.py --model qwen2.5-7b --data goemotions
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from sft_interaction_callback.cli.train import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sft_interaction_callback.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
