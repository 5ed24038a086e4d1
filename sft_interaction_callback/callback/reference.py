"""The reference model: a different model probed once, for generalizability (gamma).

A reference model does not train, so its interactions are extracted once, on the same
probes and word players as the trained model, and cached on disk by the callback.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sft_interaction_callback.andor import AndOrInteractions
from sft_interaction_callback.callback.state import CallbackState
from sft_interaction_callback.callback.trainer_inputs import model_kind
from sft_interaction_callback.config import InteractionConfig
from sft_interaction_callback.engine.distributed import Collective
from sft_interaction_callback.engine.extractor import ValueExtractor
from sft_interaction_callback.engine.runtime import free_memory
from sft_interaction_callback.probing import Probe
from sft_interaction_callback.snapshots import try_write

__all__ = [
    "add_reference",
    "load_reference",
    "load_reference_tokenizer",
    "model_device",
    "probe_reference",
]


def add_reference(
    cfg: InteractionConfig, rs: CallbackState, model: nn.Module, comm: Collective, *, main: bool
) -> None:
    """Probe ``cfg.reference_model`` once: into the tracker and ``reference.safetensors``.

    A reference model that fails only costs gamma (a warning); the config's handle on it
    is dropped either way, so that its memory can be freed.
    """
    try:
        extractor = rs.extractor
        name, inter = probe_reference(
            cfg, model, rs.probes, kind=extractor.kind, tokenizer=extractor.tokenizer, comm=comm
        )
        rs.tracker.set_reference(inter)
        if main:
            write = rs.snapshots.write_reference
            try_write("reference", lambda: write(inter, {"model": name}))
    except Exception as err:  # noqa: BLE001
        warnings.warn(
            f"the reference model could not be probed ({type(err).__name__}: {err}); "
            "tracking continues without generalizability (gamma)",
            stacklevel=4,
        )
    finally:
        cfg.reference_model = None  # drop this callback's handle on it
        free_memory()


def probe_reference(
    cfg: InteractionConfig,
    model: nn.Module,
    probes: Sequence[Probe],
    *,
    kind: str,
    tokenizer: Any,
    comm: Collective,
) -> tuple[str, AndOrInteractions]:
    """Load and probe ``cfg.reference_model`` on every rank: ``(class name, interactions)``.

    A reference model is a plain module on each rank (never sharded by the trainer),
    so it is probed in local mode; a rank that cannot load it makes every rank give up.
    A model object given by the user goes back to the device it came from. ``kind`` and
    ``tokenizer`` are those of the trained model (used when the reference has none).
    """
    ref = owned = original = tok = None
    error = None
    try:
        try:
            ref, owned = load_reference(cfg.reference_model, kind, model_device(model))
            original = model_device(ref)
            ref.to(model_device(model))
            tok = load_reference_tokenizer(cfg.reference_model, cfg.reference_tokenizer, tokenizer)
        except Exception as err:  # noqa: BLE001 - agreed on below
            error = err
        comm.agree(error, "loading the reference model")
        extractor = ValueExtractor(
            tok,
            kind=model_kind(ref),
            baseline=cfg.baseline if isinstance(cfg.baseline, str) else "pad",
            batch_size=cfg.probe_batch_size,
            noise_bound=cfg.noise_bound,
            solver=cfg.solver,
            solver_options=cfg.solver_options,
            comm=comm,
        )
        return type(ref).__name__, extractor.measure(ref, probes)
    finally:
        if ref is not None and not owned and original is not None:
            ref.to(original)
        del ref


def load_reference(spec: Any, kind: str, device: torch.device) -> tuple[nn.Module, bool]:
    """``(model, owned)``: the reference model on ``device``; ``owned`` if loaded here."""
    if isinstance(spec, nn.Module):
        return spec, False
    if isinstance(spec, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        cls = AutoModelForSequenceClassification if kind == "classifier" else AutoModelForCausalLM
        model = cls.from_pretrained(str(spec))
        return model.to(device).eval(), True
    raise ValueError(f"reference_model must be a model or a path, got {type(spec).__name__}")


def load_reference_tokenizer(spec: Any, given: Any, fallback: Any) -> Any:
    """``given``, else the tokenizer saved with a reference model path, else ``fallback``."""
    if given is not None:
        return given
    if isinstance(spec, (str, os.PathLike)):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(spec))
    return fallback


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")  # pragma: no cover - a model without parameters
