"""The value of a masked input, for every subset of players, fast (DESIGN §2, §3, §8).

``CausalLMValue(model, tok)(probe)`` returns ``v[2**n]``: the teacher-forced summed log-odds
of the target under each masking of the players. The cost is ``2**n`` forward passes, so the
engine (i) batches masks, (ii) computes logits at the ``m`` target positions only, and
(iii) shares work between masks through a prefix tree over players in position order: the
tokens between player ``j`` and player ``j+1`` depend only on the bits of players ``0..j``,
so they are run once per distinct setting of those bits on top of the parent's KV cache.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sft_interaction_callback.probing._model import KV, ModelAdapter, eval_mode
from sft_interaction_callback.probing.baseline_vectors import Baseline, resolve_baseline
from sft_interaction_callback.probing.encoding import encode_probe, encode_prompt
from sft_interaction_callback.probing.probes import Probe

#: Probabilities are clamped to [EPS, 1 - EPS] so that log-odds stay finite (DESIGN §2).
EPS = 1e-7
_LOG_EPS = math.log(EPS)
_LOG_1M_EPS = math.log1p(-EPS)
CPU_BATCH_SIZE = 64
#: On a CPU: bytes of activations one forward pass may use, and the most masks per pass.
CPU_BATCH_MEMORY = 512 * 2**20
CPU_MAX_BATCH = 256
CPU_CACHE_MEMORY = 1 << 30

_OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError}
)


def log_odds_from_logprob(logp: torch.Tensor) -> torch.Tensor:
    """``log(p / (1 - p))`` from ``log p``, with ``p`` clamped; accurate near 0 and 1."""
    logp = logp.float().clamp(_LOG_EPS, _LOG_1M_EPS)
    # log(1 - p) = log(-expm1(log p)) near p = 1, log1p(-p) elsewhere
    log1m = torch.where(
        logp > -math.log(2.0), torch.log(-torch.expm1(logp)), torch.log1p(-torch.exp(logp))
    )
    return logp - log1m


def all_masks(n: int) -> torch.Tensor:
    return torch.arange(1 << n, dtype=torch.long)


def _check_masks(probe: Probe, masks: torch.Tensor | Sequence[int] | None) -> torch.Tensor:
    if masks is None:
        return all_masks(probe.n_players)
    masks = torch.as_tensor(masks, dtype=torch.long).cpu().reshape(-1)
    if masks.numel() and (int(masks.min()) < 0 or int(masks.max()) >= 1 << probe.n_players):
        raise ValueError(
            f"probe {probe.id!r}: masks must be subset indices in [0, 2**{probe.n_players})"
        )
    return masks


def _masked(
    embeds: torch.Tensor, cover: torch.Tensor, masks: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """``[batch, len, hidden]``: token ``t`` is replaced by ``b`` if a covering player is absent."""
    drop = (cover[None, :] & ~masks[:, None]) != 0
    return torch.where(drop[..., None], b.to(embeds.dtype), embeds[None])


@dataclass
class _Prepared:
    """A probe ready for the engine: input embeddings, player cover, targets."""

    probe: Probe
    embeds: torch.Tensor  # [L, H], model dtype, model device
    cover: torch.Tensor  # [L] int64 on device
    bounds: list[int]  # first token of each player
    targets: torch.Tensor  # [m] (causal) or [] (classifier)

    @property
    def length(self) -> int:
        return int(self.embeds.shape[0])


class _MaskedValue:
    """Shared machinery: model adapter, baseline, batching with OOM back-off, eval mode."""

    def __init__(
        self, model: nn.Module, tokenizer: Any, *, baseline: Baseline, batch_size: int | None
    ) -> None:
        self.adapter = ModelAdapter(model)
        self.model = model
        self.tokenizer = tokenizer
        self.baseline_spec = baseline
        self._baseline = resolve_baseline(baseline, self.adapter, tokenizer)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: use a positive int or None (auto)")
        self.batch_size = batch_size

    @property
    def baseline(self) -> torch.Tensor:
        return self._baseline

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    def _auto_batch(self, length: int, m: int) -> int:
        """Masks per forward pass: what memory allows, capped (CUDA: half the free memory;
        CPU: ``CPU_BATCH_MEMORY``, at most ``CPU_MAX_BATCH``, where per-call overhead, not
        arithmetic, limits small models: 256 instead of 64 cut the demo's forward time
        by a fifth)."""
        if self.batch_size is not None:
            return self.batch_size
        vocab = int(self.adapter.embedding.weight.shape[0])
        per_seq = (
            length * (self.adapter.kv_bytes_per_token() + self.adapter.activation_bytes_per_token())
            + 3 * 4 * m * vocab
        )
        if self.device.type != "cuda":
            return int(max(1, min(CPU_MAX_BATCH, CPU_BATCH_MEMORY // max(per_seq, 1))))
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(max(1, min(1024, 0.5 * free // max(per_seq, 1))))

    def _check_length(self, probe: Probe, length: int, what: str) -> None:
        limit = self.adapter.max_length
        if limit is not None and length > limit:
            raise ValueError(
                f"probe {probe.id!r}: {what} is {length} tokens, longer than the model's "
                f"context of {limit}; shorten the prompt or choose another example "
                "(probes are never truncated, that would change what is measured)"
            )

    def __call__(
        self, probe: Probe, masks: torch.Tensor | Sequence[int] | None = None
    ) -> torch.Tensor:
        """``v`` for the given subset indices (default all ``2**n``): float32 ``[len(masks)]``."""
        masks = _check_masks(probe, masks)
        with eval_mode(self.model), torch.no_grad():
            prep = self._prepare(probe)
            if masks.numel() == 0:
                return torch.empty(0, dtype=torch.float32, device=self.device)
            unique, inverse = torch.unique(masks, return_inverse=True)
            batch = self._auto_batch(prep.length, int(prep.targets.numel()))
            while True:
                try:
                    values = self._compute(prep, unique, batch)
                    break
                except _OOM_ERRORS:
                    if batch <= 1:
                        raise
                    batch = max(1, batch // 2)
                    if self.batch_size is not None:
                        self.batch_size = batch
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    warnings.warn(f"out of memory; retrying with batch_size={batch}", stacklevel=2)
        return values[inverse.to(values.device)]

    def many(self, probes: Sequence[Probe]) -> list[torch.Tensor]:
        """``v`` over all subsets for each probe."""
        return [self(p) for p in probes]

    def differentiable_values(
        self, probe: Probe, masks: torch.Tensor, baseline: torch.Tensor
    ) -> torch.Tensor:
        """Values with gradients flowing to ``baseline`` (for ``learn_baseline``); no caching."""
        prep = self._prepare(probe)
        masks = _check_masks(probe, masks).to(self.device)
        return self._flat_chunk(prep, masks, baseline.to(self.device))

    # -------------------------------------------------------------- internals
    def _prepare(self, probe: Probe) -> _Prepared:
        raise NotImplementedError

    def _flat_chunk(self, prep: _Prepared, masks: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _compute(self, prep: _Prepared, masks: torch.Tensor, batch: int) -> torch.Tensor:
        masks = masks.to(self.device)
        out = [
            self._flat_chunk(prep, masks[i : i + batch], self._baseline)
            for i in range(0, len(masks), batch)
        ]
        return torch.cat([o.to(self.device) for o in out])

    def _embed(self, ids: list[int]) -> torch.Tensor:
        t = torch.tensor(ids, dtype=torch.long, device=self.device)
        with torch.no_grad():
            return self.adapter.embedding(t[None])[0].detach()


class CausalLMValue(_MaskedValue):
    """``v(x_S) = Σ_i log(p_i / (1 − p_i))`` over target tokens, teacher-forced (DESIGN §2).

    Token ids are ``tokenizer(prompt).input_ids + tokenizer(target, add_special_tokens=False)``.
    ``batch_size=None`` picks one from free GPU memory (on a CPU: up to 256, within
    ``CPU_BATCH_MEMORY``) and halves it on CUDA OOM.
    ``prefix_sharing`` runs masks as a prefix tree over players (exact, much cheaper); models
    that cannot share a KV cache fall back to full batched passes. ``cache_memory`` bounds
    the bytes of KV cache the tree keeps alive (default: 1 GiB on CPU, a quarter of free
    GPU memory on CUDA). Returned tensors are float32 on the model's device.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        baseline: Baseline = "pad",
        batch_size: int | None = None,
        prefix_sharing: bool = True,
        cache_memory: int | None = None,
    ) -> None:
        super().__init__(model, tokenizer, baseline=baseline, batch_size=batch_size)
        self.prefix_sharing = prefix_sharing
        self.cache_memory = cache_memory
        self._warned: set[str] = set()
        obstacle = self.adapter.sharing_obstacle()
        if prefix_sharing and obstacle:
            warnings.warn(f"prefix sharing disabled: {obstacle}; using full passes", stacklevel=2)
            self.prefix_sharing = False

    def _prepare(self, probe: Probe) -> _Prepared:
        enc = encode_probe(probe, self.tokenizer)
        ids = enc.prompt_ids + enc.target_ids
        self._check_length(probe, len(ids), "prompt + target")
        inputs = ids[:-1]
        cover = enc.cover + [0] * (len(inputs) - len(enc.cover))
        return _Prepared(
            probe=probe,
            embeds=self._embed(inputs),
            cover=torch.tensor(cover, dtype=torch.long, device=self.device),
            bounds=enc.first_tokens(probe.n_players),
            targets=torch.tensor(enc.target_ids, dtype=torch.long, device=self.device),
        )

    def _values_from_logits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # float32 log-probs even for bf16/fp16 weights
        targets = targets.to(logits.device).expand(logits.shape[0], -1)  # head may sit elsewhere
        picked = logits.gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
        return log_odds_from_logprob(picked).sum(-1)

    def _flat_chunk(self, prep: _Prepared, masks: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        embeds = _masked(prep.embeds, prep.cover, masks, b)
        m = int(prep.targets.numel())
        return self._values_from_logits(self.adapter.target_logits(embeds, m), prep.targets)

    def _compute(self, prep: _Prepared, masks: torch.Tensor, batch: int) -> torch.Tensor:
        if not self.prefix_sharing:
            return super()._compute(prep, masks, batch)
        obstacle = self.adapter.sharing_obstacle(prep.length)
        if obstacle:
            if obstacle not in self._warned:
                self._warned.add(obstacle)
                warnings.warn(f"prefix sharing skipped: {obstacle}", stacklevel=3)
            return super()._compute(prep, masks, batch)
        try:
            return _PrefixTree(self, prep, masks, batch).run()
        except _OOM_ERRORS:
            raise
        except (TypeError, AttributeError, NotImplementedError, RuntimeError) as err:
            warnings.warn(
                f"prefix sharing failed for this model ({type(err).__name__}: {err}); "
                "falling back to full passes",
                stacklevel=3,
            )
            self.prefix_sharing = False
            return super()._compute(prep, masks, batch)

    def _cache_budget(self) -> int:
        if self.cache_memory is not None:
            return self.cache_memory
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free // 4)
        return CPU_CACHE_MEMORY


class _PrefixTree:
    """Depth-first walk over the prefix tree of players, in bounded chunks.

    Level ``j`` holds one KV cache row per distinct setting of players ``0..j-1`` (covering
    tokens ``[0, bounds[j])``). A child row appends the segment ``[bounds[j], bounds[j+1])``
    with player ``j`` kept or masked. The last segment (through the target) gives logits.
    Chunks bound both the batch and the live KV memory; every forward gets a fresh cache
    object built from the parent's tensors, which are never modified in place.
    """

    def __init__(
        self, owner: CausalLMValue, prep: _Prepared, masks: torch.Tensor, batch: int
    ) -> None:
        self.owner = owner
        self.adapter = owner.adapter
        self.prep = prep
        self.n = prep.probe.n_players
        n = self.n
        # Sorted by bits 0, 1, ... (bit-reversed order), every tree node is a contiguous range.
        values = masks.tolist()
        self.order = sorted(range(len(values)), key=lambda i: format(values[i], f"0{n}b")[::-1])
        self.sorted_masks = [values[i] for i in self.order]
        self.mask_tensor = torch.tensor(self.sorted_masks, dtype=torch.long, device=owner.device)
        self.batch = batch
        self.edges = prep.bounds + [prep.length]
        self.m = int(prep.targets.numel())
        self.b = owner.baseline
        self.out = torch.empty(len(masks), dtype=torch.float32, device=owner.device)
        self.kv_token = self.adapter.kv_bytes_per_token()
        self.per_level = owner._cache_budget() // max(n, 1)

    def _chunk(self, level: int) -> int:
        """Rows per forward at ``level``: the batch size, capped by the KV memory budget."""
        rows = self.per_level // max(1, self.kv_token * self.edges[level + 1])
        return max(1, min(self.batch, rows))

    def run(self) -> torch.Tensor:
        first = self.edges[0]
        prefix = self.prep.embeds[None, :first]
        kv = self.adapter.extend_cache(prefix, None) if first > 0 else None
        self._expand(0, kv, [(0, len(self.sorted_masks))])
        result = torch.empty_like(self.out)
        result[torch.tensor(self.order, device=self.out.device)] = self.out
        return result

    def _split(self, level: int, lo: int, hi: int) -> list[tuple[int, int]]:
        """Children of the node holding sorted masks ``[lo, hi)``: bit ``level`` 0, then 1."""
        cut = lo
        while cut < hi and not (self.sorted_masks[cut] >> level) & 1:
            cut += 1
        return [(a, b) for a, b in ((lo, cut), (cut, hi)) if b > a]

    def _expand(self, level: int, kv: KV | None, groups: list[tuple[int, int]]) -> None:
        """``groups[r]``: the range of sorted masks whose bits ``< level`` match KV row ``r``."""
        children = [
            (row, ab) for row, (lo, hi) in enumerate(groups) for ab in self._split(level, lo, hi)
        ]
        last = level == self.n - 1
        step = self.batch if last else self._chunk(level)
        lo, hi = self.edges[level], self.edges[level + 1]
        embeds, cover = self.prep.embeds[lo:hi], self.prep.cover[lo:hi]
        for start in range(0, len(children), step):
            chunk = children[start : start + step]
            rows = torch.tensor([r for r, _ in chunk], device=self.out.device)
            reps = self.mask_tensor[
                torch.tensor([a for _, (a, _) in chunk], device=self.out.device)
            ]
            parent = (
                None
                if kv is None
                else [(k[rows.to(k.device)], v[rows.to(v.device)]) for k, v in kv]
            )
            seg = _masked(embeds, cover, reps, self.b)
            if last:  # masks are unique, so each leaf is one mask
                logits = self.adapter.target_logits(seg, self.m, parent)
                vals = self.owner._values_from_logits(logits, self.prep.targets)
                self.out[chunk[0][1][0] : chunk[-1][1][1]] = vals.to(self.out.device)
            else:
                child_kv = parent if hi == lo else self.adapter.extend_cache(seg, parent)
                self._expand(level + 1, child_kv, [ab for _, ab in chunk])


class SequenceClassifierValue(_MaskedValue):
    """``v(x_S) = log(p_c / (1 − p_c))`` for class ``label`` of a sequence classifier.

    ``label`` is an int or a name from ``config.label2id``; when None, each probe's target is
    read as the label (name or id). An explicit ``label`` wins over the target. For a
    multi-label head (``problem_type="multi_label_classification"``) ``p_c`` is the sigmoid,
    so ``v`` is the clamped logit.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        label: int | str | None = None,
        baseline: Baseline = "pad",
        batch_size: int | None = None,
    ) -> None:
        super().__init__(model, tokenizer, baseline=baseline, batch_size=batch_size)
        self.num_labels = int(getattr(self.adapter.config, "num_labels", 0) or 0)
        if (
            self.num_labels < 2
            and getattr(self.adapter.config, "problem_type", None) != "multi_label_classification"
        ):
            raise ValueError(
                "SequenceClassifierValue needs a classification head with >= 2 labels "
                f"(config.num_labels={self.num_labels}); regression heads have no probability"
            )
        self.label = None if label is None else self._label_id(label, "label argument")

    def _label_id(self, label: int | str, where: str) -> int:
        if isinstance(label, int) and not isinstance(label, bool):
            idx = label
        else:
            text = str(label).strip()
            label2id = {
                str(k).lower(): int(v) for k, v in (self.adapter.config.label2id or {}).items()
            }
            if text.lower() in label2id:
                idx = label2id[text.lower()]
            elif text.lstrip("-").isdigit():
                idx = int(text)
            else:
                raise ValueError(
                    f"{where} {label!r} is not a label of the model (labels: "
                    f"{sorted(label2id)}); pass label=<name or id>"
                )
        if not 0 <= idx < self.num_labels:
            raise ValueError(f"{where} {label!r}: id {idx} out of range [0, {self.num_labels})")
        return idx

    def _prepare(self, probe: Probe) -> _Prepared:
        ids, cover = encode_prompt(probe, self.tokenizer)
        self._check_length(probe, len(ids), "the prompt")
        label = (
            self.label
            if self.label is not None
            else self._label_id(probe.target, f"probe {probe.id!r}: target")
        )
        return _Prepared(
            probe=probe,
            embeds=self._embed(ids),
            cover=torch.tensor(cover, dtype=torch.long, device=self.device),
            bounds=[],
            targets=torch.tensor([label], dtype=torch.long, device=self.device),
        )

    def _flat_chunk(self, prep: _Prepared, masks: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        embeds = _masked(prep.embeds, prep.cover, masks, b)
        logits = self.model_forward(embeds).float()
        label = int(prep.targets[0])
        if getattr(self.adapter.config, "problem_type", None) == "multi_label_classification":
            return log_odds_from_logprob(torch.nn.functional.logsigmoid(logits[:, label]))
        return log_odds_from_logprob(torch.log_softmax(logits, -1)[:, label])

    def model_forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.adapter.core(inputs_embeds=embeds).logits
