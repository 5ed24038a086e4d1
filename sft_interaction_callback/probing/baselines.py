"""Baseline embeddings: what a masked word's input embedding is replaced by (DESIGN §2).

Named baselines are read from the model's own embedding table so they live on the model's
device and dtype; ``learn_baseline`` implements the lab recipe of choosing the vector that
makes low-order effects small.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sft_interaction_callback.probing._model import ModelAdapter, eval_mode
from sft_interaction_callback.probing.probes import Probe

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


def random_triples(
    n: int, count: int, *, order: int, rng: random.Random
) -> list[tuple[int, int, int]]:
    """``count`` random disjoint ``(S1, S2, S3)`` bitmasks over ``n`` players.

    ``S1`` and ``S2`` are non-empty with at most ``order`` players; ``S3`` (the context) has
    at most ``order`` players, so every term probes a low-order effect.
    """
    if n < 2:
        raise ValueError("learning a baseline needs probes with at least 2 players")
    out = []
    for _ in range(count):
        players = list(range(n))
        rng.shuffle(players)
        k1 = rng.randint(1, min(order, n - 1))
        k2 = rng.randint(1, min(order, n - k1))
        k3 = rng.randint(0, min(order, n - k1 - k2))
        parts = players[:k1], players[k1 : k1 + k2], players[k1 + k2 : k1 + k2 + k3]
        out.append(tuple(sum(1 << i for i in p) for p in parts))
    return out


def interaction_loss(
    value_fn: Any, probe: Probe, baseline: torch.Tensor, triples: Sequence[tuple[int, int, int]]
) -> torch.Tensor:
    """``mean |v(S1∪S2∪S3) − v(S1∪S3) − v(S2∪S3) + v(S3)|``, differentiable in ``baseline``."""
    masks = []
    for s1, s2, s3 in triples:
        masks += [s1 | s2 | s3, s1 | s3, s2 | s3, s3]
    v = value_fn.differentiable_values(probe, torch.tensor(masks), baseline).view(-1, 4)
    return (v[:, 0] - v[:, 1] - v[:, 2] + v[:, 3]).abs().mean()


def learn_baseline(
    value_fn_or_model: Any,
    tokenizer: Any,
    probes: Sequence[Probe],
    *,
    init: Baseline = "pad",
    steps: int = 100,
    lr: float = 0.05,
    momentum: float = 0.9,
    order: int = 2,
    samples_per_probe: int = 8,
    seed: int = 0,
) -> torch.Tensor:
    """A baseline vector that makes low-order effects small (DESIGN §2), by SGD.

    Starting from ``init``, minimise ``E|v(S1∪S2∪S3) − v(S1∪S3) − v(S2∪S3) + v(S3)|`` over
    random disjoint subsets with at most ``order`` players each. ``value_fn_or_model`` is a
    ``CausalLMValue`` / ``SequenceClassifierValue`` or a model (a causal LM value is built).
    The model's weights are not changed; returns the vector (embedding dtype and device).
    """
    from sft_interaction_callback.probing.values import CausalLMValue

    value_fn = value_fn_or_model
    if not hasattr(value_fn, "differentiable_values"):
        value_fn = CausalLMValue(value_fn_or_model, tokenizer, baseline=init)
    if not probes:
        raise ValueError("learn_baseline needs at least one probe")
    start = resolve_baseline(init, value_fn.adapter, tokenizer)
    b = start.detach().float().clone().requires_grad_(True)
    opt = torch.optim.SGD([b], lr=lr, momentum=momentum)
    rng = random.Random(seed)
    model = value_fn.adapter.wrapper
    with eval_mode(model), torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss = sum(
                interaction_loss(
                    value_fn,
                    p,
                    b,
                    random_triples(p.n_players, samples_per_probe, order=order, rng=rng),
                )
                for p in probes
            ) / len(probes)
            (grad,) = torch.autograd.grad(loss, [b])
            b.grad = grad
            opt.step()
    return b.detach().to(start.dtype)
