"""Follow salient interactions across checkpoints: removed, preserved, newly emerged.

The tracker is pure logic on tensors (no Hugging Face import). The callback feeds it the
folded AND-OR interactions of the same probes at every probe point, logs the flat metrics
dict it returns, and saves/restores :meth:`InteractionTracker.state_dict` with its
checkpoints. DESIGN.md §5-§7 define the quantities; the choices the design leaves open
are documented on :class:`InteractionTracker`.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from ..andor.metrics import (
    classify,
    generalizability,
    order_histogram,
    salient,
    strength,
    uncancelled_ratio,
)
from ..andor.transforms import subset_orders
from ..keys import (
    CATEGORIES,
    EMERGED,
    NOISE,
    NOISE_DESIGN_KEY,
    NOISE_KEY,
    PRESERVED,
    REMOVED,
    REMOVED_FRACTION_KEY,
    TOTAL_STRENGTH_KEY,
    category_key,
)
from .signals import (
    CATEGORY_MODES,
    NOISE_SIGNALS,
    _as_table,
    _nanmean,
    _ratio,
    debounce,
    pooled_share,
)

__all__ = ["InteractionTracker"]

_STATE_FORMAT = "sft_interaction_callback.tracker/1"
_SCOPES = ("type", "joint")


class InteractionTracker:
    """Removed / preserved / emerged salient interactions and their quality, per probe point.

    Salience (DESIGN.md §5): ``Omega_t = {S != {} : |I_t(S)| >= tau}`` per probe and type,
    ``tau = salient_rel * max_{S != {}} |I_t(S)|`` (``salient_abs`` gives an absolute threshold
    instead, or as well: the larger one wins). ``salient_scope="type"`` (default, as in the
    design) takes the max over the AND and the OR table separately; ``"joint"`` over both.
    Interactions are matched by (probe, type, subset): AND and OR are concatenated along the
    last dimension, so the same subset in the two types is two different entries;
    ``match_type=False`` matches by (probe, subset) whatever the type (``andor.classify``).

    With ``Omega_0`` from :meth:`set_base`: ``R_t = Omega_0 - Omega_t``,
    ``P_t = P_{t-1} & Omega_t`` (``P_0 = Omega_0``), ``E_t = Omega_t - P_t``; an interaction
    that disappears and comes back is therefore *emerged*, not preserved.

    :meth:`update` returns floats averaged over probes, for ``c`` in removed / preserved /
    emerged:

    * ``interactions/{c}/count``: salient subsets in the set (AND + OR);
    * ``interactions/{c}/strength``: ``sum |I(S)|`` over the set;
    * ``interactions/{c}/strength_norm``: the strength divided, per probe, by the total
      ``sum_{S != {}} |I(S)|`` (AND + OR) of the same checkpoint (0 if that total is 0);
    * ``interactions/{c}/rho``: ``|sum I| / sum |I|`` over the set, AND and OR together;
    * ``interactions/{c}/gamma``: share of the strength that the reference model shares
      (salient there in the same type with the same sign); only with a reference;
    * ``interactions/{c}/mean_order``: mean order (popcount) of the subsets in the set;

    plus ``interactions/removed/fraction`` (removed base strength / total base salient
    strength: how far removal has gone, the stopper's stage indicator),
    ``interactions/noise`` (below) and ``interactions/total_strength`` (mean over probes
    of ``sum_{S != {}} |I_t(S)|``, AND + OR, raw scale).

    *Removed* interactions are no longer salient, so every removed-set quantity (strength,
    normalised strength, rho, gamma, order, histograms) is evaluated on the **base**
    interactions ``I_0``: it describes what was removed, as the pretrained model encoded
    it. Their ``strength_norm`` is accordingly normalised by the base total
    ``sum |I_0(S)|``. Preserved and emerged use the current ``I_t``.

    Averages: counts, strengths, ``strength_norm``, noise and total strength use the plain
    mean. ``rho``, ``gamma``, ``mean_order`` and the removed ``fraction`` are NaN for a probe
    whose set (for the fraction: ``Omega_0``) is empty, averaged over the probes that define
    them, NaN when none does. The key set is fixed (``gamma`` only with a reference).

    The noise signal (DESIGN.md §7), per probe ``p``, at checkpoint ``t``::

        N_t   = { S in E_t : S looks like noise }
                  with a reference:    G(S) = 0 (not salient with the same sign there)
                  without a reference: order(S) >= noise_min_order (default 3)
        noise = (1 - rho(N_t)) * sum_{S in N_t} |I_t(S)| / sum_{S != {}} |I_t(S)|

    i.e. the strength of emerged noise-like interactions (with a reference, exactly
    ``sum_{S in E_t} |I_t(S)| (1 - G(S))``), discounted when they do not cancel each
    other (``rho`` near 1) and normalised by the checkpoint's total strength so that the
    growth of the output scale during training does not drive it. It is 0 when
    ``N_t`` is empty. Its mean over probes is ``interactions/noise_design`` (always
    logged, for comparison), and ``interactions/noise`` with ``noise_signal="design"``.

    Defaults (DESIGN.md §9, :mod:`.signals`): the noise is pooled over probes without
    ``(1 - rho)`` and the §5 sets use debounced salience; ``"design"`` selects the above.
    """

    def __init__(
        self,
        salient_rel: float | None = 0.05,
        salient_abs: float | None = None,
        reference: Any = None,
        *,
        noise_min_order: int = 3,
        salient_scope: str = "type",
        match_type: bool = True,
        categories: str = "debounced",
        noise_signal: str = "pooled",
    ) -> None:
        # Validate the thresholds up front, with the same rules `salient` applies.
        salient(torch.zeros(1, 2), rel=salient_rel, abs=salient_abs)
        if salient_scope not in _SCOPES:
            raise ValueError(f"salient_scope must be one of {_SCOPES}, got {salient_scope!r}")
        if type(noise_min_order) is not int or noise_min_order < 1:
            raise ValueError(f"noise_min_order must be an int >= 1, got {noise_min_order!r}")
        if categories not in CATEGORY_MODES:
            raise ValueError(f"categories must be one of {CATEGORY_MODES}, got {categories!r}")
        if noise_signal not in NOISE_SIGNALS:
            raise ValueError(f"noise_signal must be one of {NOISE_SIGNALS}, got {noise_signal!r}")
        self.categories = categories
        self.noise_signal = noise_signal
        self.salient_rel = salient_rel
        self.salient_abs = salient_abs
        self.salient_scope = salient_scope
        self.noise_min_order = noise_min_order
        self.match_type = bool(match_type)

        self._base_i: torch.Tensor | None = None
        self._base_mask: torch.Tensor | None = None
        self._preserved: torch.Tensor | None = None
        self._prev_raw: torch.Tensor | None = None  # raw salience of the last point
        self._stable: torch.Tensor | None = None  # debounced salience D_t
        self._undo: tuple[Any, ...] | None = None  # state before the last update
        self._ref_i: torch.Tensor | None = None
        self._ref_mask: torch.Tensor | None = None
        self._n: int | None = None
        self.last_step: int | None = None
        self._last: dict[str, Any] | None = None
        self._hist_history: list[dict[str, Any]] = []
        if reference is not None:
            self.set_reference(reference)

    # ------------------------------------------------------------------ properties
    @property
    def n_players(self) -> int | None:
        return self._n

    @property
    def num_probes(self) -> int | None:
        for t in (self._base_i, self._ref_i):
            if t is not None:
                return int(t.shape[0])
        return None

    @property
    def has_base(self) -> bool:
        return self._base_i is not None

    @property
    def has_reference(self) -> bool:
        return self._ref_i is not None

    def metric_keys(self) -> list[str]:
        """The keys :meth:`update` returns with the current reference setting."""
        keys = []
        for c in CATEGORIES:
            for m in ("count", "strength", "strength_norm", "rho"):
                keys.append(category_key(c, m))
            if self.has_reference:
                keys.append(category_key(c, "gamma"))
            keys.append(category_key(c, "mean_order"))
        return keys + [REMOVED_FRACTION_KEY, NOISE_KEY, NOISE_DESIGN_KEY, TOTAL_STRENGTH_KEY]

    # ------------------------------------------------------------------ inputs
    def _salient(self, table: torch.Tensor) -> torch.Tensor:
        # andor.salient never marks the empty sets and keeps them out of the relative
        # threshold (I_and({}) = v({}) of a language model would dwarf every interaction).
        kw = {"rel": self.salient_rel, "abs": self.salient_abs}
        if self.salient_scope == "joint":
            return salient(table, concatenated=True, **kw)
        half = table.shape[-1] // 2
        return torch.cat((salient(table[:, :half], **kw), salient(table[:, half:], **kw)), -1)

    def _check_shape(self, table: torch.Tensor, what: str, *others: torch.Tensor | None) -> None:
        """Same players and probes as the held tables ``others``; records ``n``."""
        held = [t for t in others if t is not None]
        if not held:
            self._n = (table.shape[-1] // 2).bit_length() - 1
            return
        n = (table.shape[-1] // 2).bit_length() - 1
        if n != self._n:
            raise ValueError(
                f"{what}: interactions over {n} players, but the tracker holds {self._n}"
            )
        probes = int(held[0].shape[0])
        if table.shape[0] != probes:
            raise ValueError(
                f"{what}: {table.shape[0]} probes, but the tracker holds {probes}; "
                "use the same probes (in the same order) at every checkpoint"
            )
        self._n = n

    def set_reference(self, ref_i_and: Any, ref_i_or: Any = None) -> None:
        """Interactions of the reference model (for gamma), extracted once on the same probes.

        Its salient masks are computed here, once, with the tracker's thresholds.
        """
        table = _as_table(ref_i_and, ref_i_or, "set_reference()")
        self._check_shape(table, "set_reference()", self._base_i)
        self._ref_i = table
        self._ref_mask = self._salient(table)

    def set_base(self, interactions_and: Any, interactions_or: Any = None) -> dict[str, float]:
        """Store ``Omega_0`` (the model before SFT, step 0) and reset the history.

        Returns the metrics at step 0 (nothing removed or emerged, everything preserved).
        """
        table = _as_table(interactions_and, interactions_or, "set_base()")
        self._check_shape(table, "set_base()", self._ref_i)
        self._base_i = table
        self._base_mask = self._salient(table)
        self._preserved = self._base_mask.clone()
        self._prev_raw = self._base_mask.clone()
        self._stable = self._base_mask.clone()
        self._undo = None
        self.last_step = None
        self._hist_history = []
        return self._record(0, table, self._base_mask)

    def update(self, step: int, i_and: Any, i_or: Any = None) -> dict[str, float]:
        """Classify the salient interactions at ``step``, update ``P_t``, return the metrics.

        Steps must not decrease; feeding a step again replaces it (a re-probe after resume).
        """
        if self._base_i is None:
            raise RuntimeError(
                "InteractionTracker.update() before set_base(): extract the interactions of "
                "the model before training (step 0) and pass them to set_base() first"
            )
        if self.last_step is not None and step < self.last_step:
            raise ValueError(
                f"update() for step {step} after step {self.last_step}: steps must not go back"
            )
        table = _as_table(i_and, i_or, "update()")
        self._check_shape(table, "update()", self._base_i)
        if self.last_step is not None and int(step) == self.last_step and self._undo is not None:
            self._preserved, self._prev_raw, self._stable = self._undo
        self._undo = (self._preserved, self._prev_raw, self._stable)
        raw = self._salient(table)
        stable = raw
        if self.categories == "debounced" and self._prev_raw is not None:
            stable = debounce(raw, self._prev_raw, self._stable)
        self._prev_raw, self._stable = raw, stable
        return self._record(int(step), table, stable)

    # ------------------------------------------------------------------ the work
    @staticmethod
    def _histogram(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Order histogram of AND and OR added up, each half read as its own table."""
        half = values.shape[-1] // 2
        c_and, s_and = order_histogram(values[:, :half], mask[:, :half])
        c_or, s_or = order_histogram(values[:, half:], mask[:, half:])
        return c_and + c_or, s_and + s_or

    def _record(self, step: int, table: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
        assert self._base_i is not None and self._base_mask is not None
        assert self._preserved is not None
        dev = table.device
        base_i = self._base_i.to(dev, table.dtype)
        base_mask = self._base_mask.to(dev)
        removed, preserved, emerged = classify(
            base_mask, self._preserved.to(dev), mask, by_subset=not self.match_type
        )
        sets = {REMOVED: removed, PRESERVED: preserved, EMERGED: emerged}
        orders = subset_orders(self._n, dev).repeat(2)
        nonempty = orders > 0
        total_t = strength(table, nonempty)
        total_0 = strength(base_i, nonempty)
        ref_i = ref_mask = None
        if self._ref_i is not None:
            ref_i = self._ref_i.to(dev, table.dtype)
            ref_mask = self._ref_mask.to(dev)

        metrics: dict[str, float] = {}
        hists: dict[str, dict[str, torch.Tensor]] = {}
        for c, m in sets.items():
            values, total = (base_i, total_0) if c == REMOVED else (table, total_t)
            count = m.sum(-1).to(table.dtype)
            st = strength(values, m)
            metrics[category_key(c, "count")] = float(count.mean())
            metrics[category_key(c, "strength")] = float(st.mean())
            metrics[category_key(c, "strength_norm")] = float(_ratio(st, total, 0.0).mean())
            metrics[category_key(c, "rho")] = _nanmean(uncancelled_ratio(values, m))
            if ref_i is not None:
                g = generalizability(values, m, ref_i, ref_mask)
                metrics[category_key(c, "gamma")] = _nanmean(g)
            order_sum = (orders.to(table.dtype) * m).sum(-1)
            metrics[category_key(c, "mean_order")] = _nanmean(_ratio(order_sum, count, math.nan))
            h_count, h_strength = self._histogram(values, m)
            hists[c] = {
                "count": h_count,
                "strength": h_strength,
                "strength_norm": _ratio(h_strength, total[:, None], 0.0),
            }

        base_salient = strength(base_i, base_mask)
        fraction = _ratio(strength(base_i, removed), base_salient, math.nan)
        metrics[REMOVED_FRACTION_KEY] = _nanmean(fraction)

        if ref_i is not None:
            shared = ref_mask & (torch.sign(ref_i) == torch.sign(table)) & (table != 0)
            noisy = emerged & ~shared
        else:
            noisy = emerged & (orders >= self.noise_min_order)
        noise_strength = strength(table, noisy)
        rho_noise = torch.nan_to_num(uncancelled_ratio(table, noisy), nan=1.0)
        design = _ratio((1.0 - rho_noise) * noise_strength, total_t, 0.0)
        metrics[NOISE_DESIGN_KEY] = float(design.mean())
        if self.noise_signal == "pooled":
            noise = _ratio(noise_strength, total_t, 0.0)  # per probe, for last_noise()
            metrics[NOISE_KEY] = pooled_share(noise_strength, total_t)
        else:
            noise = design
            metrics[NOISE_KEY] = float(design.mean())
        metrics[TOTAL_STRENGTH_KEY] = float(total_t.mean())

        self._preserved = preserved
        self.last_step = step
        self._last = {
            "step": step,
            "sets": {**sets, NOISE: noisy},
            "histograms": hists,
            "noise": noise,
        }
        self._hist_history = [h for h in self._hist_history if h["step"] != step]
        self._hist_history.append(
            {
                "step": step,
                **{c: {k: v.mean(0).tolist() for k, v in hists[c].items()} for c in CATEGORIES},
            }
        )
        return metrics

    # ------------------------------------------------------------------ outputs
    def last_histograms(self, reduce: str = "mean") -> dict[str, dict[str, torch.Tensor]] | None:
        """Order histograms of the last probe point, per category.

        ``{c: {"count", "strength", "strength_norm"}}`` with tensors ``[n + 1]`` (index =
        order) averaged over probes (``reduce="mean"``) or ``[num_probes, n + 1]``
        (``reduce="none"``); AND and OR together; removed uses the base strengths. ``None``
        before the first probe point (and right after :meth:`load_state_dict`).
        """
        if reduce not in ("mean", "none"):
            raise ValueError(f"reduce must be 'mean' or 'none', got {reduce!r}")
        if self._last is None:
            return None
        out = {}
        for c, h in self._last["histograms"].items():
            out[c] = {k: (v.mean(0) if reduce == "mean" else v).cpu() for k, v in h.items()}
        return out

    def histogram_history(self) -> list[dict[str, Any]]:
        """Probe-mean order histograms of every probe point so far (JSON-able).

        A list of ``{"step": int, c: {"count": [...], "strength": [...],
        "strength_norm": [...]}}``, one entry per step, oldest first; kept in the state.
        """
        return copy.deepcopy(self._hist_history)

    def last_sets(self) -> dict[str, torch.Tensor] | None:
        """Boolean masks ``[num_probes, 2 * 2**n]`` (AND then OR) of the last probe point.

        Keys: ``removed``, ``preserved``, ``emerged`` and ``noise`` (the noise-like emerged
        subsets ``N_t``); for snapshots. ``None`` before the first probe point.
        """
        if self._last is None:
            return None
        return {k: v.cpu() for k, v in self._last["sets"].items()}

    def last_noise(self) -> torch.Tensor | None:
        """The per-probe noise signal ``[num_probes]`` of the last probe point."""
        return None if self._last is None else self._last["noise"].cpu()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: ``{"tensors": {name: Tensor}, "meta": {...}}``.

        ``tensors`` is a flat dict of contiguous CPU tensors (safetensors-ready: the base
        interactions and masks, the preserved masks ``P_t``, the reference interactions and
        masks); ``meta`` is JSON-able (settings, sizes, last step, histogram history).
        """
        tensors: dict[str, torch.Tensor] = {}
        named = {
            "base_interactions": self._base_i,
            "base_mask": self._base_mask,
            "preserved_mask": self._preserved,
            "previous_raw_mask": self._prev_raw,
            "debounced_mask": self._stable,
            "reference_interactions": self._ref_i,
            "reference_mask": self._ref_mask,
        }
        for name, t in named.items():
            if t is not None:
                tensors[name] = t.detach().cpu().contiguous().clone()
        meta = {
            "format": _STATE_FORMAT,
            "salient_rel": self.salient_rel,
            "salient_abs": self.salient_abs,
            "salient_scope": self.salient_scope,
            "noise_min_order": self.noise_min_order,
            "categories": self.categories,
            "noise_signal": self.noise_signal,
            "n_players": self._n,
            "num_probes": self.num_probes,
            "last_step": self.last_step,
            "histogram_history": self.histogram_history(),
        }
        return {"tensors": tensors, "meta": meta}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; later :meth:`update` calls continue as before.

        The stored salience settings win (the stored masks were computed with them); a
        warning says so when they differ from this tracker's.
        """
        if not isinstance(state, Mapping) or "tensors" not in state or "meta" not in state:
            raise ValueError("load_state_dict() needs the {'tensors': ..., 'meta': ...} dict")
        tensors, meta = state["tensors"], state["meta"]
        if meta.get("format") != _STATE_FORMAT:
            raise ValueError(
                f"unknown tracker state format {meta.get('format')!r} (expected {_STATE_FORMAT})"
            )
        has_base = "base_interactions" in tensors
        for name in ("base_mask", "preserved_mask") if has_base else ():
            if name not in tensors:
                raise ValueError(f"tracker state is missing the tensor {name!r}")
        if ("reference_interactions" in tensors) != ("reference_mask" in tensors):
            raise ValueError("tracker state has only one of reference_interactions / _mask")
        settings = ("salient_rel", "salient_abs", "salient_scope", "noise_min_order")
        settings += ("categories", "noise_signal")  # older states: the design's
        meta = {"categories": "design", "noise_signal": "design", **meta}
        changed = [k for k in settings if meta.get(k) != getattr(self, k)]
        if changed:
            warnings.warn(
                "restoring tracker state saved with different settings "
                + ", ".join(f"{k}={meta.get(k)!r} (was {getattr(self, k)!r})" for k in changed)
                + "; using the saved ones",
                stacklevel=2,
            )
        for k in settings:
            setattr(self, k, meta.get(k))

        def get(name: str, dtype: torch.dtype | None = None) -> torch.Tensor | None:
            t = tensors.get(name)
            if t is None:
                return None
            t = torch.as_tensor(t).clone()
            return t.to(dtype) if dtype is not None else t

        self._base_i = get("base_interactions")
        self._base_mask = get("base_mask", torch.bool)
        self._preserved = get("preserved_mask", torch.bool)
        self._prev_raw = get("previous_raw_mask", torch.bool)
        self._stable = get("debounced_mask", torch.bool)
        if self._prev_raw is None or self._stable is None:  # an older state: restart the debounce
            self._prev_raw = self._stable = self._preserved
        self._undo = None
        self._ref_i = get("reference_interactions")
        self._ref_mask = get("reference_mask", torch.bool)
        self._n = meta.get("n_players")
        self.last_step = meta.get("last_step")
        self._hist_history = [dict(h) for h in meta.get("histogram_history", [])]
        self._last = None
        sizes = {t.shape for t in (self._base_i, self._ref_i) if t is not None}
        if len(sizes) > 1 or any(
            t is not None and t.shape != self._base_i.shape
            for t in (self._base_mask, self._preserved)
        ):
            raise ValueError(f"inconsistent tensor shapes in tracker state: {sizes}")
