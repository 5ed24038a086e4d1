"""What the value engine needs to know about a Hugging Face model, across versions.

Wrappers (DDP, PEFT LoRA) are looked through so that the engine calls the module that
actually holds the (adapted) weights; the cache keyword (``cache`` in transformers 5,
``past_key_values`` before) and ``logits_to_keep`` support are read from forward signatures
instead of being assumed.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

KV = list[tuple[torch.Tensor, torch.Tensor]]

_WINDOW_ATTR = {"sliding_attention": "sliding_window", "chunked_attention": "attention_chunk_size"}
_MAX_LEN_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module to call: through DDP/DataParallel, torch.compile, and PEFT to its
    (LoRA-injected) base. Masks change the batch size, which would only make a compiled
    module recompile."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            break
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        cfg = getattr(model, "active_peft_config", None)
        if getattr(cfg, "is_prompt_learning", False):
            raise NotImplementedError(
                "prompt-learning PEFT adapters (prefix/prompt tuning) add virtual tokens, which "
                "the masking engine does not model; use a LoRA-style adapter or merge it first"
            )
        model = model.get_base_model()
    return model


def _forward_params(module: nn.Module) -> set[str]:
    try:
        return set(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return set()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the duration; every module's own flag restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in modes:
            m.training = flag


class ModelAdapter:
    """Uniform access to embeddings, forward passes with/without KV cache, and limits."""

    def __init__(self, model: nn.Module) -> None:
        self.wrapper = model
        self.core = unwrap_model(model)
        self.embedding = self.core.get_input_embeddings()
        weight = self.embedding.weight
        self.device = weight.device
        self.dtype = weight.dtype
        self.hidden_size = int(weight.shape[-1])
        config = self.core.config
        self.config = config
        get_text = getattr(config, "get_text_config", None)
        self.text_config = get_text(decoder=True) if callable(get_text) else config
        params = _forward_params(self.core)
        self.cache_kw = _cache_kw(params)
        self.has_logits_to_keep = "logits_to_keep" in params
        backbone = getattr(self.core, "base_model", self.core)
        self.backbone = backbone if backbone is not self.core else None
        self.backbone_cache_kw = _cache_kw(_forward_params(backbone)) if self.backbone else None

    # ----------------------------------------------------------------- limits
    @property
    def max_length(self) -> int | None:
        for key in _MAX_LEN_KEYS:
            value = getattr(self.text_config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def sharing_obstacle(self, length: int | None = None) -> str | None:
        """Why prefix KV sharing would not be exact for this model (None if it is).

        Sliding-window / chunked layers are exact as long as the whole probe fits in the
        window, so with ``length=None`` only permanent obstacles are reported.
        """
        cfg = self.text_config
        if self.cache_kw is None:
            return "its forward takes no KV cache"
        if getattr(self.config, "is_encoder_decoder", False):
            return "it is an encoder-decoder model"
        types = getattr(cfg, "layer_types", None)
        windows: list[tuple[str, int | None]] = []
        if types is not None:
            for kind in sorted(set(types)):
                if kind == "full_attention":
                    continue
                if kind not in _WINDOW_ATTR:
                    return f"it has {kind} layers"
                windows.append((kind, getattr(cfg, _WINDOW_ATTR[kind], None)))
        elif getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
            windows.append(("sliding-window", cfg.sliding_window))
        for kind, window in windows:
            if length is not None and window is not None and length > window:
                return f"its {kind} layers see {window} tokens, fewer than the probe's {length}"
        return None

    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token costs (all layers); a config-based estimate."""
        cfg = self.text_config
        layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 1)
        heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", 1)
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or self.hidden_size // max(heads, 1)
        elem = torch.empty((), dtype=self.dtype).element_size()
        return int(2 * layers * kv_heads * head_dim * elem)

    def activation_bytes_per_token(self) -> int:
        cfg = self.text_config
        inter = getattr(cfg, "intermediate_size", None) or 4 * self.hidden_size
        elem = torch.empty((), dtype=self.dtype).element_size()
        return int((8 * self.hidden_size + 3 * inter) * elem)

    # ---------------------------------------------------------------- forward
    def target_logits(self, embeds: torch.Tensor, m: int, kv: KV | None = None) -> torch.Tensor:
        """Logits ``[batch, m, vocab]`` at the last ``m`` positions only, never the full length."""
        kwargs: dict[str, Any] = {"inputs_embeds": embeds}
        if kv is not None:
            kwargs[self.cache_kw] = make_cache(kv)
            kwargs["use_cache"] = True
        else:
            kwargs["use_cache"] = False
        if self.has_logits_to_keep:
            logits = self.core(**kwargs, logits_to_keep=m).logits
            return logits[:, -m:]
        if self.backbone is None:
            return self.core(**kwargs).logits[:, -m:]
        if kv is not None:
            kwargs[self.backbone_cache_kw] = kwargs.pop(self.cache_kw)
        hidden = self.backbone(**kwargs).last_hidden_state[:, -m:]
        logits = self.core.get_output_embeddings()(hidden)
        cap = getattr(self.text_config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def extend_cache(self, embeds: torch.Tensor, kv: KV | None) -> KV:
        """Run ``embeds`` after the cached prefix ``kv``; return the KV of prefix + embeds.

        A fresh cache object is built for every call, so a parent's tensors are never
        modified: children of one prefix-tree node can reuse them safely.
        """
        cache = make_cache(kv)
        if self.backbone is not None and self.backbone_cache_kw is not None:
            self.backbone(inputs_embeds=embeds, **{self.backbone_cache_kw: cache}, use_cache=True)
        else:
            kwargs: dict[str, Any] = {"inputs_embeds": embeds, self.cache_kw: cache}
            if self.has_logits_to_keep:
                kwargs["logits_to_keep"] = 1
            self.core(**kwargs, use_cache=True)
        return kv_of(cache)


def _cache_kw(params: set[str]) -> str | None:
    if "cache" in params:
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    return None


def make_cache(kv: KV | None) -> Any:
    """A DynamicCache holding ``kv`` (one ``(key, value)`` per layer), or an empty one.

    The tensors are adopted without a copy (the constructor would concatenate them onto
    empty tensors); the forward pass concatenates new keys onto them into fresh tensors,
    so the caller's ``kv`` is never written to.
    """
    from transformers import DynamicCache

    if kv is None:
        return DynamicCache()
    try:
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache()
        layers = cache.layers
        for k, v in kv:
            layer = DynamicLayer()
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
            layers.append(layer)
        if cache.get_seq_length() == kv[0][0].shape[-2]:
            return cache
    except (ImportError, AttributeError, TypeError, ValueError):  # other transformers versions
        pass
    return DynamicCache(list(kv))


def kv_of(cache: Any) -> KV:
    """Per-layer ``(key, value)`` tensors of a cache filled by a forward pass."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    if hasattr(cache, "key_cache"):  # transformers 4.x DynamicCache
        return list(zip(cache.key_cache, cache.value_cache, strict=True))
    return [(k, v) for k, v, *_ in cache]  # legacy tuple of tuples
