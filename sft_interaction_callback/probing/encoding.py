"""Probe -> token ids and, per token, which players cover it.

Masking works on input embeddings (DESIGN §2), so the only thing a value function needs to
know about words is which token positions each player owns. Offsets come from the fast
tokenizer, so a word split into several tokens is one player over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sft_interaction_callback.probing.probes import Probe


@dataclass(frozen=True)
class EncodedProbe:
    """Token ids of a probe and the player bitmask of every prompt token."""

    prompt_ids: list[int]
    target_ids: list[int]
    cover: list[int]
    """``cover[t]`` has bit ``i`` set iff player ``i`` covers prompt token ``t``."""

    def first_tokens(self, n: int) -> list[int]:
        """First token position of each of the ``n`` players (non-decreasing in player order)."""
        return [next(t for t, c in enumerate(self.cover) if (c >> i) & 1) for i in range(n)]


def _starts_with_special(text: str, tokenizer: Any) -> bool:
    """True when a rendered template already carries the BOS/CLS text (do not add it twice)."""
    for name in ("bos_token", "cls_token"):
        tok = getattr(tokenizer, name, None)
        if isinstance(tok, str) and tok and text.startswith(tok):
            return True
    return False


def encode_prompt(probe: Probe, tokenizer: Any) -> tuple[list[int], list[int]]:
    """``(ids, cover)`` for the prompt, special tokens added the way the tokenizer adds them.

    A prompt rendered by a chat template that already starts with the BOS text is encoded
    without adding special tokens, as trainers do for templated text.
    """
    add_special = not _starts_with_special(probe.prompt, tokenizer)
    try:
        enc = tokenizer(probe.prompt, add_special_tokens=add_special, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError) as err:
        raise ValueError(
            f"probe {probe.id!r}: the tokenizer cannot return character offsets ({err}); "
            "load a fast tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True))"
        ) from err
    ids = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    cover = [0] * len(ids)
    for t, (a, b) in enumerate(offsets):
        if b <= a:
            continue  # special token or empty piece
        for i, (s, e) in enumerate(probe.players):
            if a < e and s < b:
                cover[t] |= 1 << i
    owned = 0
    for c in cover:
        owned |= c
    for i, (s, e) in enumerate(probe.players):
        if not (owned >> i) & 1:
            raise ValueError(
                f"probe {probe.id!r}: player {i} ({s}, {e}) = {probe.prompt[s:e]!r} covers no "
                "token (the tokenizer dropped it, or the prompt was truncated); choose another "
                "word"
            )
    return ids, cover


def encode_probe(probe: Probe, tokenizer: Any) -> EncodedProbe:
    """Prompt ids (with cover) plus target ids, as a trainer tokenizes prompt then response."""
    ids, cover = encode_prompt(probe, tokenizer)
    target_ids = list(tokenizer(probe.target, add_special_tokens=False)["input_ids"])
    if not target_ids:
        raise ValueError(
            f"probe {probe.id!r}: the target {probe.target!r} tokenizes to no tokens; "
            "give a non-empty response"
        )
    return EncodedProbe(prompt_ids=ids, target_ids=target_ids, cover=cover)
