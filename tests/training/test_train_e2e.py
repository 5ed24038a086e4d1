"""End to end: ``sft-interactions train --config`` on a tiny local model and real GoEmotions."""

from __future__ import annotations

import json
import textwrap

from sft_interaction_callback.cli import main
from sft_interaction_callback.snapshots import SnapshotDir, load_tensors


def test_train_goemotions_tiny_model(tmp_path, tiny_model_dir, goemotions_dir, capsys):
    out = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            name: tiny-goemotions
            model: {{name: {tiny_model_dir}, dtype: float32}}
            lora: {{r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}}
            data:
              path: {goemotions_dir / "train.tsv"}
              eval_path: {goemotions_dir / "dev.tsv"}
              max_train_rows: 64
              eval_size: 8
            training:
              output_dir: {out}
              max_steps: 6
              per_device_train_batch_size: 4
              learning_rate: 5e-3
              logging_steps: 1
              eval_strategy: steps
              eval_steps: 3
              save_strategy: "no"
              report_to: none
              bf16: false
              use_cpu: true
              gradient_checkpointing: false
              max_length: 160
              dataloader_num_workers: 0
              disable_tqdm: true
              seed: 0
            interactions:
              n_players: 4
              num_probes: 2
              schedule: 3
              early_stopping: false
              solver: pdhg
              solver_options: {{iterations: 150}}
            """
        ),
        encoding="utf-8",
    )
    assert main(["train", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "experiment    tiny-goemotions" in printed and "64 train / 8 eval rows" in printed
    assert "done          6 steps, ran to the end" in printed

    # the run folder: the resolved config, the adapter, and the interaction snapshots
    assert (out / "sft_config.yaml").is_file() and (out / "adapter_model.safetensors").is_file()
    snap = out / "interactions"
    probes = json.loads((snap / "probes.json").read_text())
    assert probes["n_players"] == 4 and len(probes["probes"]) == 2
    names = (goemotions_dir / "labels.txt").read_text().split()
    for p in probes["probes"]:
        assert p["id"].startswith("eval-") and p["target"] in names
        comment = p["prompt"].rsplit("Comment: ", 1)[1]
        assert all(w in comment for w in p["words"])  # players are the comment's words
        assert p["prompt"].startswith("[CLS]<|user|>")  # the chat template, as TRL renders it
    steps = sorted(int(f.stem.split("-")[1]) for f in snap.glob("step-*.safetensors"))
    assert steps == [0, 3, 6]
    tensors, _ = load_tensors(snap / "step-00000006.safetensors")
    assert tuple(tensors["v"].shape) == (2, 16) and tuple(tensors["i_and"].shape) == (2, 16)
    metrics = SnapshotDir(snap).load_metrics()
    assert [m["step"] for m in metrics] == [0, 3, 6]
    assert not any(m["skipped"] for m in metrics)
    assert all("interactions/noise" in m for m in metrics)
    assert metrics[-1]["interactions/emerged/count"] is not None
