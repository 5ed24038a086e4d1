"""Learned baselines: the lab recipe of choosing the vector that makes low-order effects small.

A baseline embedding is what a masked word's input embedding is replaced by (DESIGN §2).
The named ones (pad, unk, mask, zero, mean) are read from the model in
:mod:`.baseline_vectors`, which the value functions use; learning one needs the value
functions themselves, so it lives here, above :mod:`.values` (no import cycle). The names
of :mod:`.baseline_vectors` are re-exported for existing imports.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from sft_interaction_callback.probing._model import eval_mode
from sft_interaction_callback.probing.baseline_vectors import (
    NAMED_BASELINES,
    Baseline,
    available_baselines,
    resolve_baseline,
)
from sft_interaction_callback.probing.probes import Probe
from sft_interaction_callback.probing.values import CausalLMValue

__all__ = [
    "NAMED_BASELINES",
    "Baseline",
    "available_baselines",
    "interaction_loss",
    "learn_baseline",
    "random_triples",
    "resolve_baseline",
]


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
