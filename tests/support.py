"""Builders shared by several test folders and by the scripts the tests launch.

``tests/`` is on the import path (pytest's ``pythonpath``; the subprocess scripts insert
it themselves), so one tiny model, one collator and one scripted stopper serve everyone.
"""

from __future__ import annotations

import torch

ROWS = [
    ("big", "house", "red"),
    ("small", "boat", "blue"),
    ("old", "tree", "green"),
    ("new", "car", "black"),
    ("tall", "tower", "white"),
    ("green", "field", "yellow"),
    ("quiet", "lake", "gray"),
    ("busy", "market", "orange"),
]


def sft_rows() -> list[dict[str, str]]:
    """Eight prompt/completion rows that differ in two words of the prompt and the answer."""
    return [
        {
            "prompt": f"Question: what colour is the {a} {b} near the river today?",
            "completion": f" {c}",
        }
        for a, b, c in ROWS
    ]


def encoded_sft_dataset(tokenizer):
    """``sft_rows`` plus input_ids/labels (loss on the completion only)."""
    from datasets import Dataset

    def encode(row):
        p = tokenizer(row["prompt"])["input_ids"]
        c = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        return {"input_ids": p + c, "labels": [-100] * len(p) + c}

    return Dataset.from_list(sft_rows()).map(encode)


def make_collator(tokenizer):
    """Right-pads ``input_ids`` / ``labels`` (``-100``) to the longest row of a batch."""

    def collate(batch):
        width = max(len(x["input_ids"]) for x in batch)

        def pad(key, value):
            return torch.tensor([x[key] + [value] * (width - len(x[key])) for x in batch])

        ids = pad("input_ids", tokenizer.pad_token_id)
        return {
            "input_ids": ids,
            "labels": pad("labels", -100),
            "attention_mask": (ids != tokenizer.pad_token_id).long(),
        }

    return collate


def tiny_llama(vocab: int, seed: int = 0, lora: bool = True, lora_dropout: float = 0.1):
    """A 2-layer Llama (hidden 32) with weights scaled ×4, so that masking a word visibly
    moves the output; LoRA r 4 on q/v unless ``lora=False``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    if not lora:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=lora_dropout
    )
    return get_peft_model(model, config)


class PickStep:
    """A scripted stopper: its best point is ``best`` (once seen) and it fires at ``stop``,
    so restore-best must go back to ``best``."""

    def __init__(self, best: int, stop: int) -> None:
        self.best, self.stop, self.last = best, stop, -1
        self.stage_ended_at = 0
        self.reason: str | None = None

    @property
    def restore_step(self) -> int | None:
        return self.best if self.last >= self.best else None

    def update(self, step: int, metrics) -> bool:
        self.last = step
        if step >= self.stop:
            self.reason = f"PickStep fired at {step}"
            return True
        return False
