"""Choosing which words of a prompt are players.

Stop words, punctuation and template markup carry little meaning of their own; spending one
of the ``n`` players (each doubles the cost) on them would waste the probe (DESIGN §2).
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from sft_interaction_callback.probing.probes import MAX_PLAYERS, Span, word_spans

STOP_WORDS: frozenset[str] = frozenset(
    """
    a about above after again against all almost also am an and any are aren't as at be
    because been before being below between both but by can can't cannot could couldn't did
    didn't do does doesn't doing don't down during each either else ever few for from further
    had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself
    him himself his how how's however i i'd i'll i'm i've if in into is isn't it it's its
    itself just let's me might more most much must mustn't my myself neither no nor not now
    of off on once only or other ought our ours ourselves out over own same shan't she she'd
    she'll she's should shouldn't so some such than that that's the their theirs them
    themselves then there there's these they they'd they'll they're they've this those
    though through to too under until up upon us very was wasn't we we'd we'll we're we've
    were weren't what what's when when's where where's whether which while who who's whom
    whose why why's will with won't would wouldn't yet you you'd you'll you're you've your
    yours yourself yourselves s t d ll m re ve
    """.split()
)

#: Role names that chat templates write as headers next to special markup.
ROLE_WORDS: frozenset[str] = frozenset(
    {"system", "user", "assistant", "model", "human", "gpt", "bot", "tool", "developer"}
)

#: Template / special-token text of common chat formats.
_MARKUP_RE = re.compile(
    r"<\|[^|<>]{1,40}\|>"  # <|im_start|>, <|start_header_id|>, <|eot_id|>
    r"|</?s>"  # <s>, </s>
    r"|<</?SYS>>"  # Llama-2 system markers
    r"|\[/?(?:INST|SYS|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS)\]"
    r"|\[(?:CLS|SEP|PAD|MASK|UNK|BOS|EOS)\]"
    r"|<(?:start_of_turn|end_of_turn|bos|eos|pad|unk|mask|eot|sep|cls)>"
)
#: Bracketed placeholders that data sets put where text was anonymised: ``[NAME]``,
#: ``[RELIGION]``, ``<user>``, ``{name}``, ``@USER``; never a player.
_PLACEHOLDER_RE = re.compile(r"\[\s*\w+\s*\]|<\s*\w+\s*>|\{\s*\w+\s*\}|@USER\b|@user\b")
#: A role word right after markup (``<|im_start|>user``) or right before a header end.
_ROLE_AFTER_RE = re.compile(r"\s*(\w+)")


def _normalise(word: str) -> str:
    return word.lower().replace("\u2019", "'")


def template_spans(text: str, tokenizer: Any = None) -> list[Span]:
    """Character spans of template markup in ``text``: special-token text, role headers and
    bracketed placeholders (``[NAME]``, ``<user>``, ``{name}``)."""
    spans: list[Span] = [m.span() for m in _MARKUP_RE.finditer(text)]
    spans += [m.span() for m in _PLACEHOLDER_RE.finditer(text)]
    if tokenizer is not None:
        for tok in _special_token_texts(tokenizer):
            start = text.find(tok)
            while start != -1:
                spans.append((start, start + len(tok)))
                start = text.find(tok, start + len(tok))
    # role headers: "<|im_start|>user", "<start_of_turn>model", "<|start_header_id|>user<|..."
    for _, end in list(spans):
        m = _ROLE_AFTER_RE.match(text, end)
        if m and _normalise(m.group(1)) in ROLE_WORDS:
            spans.append(m.span(1))
    return sorted(spans)


def _special_token_texts(tokenizer: Any) -> set[str]:
    texts: set[str] = set()
    for tok in getattr(tokenizer, "all_special_tokens", None) or []:
        if isinstance(tok, str) and tok.strip():
            texts.add(tok)
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    for added in decoder.values():
        content = getattr(added, "content", None)
        if getattr(added, "special", False) and isinstance(content, str) and content.strip():
            texts.add(content)
    return texts


def _overlaps(span: Span, others: Sequence[Span]) -> bool:
    s, e = span
    return any(a < e and s < b for a, b in others)


def normalised_words(words: Iterable[str] | None) -> frozenset[str]:
    """``words`` as :func:`eligible_words` compares them (lower case, straight apostrophes)."""
    return frozenset(_normalise(w) for w in words or ())


def template_literal_words(template: str) -> frozenset[str]:
    """The words of a text template outside its ``{field}`` placeholders.

    ``"Comment: {text}\nEmotion:"`` -> ``{"comment", "emotion"}``: the words every prompt
    rendered with the template shares, which must not become players.
    """
    literal = re.sub(r"\{[^{}]*\}", " ", template)
    return frozenset(_normalise(literal[s:e]) for s, e in word_spans(literal))


def eligible_words(
    prompt: str,
    *,
    tokenizer: Any = None,
    regions: Iterable[Span] | None = None,
    exclude: Iterable[str] | None = None,
) -> list[Span]:
    """Word spans that may be players: not stop words, not markup or placeholders, not in
    ``exclude`` (template words, compared case-insensitively), inside ``regions`` if given."""
    markup = template_spans(prompt, tokenizer)
    allowed = None if regions is None else sorted(regions)
    skip = STOP_WORDS | normalised_words(exclude)
    out: list[Span] = []
    for s, e in word_spans(prompt):
        if _normalise(prompt[s:e]) in skip or _overlaps((s, e), markup):
            continue
        if allowed is not None and not any(a <= s and e <= b for a, b in allowed):
            continue
        out.append((s, e))
    return out


def select_players(
    prompt: str,
    n: int = 10,
    *,
    tokenizer: Any = None,
    strategy: str = "spread",
    seed: int = 0,
    regions: Iterable[Span] | None = None,
    exclude: Iterable[str] | None = None,
) -> list[Span]:
    """Choose ``n`` word spans of ``prompt`` as players, sorted by position.

    ``strategy="spread"`` takes words evenly over the eligible ones (so the players cover the
    whole prompt); ``"random"`` samples them with ``seed``. ``regions`` restricts the choice to
    character ranges (e.g. the user turns of a rendered chat). With fewer eligible words than
    ``n``, all of them are used and a warning says so. ``exclude``: words never chosen
    (template text), compared case-insensitively.
    """
    if not 1 <= n <= MAX_PLAYERS:
        raise ValueError(f"n={n}: choose between 1 and {MAX_PLAYERS} players")
    if strategy not in ("spread", "random"):
        raise ValueError(f"strategy={strategy!r}: use 'spread' or 'random'")
    words = eligible_words(prompt, tokenizer=tokenizer, regions=regions, exclude=exclude)
    if len(words) <= n:
        if len(words) < n:
            short = prompt if len(prompt) <= 60 else prompt[:57] + "..."
            warnings.warn(
                f"only {len(words)} eligible words (need {n}) in prompt {short!r}; using all "
                "of them",
                stacklevel=2,
            )
        return words
    if strategy == "spread":
        k = len(words)
        picks = [int((i + 0.5) * k / n) for i in range(n)]
    else:
        picks = sorted(random.Random(seed).sample(range(len(words)), n))
    return [words[i] for i in picks]
