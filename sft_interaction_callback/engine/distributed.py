"""Collectives for probing under ``torch.distributed`` (DDP, FSDP, DeepSpeed ZeRO-3).

Everything here is a no-op in a single process (``torch.distributed`` absent, not
initialised, or a world of one), so the callback calls it unconditionally.

How a probe point runs on ``W`` ranks (DESIGN §8, "sharding masks over data-parallel
ranks"):

* :func:`shard_plan` cuts the ``P * 2**n`` (probe, mask) pairs into ``W`` blocks of one
  fixed size (the last block is padded). Masks are taken in bit-reversed order (players
  0, 1, ... fixed first), so a block is a run of whole sub-trees of the prefix tree that
  the value engine walks: the KV cache of a prompt prefix is shared inside a block.
* Each rank evaluates its block; :meth:`Collective.any` then tells every rank whether
  some rank failed (OOM, NaN, exception) and :meth:`Collective.all_gather_object` says
  which and why, so that **all** ranks skip the point together.
* :meth:`Collective.all_gather` collects the fixed-size blocks; :meth:`ShardPlan.assemble`
  puts them back into ``v[P, 2**n]``: every rank holds identical values.

Two ways of running the forward passes (chosen by
:func:`~sft_interaction_callback.engine.sharded_weights.resolve_mode`):

* ``"local"`` (DDP, or no data parallelism): each rank holds all weights, a forward pass
  involves no collective, and each rank walks its own masks with prefix sharing.
* ``"lockstep"`` (FSDP, DeepSpeed ZeRO-3): parameters are gathered inside forward
  passes, so every rank must run the same forward calls in the same order (a rank that
  skips one hangs the job). The plan then gives every rank the same number of masks of
  every probe (padded with distinct masks, which the engine does not de-duplicate
  away), passes run without prefix sharing in chunks of one agreed batch size, and the
  ranks agree after every chunk whether to go on, halve the batch together (OOM) or
  skip the point together (:class:`LockstepRunner`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Collective",
    "LockstepRunner",
    "PeerFailure",
    "ShardPlan",
    "bit_reversed_order",
    "shard_plan",
]


class PeerFailure(RuntimeError):
    """A probe point failed on some rank; every rank raises this (and skips the point).

    ``out_of_memory`` is True when the failure was an out-of-memory error, so that the
    skip is reported as one on every rank.
    """

    def __init__(self, message: str, *, out_of_memory: bool = False) -> None:
        super().__init__(message)
        self.out_of_memory = out_of_memory


def _dist() -> Any:
    if not torch.distributed.is_available():
        return None
    return torch.distributed


class Collective:
    """The collectives the callback needs, on the default process group.

    ``active`` is False in a single process; then every method returns its input (or the
    trivial answer) without touching ``torch.distributed``.
    """

    def __init__(self) -> None:
        dist = _dist()
        self.active = bool(dist is not None and dist.is_initialized() and dist.get_world_size() > 1)
        self.world_size = dist.get_world_size() if self.active else 1
        self.rank = dist.get_rank() if self.active else 0
        self.device = _collective_device() if self.active else torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"Collective(rank={self.rank}, world_size={self.world_size}, device={self.device})"

    # ------------------------------------------------------------------ reductions
    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is True on some rank."""
        if not self.active:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def min_int(self, value: int) -> int:
        """The smallest ``value`` over ranks."""
        if not self.active:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return int(t.item())

    # ------------------------------------------------------------------ gathers
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``[world_size, *tensor.shape]``: every rank's ``tensor`` (same shape everywhere)."""
        if not self.active:
            return tensor[None]
        local = tensor.detach().contiguous().to(self.device)
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, local)
        return torch.stack(parts).to(tensor.device)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's picklable ``obj``, in rank order (accelerate's ``gather_object``
        when the Trainer's accelerate state is up, else ``torch.distributed``'s)."""
        if not self.active:
            return [obj]
        ops = _accelerate_ops(self.world_size)
        if ops is not None:
            return list(ops.gather_object([obj]))
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s picklable ``obj`` on every rank (other ranks' ``obj`` is ignored);
        accelerate's ``broadcast_object_list`` when its state is up."""
        if not self.active:
            return obj
        box = [obj if self.rank == src else None]
        ops = _accelerate_ops(self.world_size)
        if ops is not None:
            return ops.broadcast_object_list(box, from_process=src)[0]
        torch.distributed.broadcast_object_list(box, src=src)
        return box[0]

    def broadcast_tensor(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Rank ``src``'s ``tensor`` (same shape and dtype on every rank)."""
        if not self.active:
            return tensor
        t = tensor.detach().contiguous().to(self.device).clone()
        torch.distributed.broadcast(t, src=src)
        return t.to(tensor.device)

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    # ------------------------------------------------------------------ failures
    def agree(self, error: BaseException | None, what: str) -> None:
        """Raise :class:`PeerFailure` on every rank if ``error`` is set on some rank.

        One ``all_reduce`` when nothing failed; an ``all_gather_object`` of the messages
        otherwise, so that every rank reports the same first failure.
        """
        if not self.active:
            if error is not None:
                raise error
            return
        if not self.any(error is not None):
            return
        from sft_interaction_callback.engine.runtime import is_out_of_memory

        mine = None
        if error is not None:
            mine = (type(error).__name__, str(error), is_out_of_memory(error))
        raise _failure(self.all_gather_object(mine), what) from error


def _accelerate_ops(world_size: int) -> Any:
    """``accelerate.utils`` when accelerate's process state already exists (the Trainer
    creates it) and spans the same ``world_size`` processes, else None: creating the
    state here could initialise a process group of its own."""
    try:
        from accelerate import utils
        from accelerate.state import PartialState
    except ImportError:  # pragma: no cover - accelerate comes with transformers' Trainer
        return None
    if not getattr(PartialState, "_shared_state", None):
        return None
    state = PartialState()
    kind = state.distributed_type
    if state.num_processes != world_size or kind in (utils.DistributedType.NO, "XLA"):
        return None
    return utils


def _failure(reports: list[Any], what: str) -> PeerFailure:
    """One :class:`PeerFailure` from every rank's ``(type, message, oom)`` or None."""
    failed = [(r, rep) for r, rep in enumerate(reports) if rep is not None]
    oom = all(rep[2] for _, rep in failed)
    _, (name, message, _) = failed[0]
    ranks = ", ".join(str(r) for r, _ in failed)
    text = f"{what} failed on rank(s) {ranks}: {name}: {message}"
    if oom:
        text = f"{what} ran out of memory on rank(s) {ranks} ({name}: {message})"
    return PeerFailure(text, out_of_memory=oom)


def _collective_device() -> torch.device:
    """Where collective tensors must live for the default group's backend."""
    backend = str(torch.distributed.get_backend()).lower()
    if "nccl" in backend and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if backend in ("gloo", "mpi") or "gloo" in backend.split(":")[0]:
        return torch.device("cpu")
    try:
        from accelerate import PartialState

        return PartialState().device
    except Exception:  # noqa: BLE001 - fall back to the CUDA device, then the CPU
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


# ---------------------------------------------------------------------- plans
def bit_reversed_order(n: int) -> torch.Tensor:
    """Subset indices ``0 .. 2**n - 1`` sorted by bit 0 first, then bit 1, ...

    Consecutive runs of this order are sub-trees of the engine's prefix tree over players
    in position order (player 0's bit decides the first branch).
    """
    s = torch.arange(1 << n, dtype=torch.long)
    rev = torch.zeros_like(s)
    for b in range(n):
        rev |= ((s >> b) & 1) << (n - 1 - b)
    return torch.argsort(rev)


@dataclass
class ShardPlan:
    """Which (probe, mask) pairs each rank evaluates, and how to put the results back.

    ``index[r, k]`` is the flat position ``probe * 2**n + mask`` of the ``k``-th value
    that rank ``r`` contributes, or ``-1`` for padding; every rank contributes
    ``per_rank`` values. ``calls`` lists this rank's ``(probe, masks)`` value-function
    calls (padding masks included in lockstep plans, so ``calls`` lines up with the
    first ``sum(len(masks))`` slots of this rank's row of ``index``).
    """

    num_probes: int
    n_players: int
    world_size: int
    rank: int
    per_rank: int
    index: torch.Tensor  # [world_size, per_rank] int64, -1 = padding
    calls: list[tuple[int, torch.Tensor]]
    lockstep: bool

    def local_size(self) -> int:
        return sum(int(m.numel()) for _, m in self.calls)

    def pad(self, values: torch.Tensor) -> torch.Tensor:
        """This rank's values (in ``calls`` order) padded to ``per_rank``."""
        values = values.reshape(-1).float()
        if values.numel() > self.per_rank:  # pragma: no cover - guarded by construction
            raise ValueError(f"{values.numel()} values for a block of {self.per_rank}")
        out = torch.zeros(self.per_rank, dtype=torch.float32, device=values.device)
        out[: values.numel()] = values
        return out

    def assemble(self, gathered: torch.Tensor) -> torch.Tensor:
        """``v[num_probes, 2**n]`` from ``gathered[world_size, per_rank]``."""
        size = 1 << self.n_players
        flat = torch.empty(self.num_probes * size, dtype=torch.float32, device=gathered.device)
        index = self.index.to(gathered.device)
        keep = index >= 0
        flat[index[keep]] = gathered.float()[keep]
        return flat.view(self.num_probes, size)


def shard_plan(
    num_probes: int, n_players: int, world_size: int, rank: int, *, lockstep: bool = False
) -> ShardPlan:
    """The :class:`ShardPlan` of one probe point (identical on every rank)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} for world size {world_size}")
    size = 1 << n_players
    order = bit_reversed_order(n_players)
    if lockstep:
        return _lockstep_plan(num_probes, n_players, world_size, rank, order)
    flat = (torch.arange(num_probes, dtype=torch.long)[:, None] * size + order[None, :]).reshape(-1)
    total = flat.numel()
    per = max(1, math.ceil(total / world_size))
    index = torch.full((world_size, per), -1, dtype=torch.long)
    for r in range(world_size):
        block = flat[r * per : (r + 1) * per]
        index[r, : block.numel()] = block
    mine = index[rank][index[rank] >= 0]
    calls: list[tuple[int, torch.Tensor]] = []
    for p in torch.unique_consecutive(mine // size).tolist():
        masks = mine[(mine // size) == p] % size
        calls.append((int(p), masks))
    return ShardPlan(num_probes, n_players, world_size, rank, per, index, calls, False)


def _lockstep_plan(
    num_probes: int, n_players: int, world_size: int, rank: int, order: torch.Tensor
) -> ShardPlan:
    """Every rank: ``ceil(2**n / W)`` distinct masks of every probe (padding included)."""
    size = 1 << n_players
    per_probe = max(1, math.ceil(size / world_size))
    index = torch.full((world_size, num_probes * per_probe), -1, dtype=torch.long)
    calls: list[tuple[int, torch.Tensor]] = []
    for r in range(world_size):
        block = order[r * per_probe : (r + 1) * per_probe]
        taken = set(block.tolist())
        filler = [m for m in order.tolist() if m not in taken][: per_probe - block.numel()]
        masks = torch.cat((block, torch.tensor(filler, dtype=torch.long)))
        for p in range(num_probes):
            slot = slice(p * per_probe, p * per_probe + block.numel())
            index[r, slot] = p * size + block
            if r == rank:
                calls.append((p, masks))
    return ShardPlan(
        num_probes, n_players, world_size, rank, num_probes * per_probe, index, calls, True
    )


# ---------------------------------------------------------------------- lockstep
class LockstepRunner:
    """Runs value-function calls chunk by chunk, in step with the other ranks.

    ``run(fn, probe, masks)`` calls ``fn(probe, chunk)`` on chunks of ``batch`` masks;
    after every chunk the ranks agree (one ``all_reduce``) whether some rank failed. An
    out-of-memory error on any rank makes **every** rank halve the batch and redo the
    chunk (down to 1); any other failure, or OOM at batch 1, raises
    :class:`PeerFailure` on every rank. Chunks have the same size on every rank, so
    every rank runs the same number of forward passes.

    What no callback can rescue: an OOM raised *inside* a sharded forward pass on one
    rank only, after that pass has started gathering layers. The other ranks then wait in
    the pass's next all-gather, not in this runner's check, until the process group times
    out. Failures between passes (preparing a probe, NaN values, a raising hook) and OOMs
    that hit every rank alike (every rank runs the same shapes) are agreed on here;
    keep ``probe_batch_size`` modest under FSDP / ZeRO-3.
    """

    def __init__(
        self, comm: Collective, batch: int, *, on_oom: Callable[[], None] | None = None
    ) -> None:
        self.comm = comm
        self.batch = max(1, int(batch))
        self.on_oom = on_oom
        self.chunks = 0

    def run(self, fn: Callable[..., torch.Tensor], probe: Any, masks: torch.Tensor) -> torch.Tensor:
        from sft_interaction_callback.engine.runtime import is_out_of_memory

        out: list[torch.Tensor] = []
        pos = 0
        while pos < masks.numel():
            chunk = masks[pos : pos + self.batch]
            error: BaseException | None = None
            values = None
            try:
                values = fn(probe, chunk)
            except Exception as err:  # noqa: BLE001 - agreed on below
                error = err
            self.chunks += 1
            if not self.comm.any(error is not None):
                out.append(values.reshape(-1).float())
                pos += chunk.numel()
                continue
            reports = self.comm.all_gather_object(
                None
                if error is None
                else (type(error).__name__, str(error), is_out_of_memory(error))
            )
            failed = [(r, rep) for r, rep in enumerate(reports) if rep is not None]
            all_oom = all(rep[2] for _, rep in failed)
            used = min(self.batch, chunk.numel())
            if all_oom and used > 1:
                if self.on_oom is not None:
                    self.on_oom()
                self.batch = max(1, used // 2)
                warnings.warn(
                    f"out of memory on rank(s) {[r for r, _ in failed]} while probing; every "
                    f"rank retries with batch size {self.batch}",
                    stacklevel=2,
                )
                continue
            raise _failure(reports, "probing") from error
        if not out:
            return torch.empty(0, dtype=torch.float32)
        return torch.cat([o.to(out[0].device) for o in out])


def gather_rows(comm: Collective, plan: ShardPlan, local: Sequence[torch.Tensor]) -> torch.Tensor:
    """``v[P, 2**n]`` on every rank, from this rank's values (one tensor per ``plan.calls``).

    In ``plan.calls`` order the values line up with this rank's row of ``plan.index``
    (padding masks of a lockstep plan land on ``-1`` slots and are dropped).
    """
    mine = torch.cat([t.reshape(-1).float().cpu() for t in local]) if local else torch.empty(0)
    gathered = comm.all_gather(plan.pad(mine).to(comm.device))
    return plan.assemble(gathered.cpu())
