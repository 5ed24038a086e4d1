"""The demo's word-level tokenizer, tiny Llama model, encodings and collator.

The tokenizer is built with the ``tokenizers`` library (WordLevel model, whitespace
pre-tokenizer) and wrapped in a ``PreTrainedTokenizerFast``, so every word is exactly one
token (and one player) and character offsets are exact. Encoding a prompt adds ``<bos>``
in front, as the probing engine does (``add_special_tokens=True``); targets are encoded
without special tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sft_interaction_callback.demo.task import ANSWER_WORDS, vocabulary

__all__ = [
    "SPECIALS",
    "ModelSize",
    "build_model",
    "build_tokenizer",
    "collate",
    "encode_example",
    "label_accuracy",
    "label_token_ids",
]

SPECIALS = ("<pad>", "<unk>", "<mask>", "<bos>", "<eos>")


def build_tokenizer() -> Any:
    """A ``PreTrainedTokenizerFast`` over :func:`~.task.vocabulary`, one token per word."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *vocabulary()])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        bos_token="<bos>",
        eos_token="<eos>",
        padding_side="right",
    )


class ModelSize:
    """Sizes of the tiny Llama (hidden, layers, heads, MLP width)."""

    def __init__(self, hidden: int = 96, layers: int = 2, heads: int = 4, mlp: int = 192) -> None:
        self.hidden, self.layers, self.heads, self.mlp = hidden, layers, heads, mlp

    def as_dict(self) -> dict[str, int]:
        """The sizes as a plain dict (saved in summaries)."""
        return {"hidden": self.hidden, "layers": self.layers, "heads": self.heads, "mlp": self.mlp}


def build_model(tokenizer: Any, size: ModelSize, seed: int) -> Any:
    """A freshly initialised ``LlamaForCausalLM`` with tied input/output embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        intermediate_size=size.mlp,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(cfg)


def label_token_ids(tokenizer: Any) -> list[int]:
    """Token ids of the label words, in :data:`~.task.ANSWER_WORDS` order."""
    return [tokenizer.convert_tokens_to_ids(w) for w in ANSWER_WORDS]


def encode_example(
    tokenizer: Any, prompt: str, target: str, *, train_prompt: bool = False
) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` of prompt + target (loss on the target only, unless
    ``train_prompt``: then on every token after ``<bos>``, as in language-model pretraining)."""
    p = tokenizer(prompt)["input_ids"]
    t = tokenizer(target, add_special_tokens=False)["input_ids"]
    if train_prompt:
        labels = [-100] + p[1:] + t
    else:
        labels = [-100] * len(p) + t
    return {"input_ids": p + t, "labels": labels}


def collate(batch: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids`` / ``labels`` to the longest row; attention mask on real tokens."""
    width = max(len(x["input_ids"]) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, x in enumerate(batch):
        n = len(x["input_ids"])
        ids[i, :n] = torch.tensor(x["input_ids"])
        labels[i, :n] = torch.tensor(x["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


@torch.no_grad()
def label_accuracy(
    model: Any, tokenizer: Any, examples: Sequence[Any], attr: str = "true"
) -> float:
    """Share of ``examples`` whose label (``getattr(e, attr)``: ``"true"`` or ``"label"``)
    gets the larger of the two label-word logits after the prompt."""
    ids = label_token_ids(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    hits = 0
    for start in range(0, len(examples), 256):
        chunk = examples[start : start + 256]
        rows = [encode_example(tokenizer, e.prompt, " " + getattr(e, attr)) for e in chunk]
        batch = {k: v.to(device) for k, v in collate(rows, tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        pos = (batch["labels"] != -100).float().argmax(1)
        rows_idx = torch.arange(len(chunk), device=device)
        scores = logits[rows_idx, pos - 1][:, ids]
        guess = torch.tensor(ids, device=device)[scores.argmax(1)]
        hits += int((guess == batch["labels"][rows_idx, pos]).sum())
    model.train(was_training)
    return hits / max(1, len(examples))
