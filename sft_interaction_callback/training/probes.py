"""Probes from SFT examples: the rows the callback watches, rendered as TRL renders them.

A probe's players are chosen inside the example's own text (its ``focus``: the comment,
the instruction and context, the user turns), never in template or instruction words,
and every probe gets the same number of players.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["build_probes"]


def build_probes(
    examples: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    *,
    n_players: int,
    num_probes: int,
    seed: int = 0,
    strategy: str = "spread",
    id_prefix: str = "eval-",
    max_scan: int = 5000,
) -> list[Any]:
    """``num_probes`` probes from ``examples``, rendered exactly as TRL renders the prompt.

    Rows are visited in a seeded order; a row is used when its own text (the example's
    ``focus``) has at least ``n_players`` eligible words, so every probe has the same
    number of players. Players are never template or instruction words.
    """
    from sft_interaction_callback.probing import Probe, eligible_words, render_row, select_players

    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    probes: list[Probe] = []
    for idx in order[:max_scan]:
        ex = examples[idx]
        prompt, target, regions = render_row(
            {"prompt": ex["prompt"], "completion": ex["completion"]}, tokenizer=tokenizer
        )
        if not target.strip():
            continue
        spans = _locate(prompt, ex.get("focus") or [], regions) or regions
        if len(eligible_words(prompt, tokenizer=tokenizer, regions=spans)) < n_players:
            continue
        players = select_players(
            prompt,
            n_players,
            tokenizer=tokenizer,
            strategy=strategy,
            seed=seed + idx,
            regions=spans,
        )
        probes.append(Probe(prompt, target, players, id=f"{id_prefix}{idx}"))
        if len(probes) == num_probes:
            break
    scanned = min(len(order), max_scan)
    if not probes:
        raise ValueError(
            f"none of the {scanned} rows scanned has {n_players} eligible words (not stop "
            "words) in its own text; lower interactions.n_players or use longer rows"
        )
    if len(probes) < num_probes:
        warnings.warn(
            f"only {len(probes)} of {scanned} rows have {n_players} eligible words; tracking "
            f"{len(probes)} probes instead of {num_probes}",
            stacklevel=2,
        )
    return probes


def _locate(prompt: str, focus: Sequence[str], regions: Sequence[tuple[int, int]]) -> list:
    """Character spans of the ``focus`` texts inside the user regions of ``prompt``."""
    spans = []
    for text in focus:
        text = text.strip()
        if not text:
            continue
        for a, b in regions:
            pos = prompt.find(text, a)
            if 0 <= pos and pos + len(text) <= b:
                spans.append((pos, pos + len(text)))
                break
    return spans
