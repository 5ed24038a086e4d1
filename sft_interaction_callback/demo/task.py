"""The demo's synthetic task: word sentences whose yes/no label follows planted word patterns.

Every sentence is 10-14 words drawn from a fixed made-up vocabulary, plus a few *planted*
words. The true rule is::

    yes  iff  (silver AND key)  OR  (storm OR flood)

so a model that has learned it encodes an AND interaction between ``silver`` and ``key``
and an OR interaction between ``storm`` and ``flood``. The pretraining corpus follows a
different, *spurious* rule on the sentences that contain ``mirror`` (about a third of
them): there the label is ``yes`` iff exactly one of ``green`` / ``candle`` is present (a
parity, i.e. high-order, mutually cancelling effects: noise from the point of view of the
fine-tuning task). Fine-tuning data follows the true rule, with a share of labels flipped
at random.

A prompt is rendered as ``"<words> Answer:"`` and its target is ``" yes"`` or ``" no"``.
Everything is drawn from a ``random.Random`` seeded by the caller, so a split is a pure
function of its seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AND_PAIR",
    "ANSWER_WORDS",
    "Example",
    "FILLERS",
    "KINDS",
    "OR_PAIR",
    "PLANTED",
    "SPURIOUS",
    "SPURIOUS_TRIGGER",
    "Example",
    "make_split",
    "probe_sentences",
    "render_prompt",
    "sample_sentence",
    "spurious_label",
    "true_label",
    "vocabulary",
]

AND_PAIR = ("silver", "key")
OR_PAIR = ("storm", "flood")
SPURIOUS_TRIGGER = "mirror"
SPURIOUS = ("green", "candle")
PLANTED = AND_PAIR + OR_PAIR + (SPURIOUS_TRIGGER,) + SPURIOUS
#: The label words (targets) and the prompt suffix words.
ANSWER_WORDS = ("yes", "no")
PROMPT_SUFFIX = "Answer:"
#: Sentence kinds and their share: which planted pattern a sentence carries.
KINDS = {"and": 0.25, "half": 0.25, "or": 0.25, "none": 0.25}

_ONSETS = "b d f g k l m n p r s t v z".split()
_VOWELS = "a e i o u".split()


def _fillers(count: int = 240) -> tuple[str, ...]:
    """``count`` made-up two-syllable words (fixed, independent of any seed)."""
    rng = random.Random(20240617)
    words: set[str] = set()
    while len(words) < count:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(2))
        if rng.random() < 0.4:
            word += rng.choice("nrsl")
        words.add(word)
    return tuple(sorted(words - set(PLANTED)))


FILLERS = _fillers()


def vocabulary() -> list[str]:
    """Every non-special word the tokenizer knows, in a fixed order."""
    return [*ANSWER_WORDS, PROMPT_SUFFIX[:-1], ":", *PLANTED, *FILLERS]


@dataclass(frozen=True)
class Example:
    """One sentence with its true label and the label of the corpus it belongs to."""

    words: tuple[str, ...]
    kind: str
    label: str  # the label in the data set (may be spurious or flipped)
    true: str  # the label of the true rule

    @property
    def prompt(self) -> str:
        """The sentence with the question suffix: what the model reads."""
        return render_prompt(self.words)

    @property
    def target(self) -> str:
        """The label word with its leading space: what the model must say."""
        return " " + self.label

    @property
    def noisy(self) -> bool:
        """Whether the data set's label disagrees with the true rule (flipped or spurious)."""
        return self.label != self.true


def render_prompt(words: Sequence[str]) -> str:
    """The prompt for ``words``; one function so data, probes and eval render alike."""
    return " ".join(words) + " " + PROMPT_SUFFIX


def true_label(words: Sequence[str]) -> str:
    """``yes`` when the planted AND pair or either OR word is present, else ``no``."""
    w = set(words)
    yes = (AND_PAIR[0] in w and AND_PAIR[1] in w) or OR_PAIR[0] in w or OR_PAIR[1] in w
    return "yes" if yes else "no"


def spurious_label(words: Sequence[str]) -> str | None:
    """The pretraining corpus's other rule; None where it does not apply (no trigger)."""
    w = set(words)
    if SPURIOUS_TRIGGER not in w:
        return None
    return "yes" if (SPURIOUS[0] in w) != (SPURIOUS[1] in w) else "no"


def _flip(label: str) -> str:
    return "no" if label == "yes" else "yes"


def sample_sentence(
    rng: random.Random,
    kind: str | None = None,
    *,
    length: tuple[int, int] = (10, 14),
    trigger_p: float = 0.35,
    spurious_p: float = 0.5,
    extra: Sequence[str] = (),
) -> tuple[tuple[str, ...], str]:
    """``(words, kind)``: one sentence of the given kind (drawn by ``KINDS`` if None).

    ``extra`` words are always included (the probes use it to force planted words).
    """
    if kind is None:
        kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    planted: list[str] = list(extra)
    if kind == "and":
        planted += AND_PAIR
    elif kind == "half":
        planted.append(rng.choice(AND_PAIR))
    elif kind == "or":
        planted += rng.choice([[OR_PAIR[0]], [OR_PAIR[1]], list(OR_PAIR)])
    elif kind != "none":
        raise ValueError(f"unknown sentence kind {kind!r}; use one of {list(KINDS)}")
    if rng.random() < trigger_p:
        planted.append(SPURIOUS_TRIGGER)
    planted += [w for w in SPURIOUS if rng.random() < spurious_p]
    planted = list(dict.fromkeys(planted))
    n = rng.randint(*length)
    fill = rng.sample(FILLERS, max(0, n - len(planted)))
    words = planted + fill
    rng.shuffle(words)
    return tuple(words), kind


def make_split(
    rng: random.Random,
    size: int,
    *,
    spurious: bool = False,
    flip_p: float = 0.0,
    **sentence_kw: Any,
) -> list[Example]:
    """``size`` examples. ``spurious``: the trigger sentences follow the spurious rule
    (the pretraining corpus); ``flip_p``: share of labels flipped at random."""
    out = []
    for _ in range(size):
        words, kind = sample_sentence(rng, **sentence_kw)
        true = true_label(words)
        label = true
        if spurious:
            label = spurious_label(words) or true
        if flip_p and rng.random() < flip_p:
            label = _flip(label)
        out.append(Example(words, kind, label, true))
    return out


def probe_sentences(rng: random.Random, count: int, length: int) -> list[Example]:
    """Held-out probe sentences of exactly ``length`` words that carry the planted patterns.

    They alternate between the AND pattern and the OR pattern (both OR words), and every
    one also holds the spurious trigger and both spurious words, so that the pretrained
    model's spurious interactions are among the players. Labels are the true ones.
    """
    extra = (SPURIOUS_TRIGGER, *SPURIOUS)
    out = []
    for k in range(count):
        if k % 2 == 0:
            forced = (*AND_PAIR, *extra)
            kind = "and"
        else:
            forced = (*OR_PAIR, *extra)
            kind = "none"  # the OR words are forced through ``extra``: both of them
        words, _ = sample_sentence(
            rng, kind, length=(length, length), trigger_p=0.0, spurious_p=0.0, extra=forced
        )
        label = true_label(words)
        out.append(Example(words, "and" if k % 2 == 0 else "or", label, label))
    return out
