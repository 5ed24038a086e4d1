"""Stage 1 of the demo: pretrain the tiny LM from scratch on the noisy corpus (not tracked).

A plain PyTorch loop (AdamW, linear warm-up then cosine decay) with the language-model
loss on every token, prompt words and label alike, on a corpus drawn fresh at every step
from :func:`~.task.make_split` with the spurious rule on. The model therefore encodes the
true rule where the spurious one does not apply, and the spurious (parity) rule where it
does, plus a little label noise.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sft_interaction_callback.demo.model import collate, encode_example
from sft_interaction_callback.demo.task import make_split

__all__ = ["PretrainResult", "pretrain"]


@dataclass
class PretrainResult:
    steps: int
    final_loss: float
    seconds: float


def pretrain(
    model: Any,
    tokenizer: Any,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    flip_p: float,
    device: str = "cpu",
    label_weight: float = 1.0,
    log: Callable[[str], None] | None = None,
) -> PretrainResult:
    """Train ``model`` in place for ``steps`` steps; returns the last smoothed loss.

    ``label_weight`` multiplies the loss of the label token (the last one of a row) against
    the loss of the prompt words.
    """
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    start = time.perf_counter()
    smooth = math.nan
    for step in range(steps):
        rows = make_split(rng, batch_size, spurious=True, flip_p=flip_p)
        batch = collate(
            [encode_example(tokenizer, r.prompt, r.target, train_prompt=True) for r in rows],
            tokenizer.pad_token_id,
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = _weighted_loss(model, batch, label_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        value = float(loss.detach())
        smooth = value if math.isnan(smooth) else 0.95 * smooth + 0.05 * value
        if log is not None and (step + 1) % max(1, steps // 5) == 0:
            log(f"  pretraining step {step + 1}/{steps}: loss {smooth:.3f}")
    model.eval()
    return PretrainResult(steps, smooth, time.perf_counter() - start)


def _weighted_loss(model: Any, batch: dict[str, torch.Tensor], label_weight: float) -> torch.Tensor:
    """Next-token cross-entropy, the last target of each row weighted ``label_weight``."""
    labels = batch["labels"]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, targets = logits[:, :-1], labels[:, 1:]
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=-100,
        reduction="none",
    ).view(targets.shape)
    valid = targets != -100
    weight = valid.float()
    last = valid.long().cumsum(1).argmax(1)  # position of each row's last target
    weight[torch.arange(len(weight)), last] = label_weight
    return (ce * weight).sum() / weight.sum()
