"""The result of an AND-OR fit: interactions that know their probes, words and step.

Kept apart from the solvers (as shapiq keeps ``InteractionValues`` apart from its
computers) so that snapshots, reports and W&B tables read one self-describing object:
``save``/``load`` round-trip every tensor and the words exactly (safetensors for the
tensors, JSON in the file's metadata for the rest), ``top_k`` ranks interactions and
``lookup`` finds one by its words. The certificate of the fit (``lower_bound``, ``gap``)
travels with it, so a reader can tell an exact optimum from an approximate one.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from .transforms import or_reconstruct, zeta

__all__ = ["AndOrInteractions", "Interaction", "RESULT_FORMAT"]

RESULT_FORMAT = "sft_interaction_callback.andor/1"
_TENSORS = ("v", "i_and", "i_or", "p", "q", "lower_bound", "gap")
_EXTRA = "extra/"


@dataclass(frozen=True)
class Interaction:
    """One interaction: its probe (row), type, subset (bitmask), players, words and value."""

    probe: int
    kind: str  # "and" | "or"
    subset: int
    players: tuple[int, ...]
    words: tuple[str, ...] | None
    value: float


@dataclass
class AndOrInteractions:
    """AND and OR interactions of a batch of games, all tensors with last dim ``2**n``.

    ``v`` is the game, ``p`` the learned AND/OR split and ``q`` the bounded noise;
    ``i_and`` and ``i_or`` are folded: empty-set and single-player OR effects live in
    ``i_and`` and ``i_or`` is zero for ``|S| <= 1``. ``lower_bound`` (per probe) is a
    certified lower bound on the optimal objective and ``gap`` the relative gap
    ``(objective - lower_bound) / objective``; both are ``None`` for a solver that does
    not certify. ``probe_ids``, ``words`` (the players' words per probe) and ``step``
    describe where the games came from; they need exactly one leading dimension.
    """

    v: torch.Tensor
    i_and: torch.Tensor
    i_or: torch.Tensor
    p: torch.Tensor
    q: torch.Tensor
    n_players: int
    lower_bound: torch.Tensor | None = None
    gap: torch.Tensor | None = None
    probe_ids: list[str] | None = None
    words: list[list[str]] | None = None
    step: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------- the math
    def reconstruct(self) -> torch.Tensor:
        """The value of every mask rebuilt from the interactions; equals ``v + q``."""
        return zeta(self.i_and) + or_reconstruct(self.i_or)

    def objective(self) -> torch.Tensor:
        """``sum_S |I_and(S)| + sum_S |I_or(S)|`` per probe."""
        return self.i_and.abs().sum(-1) + self.i_or.abs().sum(-1)

    def concatenated(self) -> torch.Tensor:
        """AND then OR along the last dimension (``2 * 2**n``), for the joint metrics."""
        return torch.cat((self.i_and, self.i_or), dim=-1)

    # -------------------------------------------------------- batch plumbing
    def _tensor_fields(self) -> dict[str, torch.Tensor]:
        return {
            name: getattr(self, name)
            for name in _TENSORS
            if isinstance(getattr(self, name), torch.Tensor)
        }

    def to(self, *args: Any, **kwargs: Any) -> AndOrInteractions:
        moved = {name: t.to(*args, **kwargs) for name, t in self._tensor_fields().items()}
        return replace(self, **moved)

    def __getitem__(self, index: Any) -> AndOrInteractions:
        """Select probes along the leading dimensions (``interactions[3]``)."""
        picked = {name: t[index] for name, t in self._tensor_fields().items()}
        return replace(
            self,
            probe_ids=_pick(self.probe_ids, index),
            words=_pick(self.words, index),
            **picked,
        )

    @property
    def num_probes(self) -> int:
        return int(self.v[..., 0].numel())

    # ----------------------------------------------------------- inspection
    def players_of(self, subset: int) -> tuple[int, ...]:
        return tuple(i for i in range(self.n_players) if (subset >> i) & 1)

    def subset_of(self, probe: int, words: Sequence[str | int]) -> int:
        """The bitmask of the players named by ``words`` (words of ``probe``, or indices)."""
        mask = 0
        for w in words:
            if isinstance(w, int):
                index = w
            else:
                if self.words is None:
                    raise ValueError("these interactions carry no words; pass player indices")
                row = self.words[probe]
                if row.count(w) != 1:
                    raise KeyError(
                        f"word {w!r} is {'not a player' if w not in row else 'ambiguous'} "
                        f"in probe {probe} (players: {row}); pass player indices instead"
                    )
                index = row.index(w)
            if not 0 <= index < self.n_players:
                raise IndexError(f"player {index} out of range for n_players={self.n_players}")
            mask |= 1 << index
        return mask

    def lookup(self, probe: int, words: Sequence[str | int], kind: str = "and") -> float:
        """The interaction of the players ``words`` in ``probe`` (AND or OR)."""
        table = {"and": self.i_and, "or": self.i_or}.get(kind)
        if table is None:
            raise ValueError(f"kind must be 'and' or 'or', got {kind!r}")
        rows = table.reshape(-1, table.shape[-1])
        return float(rows[probe, self.subset_of(probe, words)])

    def top_k(
        self, k: int, probe: int | None = None, *, include_empty: bool = False
    ) -> list[Interaction]:
        """The ``k`` strongest interactions (AND and OR together) by ``|I|``.

        ``probe=None`` ranks over all probes. The empty set (the baseline value) is left
        out unless ``include_empty``. Ties are broken by (probe, kind, subset).
        """
        both = self.concatenated().reshape(-1, 2 * self.i_and.shape[-1]).detach()
        size = self.i_and.shape[-1]
        rows = range(both.shape[0]) if probe is None else [probe]
        found: list[Interaction] = []
        for row in rows:
            strength = both[row].abs().to(torch.float64)
            if not include_empty:
                strength[0] = -1.0
                strength[size] = -1.0
            order = torch.argsort(strength, descending=True, stable=True)[:k]
            for col in order.tolist():
                if strength[col] < 0:
                    continue
                kind, subset = ("and", col) if col < size else ("or", col - size)
                players = self.players_of(subset)
                words = None
                if self.words is not None:
                    words = tuple(self.words[row][i] for i in players)
                found.append(Interaction(row, kind, subset, players, words, float(both[row, col])))
        found.sort(key=lambda it: (-abs(it.value), it.probe, it.kind, it.subset))
        return found[:k]

    # ------------------------------------------------------------- on disk
    def to_bytes(
        self,
        extra: Mapping[str, torch.Tensor] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> bytes:
        """safetensors bytes: the tensors (plus ``extra`` ones) and a JSON description."""
        from safetensors.torch import save

        tensors = {name: t.detach().cpu().contiguous() for name, t in self._tensor_fields().items()}
        for name, t in (extra or {}).items():
            tensors[_EXTRA + name] = t.detach().cpu().contiguous()
        description = {
            "format": RESULT_FORMAT,
            "n_players": self.n_players,
            "probe_ids": self.probe_ids,
            "words": self.words,
            "step": self.step,
            "meta": {**self.meta, **dict(meta or {})},
        }
        return save(tensors, metadata={"andor": json.dumps(description)})

    @classmethod
    def from_bytes(cls, data: bytes) -> AndOrInteractions:
        return _from_parts(*_read_parts(data))[0]

    def save(
        self,
        path: str | os.PathLike,
        extra: Mapping[str, torch.Tensor] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write atomically (temp file in the same folder, fsync, replace) to ``path``."""
        from ..atomic_io import atomic_write_bytes  # stdlib only; the snapshots' writer

        return atomic_write_bytes(path, self.to_bytes(extra, meta))

    @classmethod
    def load(cls, path: str | os.PathLike) -> AndOrInteractions:
        return cls.from_bytes(Path(path).read_bytes())

    @staticmethod
    def read_extras(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The ``extra`` tensors and the ``meta`` dict saved beside the interactions."""
        result, extras = _from_parts(*_read_parts(Path(path).read_bytes()))
        return extras, dict(result.meta)


def _pick(rows: list | None, index: Any) -> list | None:
    if rows is None:
        return None
    if isinstance(index, int):
        return [rows[index]]
    if isinstance(index, slice):
        return rows[index]
    if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
        return [r for r, keep in zip(rows, index.tolist(), strict=True) if keep]
    if isinstance(index, (torch.Tensor, list)):
        ids = index.tolist() if isinstance(index, torch.Tensor) else index
        if ids and isinstance(ids[0], bool):
            return [r for r, keep in zip(rows, ids, strict=True) if keep]
        return [rows[i] for i in ids]
    return None  # an index we cannot follow: drop the metadata rather than misalign it


def _read_parts(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors.torch import load

    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    raw = header.get("__metadata__", {}).get("andor")
    if raw is None:
        raise ValueError("not an AndOrInteractions file (no 'andor' metadata)")
    description = json.loads(raw)
    if description.get("format") != RESULT_FORMAT:
        raise ValueError(f"unknown AndOrInteractions format {description.get('format')!r}")
    return load(data), description


def _from_parts(
    tensors: dict[str, torch.Tensor], description: dict[str, Any]
) -> tuple[AndOrInteractions, dict[str, torch.Tensor]]:
    extras = {k[len(_EXTRA) :]: t for k, t in tensors.items() if k.startswith(_EXTRA)}
    known = {f.name for f in fields(AndOrInteractions)}
    core = {k: t for k, t in tensors.items() if k in known}
    result = AndOrInteractions(
        n_players=int(description["n_players"]),
        probe_ids=description.get("probe_ids"),
        words=description.get("words"),
        step=description.get("step"),
        meta=dict(description.get("meta") or {}),
        **core,
    )
    return result, extras
