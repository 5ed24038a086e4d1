"""Baseline vectors: what a masked word's input embedding is replaced by (DESIGN §2).

Named baselines are read from the model's own embedding table so they live on the model's
device and dtype. The value functions (:mod:`.values`) resolve a baseline here; learning
one (:mod:`.baselines`) builds on the value functions, so the two live apart.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sft_interaction_callback.probing._model import ModelAdapter

__all__ = ["NAMED_BASELINES", "Baseline", "available_baselines", "resolve_baseline"]

NAMED_BASELINES = ("pad", "unk", "mask", "zero", "mean")
_TOKEN_ATTR = {"pad": "pad_token_id", "unk": "unk_token_id", "mask": "mask_token_id"}

Baseline = str | torch.Tensor


def available_baselines(tokenizer: Any) -> list[str]:
    """The named baselines this tokenizer supports."""
    out = [n for n, a in _TOKEN_ATTR.items() if getattr(tokenizer, a, None) is not None]
    return out + ["zero", "mean"]


def resolve_baseline(
    baseline: Baseline, model: nn.Module | ModelAdapter, tokenizer: Any
) -> torch.Tensor:
    """The baseline vector ``[hidden]`` in the embedding's dtype, on the embedding's device."""
    adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
    emb, hidden = adapter.embedding, adapter.hidden_size
    if isinstance(baseline, torch.Tensor):
        if baseline.dim() != 1 or baseline.shape[0] != hidden:
            raise ValueError(
                f"baseline tensor has shape {tuple(baseline.shape)}; it must be 1-D of size "
                f"{hidden} (the model's hidden size)"
            )
        return baseline.detach().to(device=adapter.device, dtype=adapter.dtype)
    if not isinstance(baseline, str) or baseline not in NAMED_BASELINES:
        raise ValueError(
            f"baseline {baseline!r} is not known; use one of {list(NAMED_BASELINES)} or a 1-D "
            f"tensor of size {hidden}"
        )
    with torch.no_grad():
        if baseline == "zero":
            return torch.zeros(hidden, device=adapter.device, dtype=adapter.dtype)
        if baseline == "mean":
            mean = emb.weight.float().mean(0) * float(getattr(emb, "embed_scale", 1.0))
            return mean.to(adapter.dtype)
        token_id = getattr(tokenizer, _TOKEN_ATTR[baseline], None)
        if token_id is None:
            usable = available_baselines(tokenizer)
            raise ValueError(
                f"baseline {baseline!r}: the tokenizer has no {baseline} token; use one of "
                f"{usable} instead (or a learned tensor from learn_baseline)"
            )
        vocab = int(emb.weight.shape[0])
        if not 0 <= int(token_id) < vocab:
            raise ValueError(
                f"baseline {baseline!r}: the {baseline} token id {token_id} is outside the "
                f"model's embedding table ({vocab} rows); resize the embeddings "
                "(model.resize_token_embeddings(len(tokenizer))) or use 'zero' / 'mean'"
            )
        ids = torch.tensor([token_id], device=adapter.device)
        return emb(ids)[0].detach().to(adapter.dtype)
