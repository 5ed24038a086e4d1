"""The probing engine: model + probes -> values of every masked input -> AND-OR interactions.

:class:`ValueExtractor` is the one place that runs a model on masked probes and fits
interactions to the values. It owns what makes that robust inside a training run: the
baseline fixed at step 0, the out-of-memory back-off, sharding the masks over ranks and
agreeing on failures, and the do-no-harm guards (:meth:`ValueExtractor.measure`). The
callback calls :meth:`~ValueExtractor.measure` once per probe point.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from sft_interaction_callback.andor import AndOrInteractions, fit_and_or
from sft_interaction_callback.config import InteractionConfig
from sft_interaction_callback.engine.distributed import (
    Collective,
    LockstepRunner,
    PeerFailure,
    gather_rows,
    shard_plan,
)
from sft_interaction_callback.engine.runtime import (
    adapters_disabled,
    free_memory,
    is_out_of_memory,
    preserved_training_state,
    probing_threads,
)
from sft_interaction_callback.probing import (
    CausalLMValue,
    Probe,
    SequenceClassifierValue,
    learn_baseline,
)
from sft_interaction_callback.probing.values import CPU_BATCH_SIZE

__all__ = ["LOCKSTEP_BATCH", "NonFiniteValues", "ValueExtractor"]


class NonFiniteValues(ValueError):
    """The model produced NaN or inf values on a probe: the point is skipped."""


class ValueExtractor:
    """Values of every masked input, then AND-OR interactions, for a list of probes.

    The baseline is resolved once (at the first call, i.e. step 0) and the same vector is
    used at every later checkpoint, so the masked inputs are the same across training
    (for ``"learned"`` it is fitted then, on the probes).

    Out of memory: the value engine halves its batch on ``torch.OutOfMemoryError``; an
    OOM it does not handle (the ``RuntimeError`` wording of some backends) is retried
    here with half the batch, down to 1, and then raised (the callback skips the point).
    A reduced batch size is kept for later probe points.

    Many processes (``comm`` active, see :mod:`sft_interaction_callback.engine.distributed`): the
    masks are sharded over the ranks, failures are agreed on (every rank raises
    :class:`~sft_interaction_callback.engine.distributed.PeerFailure` together), the values are
    gathered so that every rank holds the same ``v``, and the AND-OR fit runs on rank 0
    and is broadcast, so every rank holds the same interactions. With ``lockstep`` (FSDP,
    ZeRO-3) every rank runs the same forward passes in chunks of one agreed batch size.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        kind: str,
        baseline: Any = "pad",
        batch_size: int | None = None,
        noise_bound: float = 0.02,
        solver: str = "default",
        solver_options: Mapping[str, Any] | None = None,
        comm: Collective | None = None,
        lockstep: bool = False,
        threads: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.kind = kind
        self.baseline_spec = baseline
        self.baseline: torch.Tensor | None = (
            baseline.detach().clone() if isinstance(baseline, torch.Tensor) else None
        )
        self.batch_size = batch_size
        self.noise_bound = noise_bound
        self.solver = solver
        self.solver_options = dict(solver_options or {})
        self.comm = comm
        self.lockstep = lockstep
        #: torch threads while probing on a CPU (None: every usable core; see probing_threads)
        self.threads = threads
        #: value-function calls of the last :meth:`values` on this rank, and their masks
        self.last_calls = 0
        self.last_masks = 0
        self._oom = False
        #: called with the number of masks after each value call (a progress bar), or None
        self.on_masks: Any = None
        #: causal LMs: prefix tree (True) or full passes (False), chosen once by timing
        #: (:meth:`_choose_path`); None until then
        self.prefix_sharing: bool | None = None

    @classmethod
    def from_config(
        cls,
        cfg: InteractionConfig,
        tokenizer: Any,
        *,
        kind: str,
        baseline: Any,
        comm: Collective | None = None,
        lockstep: bool = False,
    ) -> ValueExtractor:
        """An extractor with the config's batch size and solver settings."""
        return cls(
            tokenizer,
            kind=kind,
            baseline=baseline,
            batch_size=cfg.probe_batch_size,
            noise_bound=cfg.noise_bound,
            solver=cfg.solver,
            solver_options=cfg.solver_options,
            comm=comm,
            lockstep=lockstep,
            threads=cfg.probe_threads,
        )

    def _comm(self) -> Collective:
        return self.comm if self.comm is not None else Collective()

    def _make_fn(self, model: nn.Module, baseline: Any) -> Any:
        cls = SequenceClassifierValue if self.kind == "classifier" else CausalLMValue
        kw: dict[str, Any] = {}
        if self.lockstep and cls is CausalLMValue:
            kw["prefix_sharing"] = False  # the same forward calls on every rank
        elif cls is CausalLMValue and self.prefix_sharing is not None:
            kw["prefix_sharing"] = self.prefix_sharing
        return cls(model, self.tokenizer, baseline=baseline, batch_size=self.batch_size, **kw)

    def _value_fn(self, model: nn.Module, probes: Sequence[Probe]) -> Any:
        if self.baseline is not None:
            return self._make_fn(model, self.baseline)
        spec = "pad" if self.baseline_spec == "learned" else self.baseline_spec
        if spec == "pad" and getattr(self.tokenizer, "pad_token_id", None) is None:
            spec = "unk" if getattr(self.tokenizer, "unk_token_id", None) is not None else "zero"
            warnings.warn(
                f"the tokenizer has no pad token; using the {spec!r} baseline", stacklevel=3
            )
        fn = self._make_fn(model, spec)
        if self.baseline_spec == "learned":
            with torch.enable_grad():
                learned = learn_baseline(fn, self.tokenizer, list(probes), init=spec)
            fn = self._make_fn(model, learned)
        self.baseline = fn.baseline.detach().clone()
        return fn

    def _call(self, fn: Any, probe: Probe, masks: torch.Tensor | None) -> torch.Tensor:
        """``fn(probe[, masks])`` with the OOM back-off the engine does not do itself."""
        self.last_calls += 1
        self.last_masks += (1 << probe.n_players) if masks is None else int(masks.numel())
        while True:
            try:
                out = fn(probe) if masks is None else fn(probe, masks)
                if self.on_masks is not None:
                    self.on_masks((1 << probe.n_players) if masks is None else int(masks.numel()))
                return out
            except Exception as err:
                if not is_out_of_memory(err):
                    raise
                self._oom = True
                free_memory()
                current = fn.batch_size or self.batch_size or CPU_BATCH_SIZE
                if isinstance(err, _ENGINE_OOM) or current <= 1:
                    raise  # the engine has already halved down to 1 (or nothing is left)
                fn.batch_size = self.batch_size = max(1, current // 2)
                warnings.warn(
                    f"out of memory while probing; retrying with batch_size={fn.batch_size}",
                    stacklevel=3,
                )

    def values(self, model: nn.Module, probes: Sequence[Probe]) -> torch.Tensor:
        """``v [num_probes, 2**n]`` (float32, on the model's device)."""
        self.last_calls = self.last_masks = 0
        self._oom = False
        start_batch = self.batch_size
        comm = self._comm()
        fresh = self.baseline is None
        error: BaseException | None = None
        fn = None
        try:
            fn = self._value_fn(model, probes)
        except Exception as err:  # noqa: BLE001 - agreed on by every rank just below
            error = err
        try:
            comm.agree(error, "preparing the value function")
        except BaseException:
            if fresh:
                self.baseline = None  # every rank resolves it again next time
            raise
        if fresh and comm.active:  # rank 0's baseline everywhere (a learned one may differ)
            self.baseline = comm.broadcast_tensor(self.baseline)
            fn = self._make_fn(model, self.baseline)
        if self.prefix_sharing is None and getattr(fn, "prefix_sharing", False) and probes:
            self._choose_path(fn, probes[0], comm)
        if not comm.active:
            v = torch.stack([self._call(fn, p, None).float() for p in probes])
        else:
            v = self._sharded_values(fn, probes, comm).to(fn.device)
        if fn.batch_size is not None and (
            self.batch_size is None or fn.batch_size < self.batch_size
        ):
            self.batch_size = fn.batch_size  # keep what the engine learned about memory
        shrunk = None not in (start_batch, self.batch_size) and self.batch_size < start_batch
        if self._oom or shrunk:
            free_memory()  # an OOM was survived: hand the cached blocks back
        if not bool(torch.isfinite(v).all()):
            bad = [p.id for p, row in zip(probes, v, strict=True) if not torch.isfinite(row).all()]
            raise NonFiniteValues(f"non-finite values (NaN/inf) for probe(s) {bad}")
        return v

    def _choose_path(self, fn: Any, probe: Probe, comm: Collective) -> None:
        """Prefix tree or full batched passes: whichever evaluates ``probe`` faster, once.

        The tree saves the arithmetic of the shared prefixes (large models, long prompts)
        but makes ``n + 1`` forward calls per chunk; on a small model the calls' fixed cost
        wins and full passes are faster (the demo's model: 0.04 s against 0.07 s for 8
        probes at ``n = 6``). Both give the same values (to float rounding), so the choice,
        made at the first probe point and kept for the run (rank 0's on many ranks), only
        sets the speed. A failure keeps the tree, as before.
        """
        best: tuple[float, bool] | None = None
        try:
            for sharing in (True, False, True, False):  # twice each: the first call warms up
                fn.prefix_sharing = sharing
                start = time.perf_counter()
                fn(probe)
                seconds = time.perf_counter() - start
                if sharing and not fn.prefix_sharing:  # the tree failed: full passes it is
                    best = (0.0, False)
                    break
                if best is None or seconds < best[0]:
                    best = (seconds, sharing)
        except Exception:  # noqa: BLE001 - the value call below raises it again if it is real
            best = None
        choice = True if best is None else best[1]
        if comm.active:
            choice = bool(comm.broadcast_object(choice))
        self.prefix_sharing = fn.prefix_sharing = choice

    def _sharded_values(self, fn: Any, probes: Sequence[Probe], comm: Collective) -> torch.Tensor:
        n = probes[0].n_players
        plan = shard_plan(len(probes), n, comm.world_size, comm.rank, lockstep=self.lockstep)
        local: list[torch.Tensor] = []
        if self.lockstep:
            batch = comm.min_int(self.batch_size or LOCKSTEP_BATCH)
            runner = LockstepRunner(comm, batch, on_oom=self._on_lockstep_oom)

            def one(probe: Probe, chunk: torch.Tensor) -> torch.Tensor:
                fn.batch_size = runner.batch
                self.last_calls += 1
                self.last_masks += int(chunk.numel())
                out = fn(probe, chunk)
                if self.on_masks is not None:
                    self.on_masks(int(chunk.numel()))
                return out

            for p, masks in plan.calls:
                local.append(runner.run(one, probes[p], masks))
            if runner.batch < batch:
                self.batch_size = runner.batch
        else:
            error: BaseException | None = None
            try:
                for p, masks in plan.calls:
                    local.append(self._call(fn, probes[p], masks))
            except Exception as err:  # noqa: BLE001 - every rank learns about it below
                error = err
            comm.agree(error, "probing")
        return gather_rows(comm, plan, local)

    def _on_lockstep_oom(self) -> None:
        self._oom = True
        free_memory()

    def measure(
        self,
        model: nn.Module,
        probes: Sequence[Probe],
        *,
        weights: AbstractContextManager[Any] | None = None,
        base: bool = False,
    ) -> AndOrInteractions:
        """The interactions of ``model`` on ``probes`` (values ``v`` included), leaving
        training untouched. They carry the probes' ids and words (tables, snapshots).

        ``weights``: what makes sharded weights readable outside forward passes (FSDP,
        ZeRO-3; :func:`~.sharded_weights.probe_parameters`). ``base``:
        with PEFT adapters disabled (the model before SFT). Collective on many ranks.
        """
        with (
            weights if weights is not None else nullcontext(),
            preserved_training_state(model),
            adapters_disabled(model) if base else nullcontext(),
            probing_threads(model, self.threads),
        ):
            start = time.perf_counter()
            v = self.values(model, probes)
            forward = time.perf_counter() - start
            inter = self.interactions(v)
            fit = time.perf_counter() - start - forward
        ids, words = [p.id for p in probes], [list(p.words) for p in probes]
        meta = {**inter.meta, "seconds": {"forward": forward, "fit": fit}}
        return dataclasses.replace(inter, probe_ids=ids, words=words, meta=meta)

    def interactions(self, v: torch.Tensor) -> AndOrInteractions:
        """The AND-OR fit of ``v``: on rank 0, broadcast to every rank (on the CPU)."""
        comm = self._comm()
        if not comm.active:
            return self._fit(v)
        payload: tuple[Any, ...] = ("skip",)
        if comm.is_main:
            try:
                payload = ("ok", self._fit(v))
            except Exception as err:  # noqa: BLE001 - sent to every rank, raised there
                payload = ("error", type(err).__name__, str(err))
        payload = comm.broadcast_object(payload)
        if payload[0] == "ok":
            return payload[1]
        if payload[1] == NonFiniteValues.__name__:
            raise NonFiniteValues(payload[2])
        raise PeerFailure(f"the AND-OR fit failed on rank 0: {payload[1]}: {payload[2]}")

    def _fit(self, v: torch.Tensor) -> AndOrInteractions:
        out = fit_and_or(v, noise_bound=self.noise_bound, solver=self.solver, **self.solver_options)
        finite = all(
            bool(torch.isfinite(t).all()) for t in (out.i_and, out.i_or)
        ) and math.isfinite(float(out.i_and.abs().sum()))
        if not finite:
            raise NonFiniteValues("the AND-OR fit produced non-finite interactions")
        return out.to("cpu")


#: The OOM errors the value engine already answers by halving its batch (down to 1).
_ENGINE_OOM: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError}
)
#: Masks per forward pass in lockstep mode when ``probe_batch_size`` is not set.
LOCKSTEP_BATCH = 32
