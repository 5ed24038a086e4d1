"""Models whose weights are sharded over ranks (FSDP, FSDP2, DeepSpeed ZeRO-3).

Which sharding wraps the model decides how a probe point runs
(:func:`resolve_mode`: ``"lockstep"`` for sharded weights, else ``"local"``, see
:mod:`sft_interaction_callback.engine.distributed`), and :func:`probe_parameters` makes the few
weights the value engine reads outside forward passes (the input embedding) readable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sft_interaction_callback.engine.distributed import Collective

__all__ = ["MODES", "probe_parameters", "resolve_mode", "sharded_parameters"]

MODES = ("auto", "local", "lockstep")


def sharded_parameters(trainer: Any, model: Any = None) -> str | None:
    """``"fsdp"`` / ``"fsdp2"`` / ``"deepspeed3"`` for weights sharded over ranks, else None."""
    accelerator = getattr(trainer, "accelerator", None)
    state = getattr(accelerator, "state", None)
    plugin = getattr(state, "fsdp_plugin", None)
    if getattr(trainer, "is_fsdp_enabled", False) or plugin is not None:
        version = getattr(plugin, "fsdp_version", 1) if plugin is not None else 1
        return "fsdp2" if version == 2 else "fsdp"
    ds = getattr(state, "deepspeed_plugin", None)
    if getattr(trainer, "is_deepspeed_enabled", False) or ds is not None:
        stage = getattr(ds, "zero_stage", None)
        if stage is None:
            try:
                from transformers.integrations import is_deepspeed_zero3_enabled

                stage = 3 if is_deepspeed_zero3_enabled() else 0
            except ImportError:  # pragma: no cover
                stage = 0
        if stage == 3:
            return "deepspeed3"
    for root in (getattr(trainer, "model_wrapped", None), getattr(trainer, "model", None), model):
        if root is None or not hasattr(root, "modules"):
            continue
        kind = _sharding_of(root)
        if kind is not None:
            return kind
    return None


def _sharding_of(root: Any) -> str | None:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - older torch
        FSDPModule = ()  # noqa: N806
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover
        FullyShardedDataParallel = ()  # noqa: N806
    for m in root.modules():
        if FSDPModule and isinstance(m, FSDPModule):
            return "fsdp2"
        if FullyShardedDataParallel and isinstance(m, FullyShardedDataParallel):
            return "fsdp"
    for p in root.parameters():
        if hasattr(p, "ds_id"):
            return "deepspeed3"
        break
    return None


def resolve_mode(mode: str, comm: Collective, trainer: Any, model: Any = None) -> str:
    """``"local"`` or ``"lockstep"`` for this run (``"auto"``: lockstep iff sharded weights)."""
    if mode not in MODES:
        raise ValueError(f"distributed mode {mode!r}: use one of {MODES}")
    if not comm.active:
        return "local"
    if mode != "auto":
        return mode
    return "lockstep" if sharded_parameters(trainer, model) else "local"


@contextlib.contextmanager
def probe_parameters(trainer: Any, model: Any, kind: str | None) -> Iterator[None]:
    """Make the weights the engine touches *outside* forward passes usable while probing.

    The value engine reads the input embedding directly (to embed probes and resolve the
    baseline); forward passes of wrapped sub-modules gather their own shards.

    * FSDP (1): ``summon_full_params(root, recurse=False)`` unshards only the root unit
      (embeddings, final norm, head when not wrapped separately); nested units keep
      gathering their shards in their own forward passes.
    * FSDP2: ``unshard()`` of the root module's own parameter group, ``reshard()`` after.
    * ZeRO-3: ``GatheredParameters`` of the input embedding's weight.

    Collective on entry and exit: every rank must enter, even one that will fail.
    """
    if kind is None:
        yield
        return
    if kind == "fsdp":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        root = getattr(trainer, "model_wrapped", None)
        if not isinstance(root, FSDP):
            root = next(
                (m for m in (model.modules() if model else []) if isinstance(m, FSDP)), None
            )
        if root is None:
            yield
            return
        with FSDP.summon_full_params(root, recurse=False, writeback=False):
            yield
        return
    if kind == "fsdp2":
        from torch.distributed.fsdp import FSDPModule

        roots = [
            m for m in (model.modules() if model is not None else []) if isinstance(m, FSDPModule)
        ]
        root = roots[0] if roots else None
        if root is None:
            yield
            return
        root.unshard()
        try:
            yield
        finally:
            root.reshard()
        return
    if kind == "deepspeed3":
        import deepspeed

        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        params = [emb.weight] if emb is not None else []
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield
        return
    yield
