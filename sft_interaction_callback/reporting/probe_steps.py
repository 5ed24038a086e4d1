"""Every probe at every probed step, compact enough to embed in the report page.

The page's step slider needs, per probe and step, the strongest AND / OR / removed
interactions and how strongly each word takes part in salient interactions. They are
stored as short lists (a subset bitmask, ``I(S)`` to 3 significant digits, a category
code), so the JSON stays small; the page turns bitmasks into words itself.
"""

from __future__ import annotations

from typing import Any

import torch

from ..keys import CATEGORIES, EMERGED, PRESERVED
from .run_data import Interaction, RunData

__all__ = ["CATEGORY_CODES", "MAX_STEPS", "probe_step_data", "word_strengths"]

#: Category of an interaction in the page's data: its index here.
CATEGORY_CODES = ("removed", "preserved", "emerged", "salient")
#: Most steps the slider offers; longer runs keep an even spread plus base, stage end,
#: stop and last step.
MAX_STEPS = 40


def _steps(run: RunData) -> list[int]:
    steps = list(run.snapshot_steps)
    if len(steps) <= MAX_STEPS:
        return steps
    keep = {steps[0], steps[-1]}
    keep |= {s for s in (run.stop_step, run.stage_end_step, run.focus_step) if s in steps}
    room = MAX_STEPS - len(keep)
    for k in range(room):
        keep.add(steps[round(k * (len(steps) - 1) / max(1, room - 1))])
    return sorted(keep)


def _pack(items: list[Interaction]) -> list[list[Any]]:
    """``[subset bitmask, I(S) to 3 digits, category code, 0 for AND / 1 for OR]``."""
    return [
        [
            it.subset,
            float(f"{it.value:.3g}"),
            CATEGORY_CODES.index(it.category),
            int(it.kind == "or"),
        ]
        for it in items
    ]


def word_strengths(run: RunData, step: int) -> list[list[int]]:
    """Per probe, per player: its share (0-100, the probe's strongest word = 100) of the
    salient interactions at ``step``, each ``|I(S)|`` split evenly among the words of S."""
    snap = run.snapshot(step)
    table = snap.interactions.concatenated().double().abs()  # [P, 2 * 2**n]
    half = table.shape[-1] // 2
    n = half.bit_length() - 1
    masks = snap.masks
    if all(c in masks for c in (PRESERVED, EMERGED)):
        salient = (masks[PRESERVED] | masks[EMERGED]).bool()
    else:
        salient = torch.ones_like(table, dtype=torch.bool)
        salient[:, 0] = salient[:, half] = False
    weight = torch.where(salient, table, torch.zeros_like(table))
    subsets = torch.arange(half)
    bits = ((subsets[:, None] >> torch.arange(n)) & 1).double()  # [2**n, n]
    order = bits.sum(1).clamp_min(1)
    per = (weight[:, :half] + weight[:, half:]) / order  # [P, 2**n]
    strength = per @ bits  # [P, n]
    top = strength.max(dim=1, keepdim=True).values.clamp_min(1e-300)
    return (100 * strength / top).round().int().tolist()


def probe_step_data(run: RunData, top: int) -> dict[str, Any]:
    """``{"steps", "focus", "stop", "base", "probes": [[[and, or, removed, words], ...]]}``:
    per probe, per step (in ``steps`` order) the packed interaction lists and the word
    strengths of :func:`word_strengths`."""
    steps = _steps(run)
    probes: list[list[Any]] = [[] for _ in run.probes]
    for step in steps:
        try:
            words = word_strengths(run, step)
        except (KeyError, ValueError, RuntimeError):
            words = [[] for _ in run.probes]
        for p in range(len(run.probes)):
            tops = run.top_interactions(p, top, step)
            strengths = words[p] if p < len(words) else []
            probes[p].append(
                [_pack(tops["and"]), _pack(tops["or"]), _pack(tops["removed"]), strengths]
            )
    focus = steps.index(run.focus_step) if run.focus_step in steps else len(steps) - 1
    return {
        "steps": steps,
        "focus": focus,
        "stop": run.stop_step,
        "base": run.base_step,
        "categories": list(CATEGORY_CODES),
        "probes": probes,
    }


assert set(CATEGORIES) <= set(CATEGORY_CODES)
