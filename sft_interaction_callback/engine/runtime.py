"""Do-no-harm guards: probing a model mid-training must leave training exactly as it was.

:func:`preserved_training_state` wraps a probe point. On exit it restores the Python,
NumPy, torch (CPU) and CUDA RNG states, every module's ``training`` flag, the model
config's ``use_cache``, and every parameter's ``.grad`` reference; it runs the body
under ``torch.no_grad()``. Gradient checkpointing is never toggled (it is only read, to
warn if something else changed it). :func:`is_out_of_memory` recognises the OOM errors
that a probe point turns into a skip, and :func:`free_memory` releases what it can.
"""

from __future__ import annotations

import contextlib
import gc
import random
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from sft_interaction_callback.cpus import usable_cpus

__all__ = [
    "RNGState",
    "usable_cpus",
    "free_memory",
    "is_out_of_memory",
    "preserved_training_state",
    "adapters_disabled",
]

_OOM_TYPES: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError}
)


class RNGState:
    """A snapshot of every global RNG a training loop may draw from."""

    def __init__(self) -> None:
        self.python = random.getstate()
        try:
            import numpy as np

            self.numpy: Any = np.random.get_state()
        except ImportError:  # pragma: no cover - numpy is a dependency of torch users
            self.numpy = None
        self.torch = torch.get_rng_state()
        self.cuda = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.cuda = torch.cuda.get_rng_state_all()

    def restore(self) -> None:
        random.setstate(self.python)
        if self.numpy is not None:
            import numpy as np

            np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def _configs(model: nn.Module) -> list[Any]:
    """Distinct config objects that carry ``use_cache`` (the model's and its text config)."""
    out: list[Any] = []
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is None or not hasattr(cfg, "use_cache"):
            continue
        if not any(cfg is c for c in out):
            out.append(cfg)
        get_text = getattr(cfg, "get_text_config", None)
        if callable(get_text):
            try:
                text = get_text(decoder=True)
            except TypeError:  # pragma: no cover - older signatures
                text = get_text()
            if text is not None and hasattr(text, "use_cache") and not any(text is c for c in out):
                out.append(text)
    return out


def _checkpointing(model: nn.Module) -> bool | None:
    """Whether activation (gradient) checkpointing is on; None when the model cannot say.

    Reads the modules' own ``gradient_checkpointing`` flags (what transformers' property
    reads) rather than the model property, whose old name warns in transformers 5.
    """
    flags = [getattr(m, "gradient_checkpointing", None) for m in model.modules()]
    flags = [f for f in flags if isinstance(f, bool)]
    return any(flags) if flags else None


@contextlib.contextmanager
def preserved_training_state(model: nn.Module | None) -> Iterator[None]:
    """Run the body under ``no_grad`` and put RNGs, modes, cache flags and grads back."""
    rng = RNGState()
    modes: list[tuple[nn.Module, bool]] = []
    caches: list[tuple[Any, Any]] = []
    grads: list[tuple[nn.Parameter, Any]] = []
    checkpointing = None
    if model is not None:
        modes = [(m, m.training) for m in model.modules()]
        caches = [(c, c.use_cache) for c in _configs(model)]
        grads = [(p, p.grad) for p in model.parameters()]
        checkpointing = _checkpointing(model)
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in modes:
            m.training = flag
        for cfg, value in caches:
            cfg.use_cache = value
        for p, g in grads:
            if p.grad is not g:
                p.grad = g
        rng.restore()
        if model is not None and _checkpointing(model) != checkpointing:  # pragma: no cover
            warnings.warn(
                "gradient checkpointing changed while probing; it was not touched by the "
                "interaction callback, check other code running in the callback",
                stacklevel=3,
            )


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[bool]:
    """Disable PEFT adapters for the duration (yields whether any were disabled).

    Works with a ``peft.PeftModel`` (its ``disable_adapter()`` context) and with a
    transformers model holding adapters through its PEFT integration
    (``disable_adapters()`` / ``enable_adapters()``).
    """
    disable_ctx = getattr(model, "disable_adapter", None)
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model") and callable(disable_ctx):
        with disable_ctx():
            yield True
        return
    if getattr(model, "_hf_peft_config_loaded", False) and hasattr(model, "disable_adapters"):
        model.disable_adapters()
        try:
            yield True
        finally:
            model.enable_adapters()
        return
    yield False


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA (or other accelerator) out-of-memory errors.

    Also for errors that carry ``out_of_memory = True`` (a
    :class:`~sft_interaction_callback.engine.distributed.PeerFailure` raised on every rank when
    some rank ran out of memory) and for the ``RuntimeError`` wording of other backends
    (``"CUDA error: out of memory"``, ``"MPS backend out of memory"``, ...).
    """
    if isinstance(err, _OOM_TYPES) or getattr(err, "out_of_memory", False) is True:
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def free_memory() -> None:
    """Collect garbage and return cached accelerator memory to the driver."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def probing_threads(model: nn.Module | None, threads: int | None) -> Iterator[int]:
    """Torch's intra-op threads for a probe point on the CPU, restored afterwards.

    ``threads=None`` (the default) leaves the training's count alone. An int sets it for
    the masked forward passes of a model on the CPU: on an otherwise idle machine,
    training that runs a tiny model on one thread can probe on every core
    (:func:`usable_cpus`). Not the default because on a shared CPU it backfires badly:
    measured on this project's 2-core machine under load, one forward pass of the demo
    model took 0.015 s on one thread and 0.24-0.39 s on two (OpenMP threads waiting for
    busy cores). A model on an accelerator is left alone. Thread counts change no
    training result: they are restored before training resumes.
    """
    before = torch.get_num_threads()
    first = None if model is None else next(iter(model.parameters()), None)
    on_cpu = first is None or first.device.type == "cpu"
    wanted = threads if (threads is not None and on_cpu) else before
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
