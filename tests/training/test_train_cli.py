"""``sft-interactions train`` and ``scripts/train_sft.py``: dry runs, errors, build checks."""

from __future__ import annotations

import runpy
import sys
import textwrap
from pathlib import Path

import pytest

from sft_interaction_callback.cli import build_parser, main
from sft_interaction_callback.training.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def nothing_loads(monkeypatch):
    """Fail the test if a model, tokenizer or hub data set is loaded."""
    import datasets
    import transformers

    def boom(*args, **kwargs):
        raise AssertionError("a dry run must not load models or data")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)
    monkeypatch.setattr(datasets, "load_dataset", boom)


def test_train_is_a_subcommand():
    help_text = build_parser().format_help()
    assert "train" in help_text


def test_dry_run_prints_merged_config_and_plan(capsys, nothing_loads):
    argv = ["train", "--model", "qwen2.5-7b", "--data", "goemotions", "--dry-run"]
    argv += ["--configs-dir", str(ROOT / "configs"), "--set", "lora.r=16", "training.max_steps=20"]
    argv += ["--set", "interactions.num_probes=4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("# merged from: ")
    assert "name: qwen2.5-7b_goemotions" in out and "r: 16" in out and "max_steps: 20" in out
    assert "Comment: {text}" in out  # templates print as written
    assert "# ---- plan (dry run: nothing loaded)" in out
    assert "model         Qwen/Qwen2.5-7B-Instruct  [qwen2, dtype bfloat16" in out
    assert "4 probes x 8 players from the eval rows" in out


def test_errors_exit_2_with_a_message(capsys, tmp_path):
    assert main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sft-interactions train: error: config file") and "Traceback" not in err
    exp = ROOT / "configs" / "experiments" / "gemma-3-4b_dolly.yaml"
    assert main(["train", "--config", str(exp), "--set", "lora.alpha=-1", "--dry-run"]) == 2
    assert "lora.alpha=-1 (set in --set): expected a number > 0" in capsys.readouterr().err


def test_script_runs_the_same_code(capsys, monkeypatch, nothing_loads):
    exp = ROOT / "configs" / "experiments" / "gemma-3-4b_dolly.yaml"
    monkeypatch.setattr(sys, "argv", ["train_sft.py", "--config", str(exp), "--dry-run"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / "scripts" / "train_sft.py"), run_name="__main__")
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "google/gemma-3-4b-it" in out and "hub databricks/databricks-dolly-15k" in out


def _tiny_config(tmp_path, model_dir, extra: str = "") -> Path:
    rows = [
        {
            "instruction": f"Describe the red lighthouse number {i} near the harbour",
            "response": "ok",
        }
        for i in range(12)
    ]
    import json

    data = tmp_path / "dolly.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = tmp_path / "run.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: build-check
            model: {{name: {model_dir}, dtype: float32}}
            lora: {{r: 2, alpha: 4, target_modules: [q_proj, v_proj]}}
            data: {{path: dolly.jsonl, eval_size: 4}}
            training:
              output_dir: {tmp_path / "out"}
              max_steps: 1
              use_cpu: true
              bf16: false
              gradient_checkpointing: false
              report_to: none
            interactions: {{n_players: 3, num_probes: 2}}
            """
        )
        + extra,
        encoding="utf-8",
    )
    return path


def test_build_trainer_lora_full_and_bad_targets(tmp_path, tiny_model_dir):
    from sft_interaction_callback.training.run import build_trainer

    cfg = load_config([_tiny_config(tmp_path, tiny_model_dir)])
    trainer, callback, data = build_trainer(cfg)
    assert type(trainer).__name__ == "SFTTrainer" and data.format == "dolly"
    assert len(trainer.train_dataset) == 8 and len(trainer.eval_dataset) == 4
    assert hasattr(trainer.model, "peft_config")  # LoRA
    probes = callback.config.probes
    assert len(probes) == 2 and all(p.id.startswith("eval-") for p in probes)
    assert callback in trainer.callback_handler.callbacks
    assert not trainer.args.activation_checkpointing

    full = load_config([_tiny_config(tmp_path, tiny_model_dir)], ["lora=null", "interactions=null"])
    trainer, callback, _ = build_trainer(full)
    assert callback is None and not hasattr(trainer.model, "peft_config")

    with pytest.warns(UserWarning, match="checked when the model loads"):
        bad = load_config(
            [_tiny_config(tmp_path, tiny_model_dir)],
            ["model.family=custom", "lora.target_modules=[c_attn]"],
        )
    with pytest.raises(
        ConfigError, match=r"\['c_attn'\] match no linear layer of LlamaForCausalLM"
    ):
        build_trainer(bad)
    few = load_config([_tiny_config(tmp_path, tiny_model_dir)], ["interactions.n_players=15"])
    with pytest.raises(ConfigError, match="interactions: none of the 4 rows scanned has 15"):
        build_trainer(few)
