"""The probe: one SFT example (prompt, target) and the words of the prompt that are players.

Players are character spans so that a probe means the same thing under any tokenizer: the
same words can be scored on the model being trained and on a reference model of another
family (DESIGN §6). Everything downstream indexes subsets by bit ``i`` = player ``i``
(DESIGN §3), so the player order is fixed here: sorted by position in the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Most players a probe may have: a value table has ``2**n`` entries, one forward pass each.
MAX_PLAYERS = 20

#: A word: letters/digits, with inner apostrophes or hyphens ("don't", "well-known").
WORD_RE = re.compile(r"\w+(?:['\u2019\-]\w+)*")

Span = tuple[int, int]


def word_spans(text: str) -> list[Span]:
    """Character spans of the words of ``text``, in order."""
    return [m.span() for m in WORD_RE.finditer(text)]


@dataclass
class Probe:
    """One SFT example to probe: ``prompt`` (input), ``target`` (trained response), players.

    ``players`` are ``(start, end)`` character spans of words of ``prompt``; a span may cover
    a phrase of several words but must start at the start of a word and end at the end of a
    word. They are validated and kept sorted by position, so player ``i`` is bit ``i``.
    """

    prompt: str
    target: str
    players: list[Span] = field(default_factory=list)
    id: str = ""

    def __post_init__(self) -> None:
        self.players = _validated_players(self.prompt, self.target, self.players, self.id)

    @property
    def n_players(self) -> int:
        return len(self.players)

    @property
    def words(self) -> list[str]:
        """The text of each player, in player order."""
        return [self.prompt[s:e] for s, e in self.players]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot; ``words`` is included for humans and checked on load."""
        return {
            "id": self.id,
            "prompt": self.prompt,
            "target": self.target,
            "players": [[s, e] for s, e in self.players],
            "words": self.words,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Probe:
        """Inverse of :meth:`to_dict`; refuses a snapshot whose words no longer match."""
        probe = cls(
            prompt=data["prompt"],
            target=data["target"],
            players=[(int(s), int(e)) for s, e in data["players"]],
            id=str(data.get("id", "")),
        )
        words = data.get("words")
        if words is not None and list(words) != probe.words:
            raise ValueError(
                f"probe {probe.id!r}: stored words {list(words)!r} do not match the player "
                f"spans {probe.words!r}; the snapshot was edited or written for another prompt"
            )
        return probe


def _name(probe_id: str) -> str:
    return f"probe {probe_id!r}" if probe_id else "probe (no id)"


def _validated_players(
    prompt: str, target: str, players: Iterable[Span], probe_id: str
) -> list[Span]:
    name = _name(probe_id)
    if not isinstance(prompt, str) or not isinstance(target, str):
        raise TypeError(f"{name}: prompt and target must be str")
    if not target.strip():
        raise ValueError(
            f"{name}: the target is empty; give the response the model is trained to produce"
        )
    spans: list[Span] = []
    for p in players:
        try:
            s, e = (int(p[0]), int(p[1]))
            if len(p) != 2:
                raise ValueError
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"{name}: player {p!r} is not a (start, end) pair") from None
        spans.append((s, e))
    if not spans:
        raise ValueError(
            f"{name}: no players; pass word spans of the prompt, e.g. select_players(prompt)"
        )
    if len(spans) > MAX_PLAYERS:
        raise ValueError(
            f"{name}: {len(spans)} players; at most {MAX_PLAYERS} are allowed "
            f"(each player doubles the 2**n forward passes); choose fewer words"
        )
    words = word_spans(prompt)
    starts = {s for s, _ in words}
    ends = {e for _, e in words}
    for s, e in spans:
        if not (0 <= s < e <= len(prompt)):
            what = "empty" if s == e else "out of range"
            raise ValueError(
                f"{name}: player span ({s}, {e}) is {what} for a prompt of {len(prompt)} "
                f"characters; use (start, end) with 0 <= start < end <= len(prompt)"
            )
        if s not in starts or e not in ends:
            raise ValueError(
                f"{name}: player span ({s}, {e}) = {prompt[s:e]!r} is not a word of the prompt "
                f"(it cuts a word or covers only spaces/punctuation); spans must start and end "
                f"on word boundaries, e.g. one of {_nearby_words(prompt, words, s, e)}"
            )
    spans.sort()
    for (s0, e0), (s1, e1) in zip(spans, spans[1:], strict=False):
        if s1 < e0:
            raise ValueError(
                f"{name}: players ({s0}, {e0}) = {prompt[s0:e0]!r} and ({s1}, {e1}) = "
                f"{prompt[s1:e1]!r} overlap; each character may belong to one player only"
            )
    return spans


def _nearby_words(prompt: str, words: list[Span], s: int, e: int) -> str:
    """A hint for error messages: word spans around the offending one."""
    near = [w for w in words if w[1] > s - 20 and w[0] < e + 20][:4]
    return ", ".join(f"({a}, {b}) = {prompt[a:b]!r}" for a, b in near) or "(no words nearby)"
