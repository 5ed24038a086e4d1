"""Probes from the rows of an SFT data set, rendered exactly as a trainer renders them.

A probe must show the model what training shows it (DESIGN §2): chat rows go through the
tokenizer's chat template with the generation prompt, plain rows through a text template.
Players are chosen inside the user's own words only, never in template text.
"""

from __future__ import annotations

import itertools
import random
import string
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sft_interaction_callback.probing.players import (
    eligible_words,
    normalised_words,
    select_players,
    template_literal_words,
)
from sft_interaction_callback.probing.probes import Probe, Span, word_spans

DEFAULT_TEXT_TEMPLATE = "Classify the emotion of this comment: {text}\nEmotion:"
DEFAULT_TARGET_TEMPLATE = " {label}"
DEFAULT_DOLLY_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
DEFAULT_DOLLY_CONTEXT_TEMPLATE = (
    "### Instruction:\n{instruction}\n\n### Context:\n{context}\n\n### Response:\n"
)


#: Columns a trainer adds when it tokenizes a data set (TRL's ``SFTTrainer`` keeps the raw
#: columns next to them): token ids and masks, never a probe's text or a class label.
TOKEN_COLUMNS: frozenset[str] = frozenset(
    {
        "input_ids",
        "attention_mask",
        "labels",
        "completion_mask",
        "assistant_masks",
        "seq_lengths",
        "position_ids",
        "token_type_ids",
    }
)

#: The row formats probes can be sampled from, for error messages.
FORMATS = (
    "prompt/completion (strings or message lists), messages (or conversations), "
    "text (language modelling), text + label (classification), instruction/response, "
    "or pre-tokenized input_ids"
)

#: A word in at least this share of the sampled prompts is template text, not a player.
TEMPLATE_SHARE = 0.8
#: How many rendered rows the template-word share is measured on (at least 3 are needed).
TEMPLATE_POOL = 64
#: Longest target cut from the end of a language-modelling ``text`` row, in words.
LM_TARGET_WORDS = 16


def row_format(row: Mapping[str, Any], text_field: str = "text") -> str:
    """The format of one row: ``messages``, ``prompt_completion``, ``instruction``,
    ``text_label``, ``text``, ``tokenized`` or ``tokenized_label`` (token ids and a class
    ``label``); a ``ValueError`` naming its columns otherwise.

    A ``labels`` column next to ``input_ids`` holds token ids (what TRL's ``SFTTrainer``
    adds when it tokenizes), never a class label; raw text columns win over token ids.
    """
    keys = set(row)
    tokenized = "input_ids" in keys
    if "messages" in keys or "conversations" in keys:
        return "messages"
    if "prompt" in keys and "completion" in keys:
        return "prompt_completion"
    if "instruction" in keys and ("response" in keys or "output" in keys):
        return "instruction"
    if text_field in keys and ("label" in keys or ("labels" in keys and not tokenized)):
        return "text_label"
    if text_field in keys:
        return "text"
    if tokenized and "label" in keys:
        return "tokenized_label"  # tokenized classification rows: the text, then the label
    if tokenized:
        return "tokenized"
    raise ValueError(
        f"unrecognised row with columns {sorted(keys)}; expected {FORMATS}. Rename the "
        "columns to one of these formats, or pass probes=[...] explicitly"
    )


def probes_from_dataset(
    rows: Iterable[Mapping[str, Any]] | Any,
    *,
    tokenizer: Any,
    n_players: int = 8,
    num_probes: int = 8,
    seed: int = 0,
    strategy: str = "spread",
    text_template: str = DEFAULT_TEXT_TEMPLATE,
    target_template: str = DEFAULT_TARGET_TEMPLATE,
    label_names: Sequence[str] | None = None,
    dolly_template: str = DEFAULT_DOLLY_TEMPLATE,
    dolly_context_template: str = DEFAULT_DOLLY_CONTEXT_TEMPLATE,
    as_chat: bool = False,
    id_prefix: str = "",
    max_rows: int = 10_000,
    exclude_words: Iterable[str] | None = None,
    template: str | None = "auto",
    text_field: str = "text",
) -> list[Probe]:
    """Sample ``num_probes`` rows (deterministically by ``seed``) and turn them into probes.

    Supported rows: every format TRL's ``SFTTrainer`` accepts (see :func:`row_format`):
    ``prompt``/``completion`` (strings or message lists), chat ``messages``, language
    modelling ``text`` (the last words are the target, see :func:`split_text`),
    pre-tokenized ``input_ids`` (decoded with ``tokenizer``; ``labels`` / ``completion_mask``
    tell prompt from target), Dolly ``instruction``/``context``/``response``, and ``text`` +
    ``label`` (a name, an id resolved by ``label_names`` or the data set's ``ClassLabel``,
    or a list whose first entry is used). ``as_chat=True`` renders plain rows as one user
    turn through the chat template.

    Template words are never players: ``exclude_words``, the literal words of an explicit
    ``template`` string (``"Comment: {text}\nEmotion:"``), and with ``template="auto"``
    (default) every word found in at least 80% of the sampled prompts (measured on up to
    64 rows, when there are at least 3). ``template=None`` turns detection off.

    All probes get the same number of players: ``n_players`` when ``num_probes`` rows have
    that many eligible words, else the largest number that ``num_probes`` rows have (one
    warning says so and how to avoid it). Fewer usable rows than ``num_probes`` and
    duplicate prompts are reported in the same warning. Iterables without a length
    (streaming data sets) are sampled among their first ``max_rows`` rows.
    """
    if label_names is None:
        label_names = _class_label_names(rows)
    if hasattr(rows, "__getitem__") and hasattr(rows, "__len__"):
        data = rows
    else:  # a generator or streaming data set: sample among its first ``max_rows`` rows
        data = list(itertools.islice(rows, max_rows))
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    options = {
        "tokenizer": tokenizer,
        "text_template": text_template,
        "target_template": target_template,
        "label_names": label_names,
        "dolly_template": dolly_template,
        "dolly_context_template": dolly_context_template,
        "as_chat": as_chat,
        "text_field": text_field,
    }
    rendered: dict[int, tuple[str, str, list[Span]]] = {}

    def render(idx: int) -> tuple[str, str, list[Span]]:
        if idx not in rendered:
            rendered[idx] = render_row(data[idx], **options)
        return rendered[idx]

    exclude = set(normalised_words(exclude_words))
    if template not in (None, "auto"):
        exclude |= template_literal_words(str(template))
    if template == "auto":
        pool = {p: r for p, t, r in (render(i) for i in order[:TEMPLATE_POOL]) if t.strip()}
        exclude |= shared_words(list(pool.items()), tokenizer, exclude)  # distinct prompts
    counts: list[tuple[int, int]] = []  # (row index, eligible words), in sampling order
    seen: set[tuple[str, str]] = set()
    duplicates = full = 0
    for idx in order:
        if full >= num_probes:
            break
        prompt, target, regions = render(idx)
        if not target.strip():
            continue
        if (prompt, target) in seen:
            duplicates += 1
            continue
        seen.add((prompt, target))
        k = len(eligible_words(prompt, tokenizer=tokenizer, regions=regions, exclude=exclude))
        if k:
            counts.append((idx, k))
            full += k >= n_players
    if not counts:
        raise ValueError(
            "no usable rows: every sampled row had an empty target or no eligible words "
            "(stop words, template words and placeholders are not players)"
        )
    ranked = sorted((k for _, k in counts), reverse=True)
    n = min(n_players, ranked[min(num_probes, len(ranked)) - 1])
    chosen = [idx for idx, k in counts if k >= n][:num_probes]
    probes = []
    for idx in chosen:
        prompt, target, regions = render(idx)
        players = select_players(
            prompt,
            n,
            tokenizer=tokenizer,
            strategy=strategy,
            seed=seed + idx,
            regions=regions,
            exclude=exclude,
        )
        probes.append(Probe(prompt, target, players, id=f"{id_prefix}{idx}"))
    _warn_shortfall(len(probes), num_probes, n, n_players, duplicates, len(counts))
    return probes


def _warn_shortfall(
    got: int, wanted: int, n: int, n_players: int, duplicates: int, usable: int
) -> None:
    """One warning for everything that made the probes fewer or smaller than asked."""
    problems = []
    if n < n_players:
        problems.append(
            f"too few rows have {n_players} eligible words, so every probe gets {n} players "
            f"(2**{n} masks) instead of {n_players}"
        )
    if got < wanted:
        problems.append(f"only {usable} usable row(s), so {got} probe(s) instead of {wanted}")
    if duplicates and (got < wanted or n < n_players):
        problems.append(f"{duplicates} duplicate prompt(s) were skipped")
    if problems:
        warnings.warn(
            "sampled probes: "
            + "; ".join(problems)
            + f". To avoid this, set n_players={n} / num_probes={got}, use longer or more "
            "rows, or pass probes=[...] explicitly",
            stacklevel=3,
        )


def shared_words(
    prompts: Sequence[tuple[str, Sequence[Span]]],
    tokenizer: Any = None,
    exclude: Iterable[str] | None = None,
    share: float = TEMPLATE_SHARE,
) -> frozenset[str]:
    """Words (normalised) found in at least ``share`` of ``prompts``: template text.

    ``prompts`` are ``(text, regions)`` pairs; only eligible words inside the regions are
    counted. With fewer than 3 prompts nothing is template (two rows share words by chance).
    """
    if len(prompts) < 3:
        return frozenset()
    df: dict[str, int] = {}
    for text, regions in prompts:
        words = eligible_words(text, tokenizer=tokenizer, regions=regions, exclude=exclude)
        for w in normalised_words(text[s:e] for s, e in words):
            df[w] = df.get(w, 0) + 1
    need = share * len(prompts)
    return frozenset(w for w, c in df.items() if c >= need)


def split_text(text: str, tokenizer: Any = None) -> tuple[str, str, list[Span]]:
    """A language-modelling row as ``(prompt, target, regions)``.

    The last quarter of the words (at least 1, at most 16) is the target and the rest the
    prompt, cut at a word start (the space before it goes with the target, as a tokenizer
    sees a continuation). Trailing EOS / pad text (TRL appends the EOS) is not counted as
    a word and stays on the target, as trained.
    """
    words = word_spans(_strip_special_suffix(text, tokenizer))
    if len(words) < 2:
        raise ValueError(
            f"a language-modelling text row needs at least two words (a prompt and a target), "
            f"got {text[:60]!r}"
        )
    k = min(LM_TARGET_WORDS, max(1, round(len(words) / 4)))
    head = text[: words[-k][0]]
    prompt = head.rstrip()
    return prompt, text[len(prompt) :], [(0, len(prompt))]


def _strip_special_suffix(text: str, tokenizer: Any) -> str:
    """``text`` without trailing EOS / pad / SEP texts (TRL appends the EOS token): for
    counting words only."""
    tails = [getattr(tokenizer, name, None) for name in ("eos_token", "pad_token", "sep_token")]
    tails = [t for t in tails if isinstance(t, str) and t]
    changed = True
    while changed:
        changed = False
        stripped = text.rstrip()
        for t in tails:
            if stripped.endswith(t):
                text, changed = stripped[: -len(t)], True
    return text


def decode(row: Mapping[str, Any], tokenizer: Any) -> str:
    """The text of a pre-tokenized row, without the special tokens the tokenizer adds."""
    if getattr(tokenizer, "decode", None) is None:
        raise ValueError("pre-tokenized rows need a tokenizer with decode() to read them")
    return tokenizer.decode(_ints(row["input_ids"]), skip_special_tokens=True)


def _ints(value: Any) -> list[int]:
    """A column of ints (a list, a tensor, an array) as a list; ``[]`` for None."""
    if value is None:
        return []
    if hasattr(value, "tolist"):
        value = value.tolist()
    return [int(x) for x in value]


def decode_row(row: Mapping[str, Any], tokenizer: Any) -> tuple[str, str, list[Span]]:
    """A pre-tokenized row (``input_ids``) decoded into ``(prompt, target, regions)``.

    The target is where ``completion_mask`` / ``assistant_masks`` is 1, or where ``labels``
    is not -100; without such a split the decoded text is cut as a language-modelling row.
    A packed row (``seq_lengths``) contributes its first sequence.
    """
    decode = getattr(tokenizer, "decode", None)
    if decode is None:
        raise ValueError("pre-tokenized rows need a tokenizer with decode() to read them")
    ids = _ints(row["input_ids"])
    lengths = _ints(row.get("seq_lengths"))
    if lengths:
        ids = ids[: lengths[0]]
    mask = _ints(row.get("completion_mask")) or _ints(row.get("assistant_masks"))
    if not mask and row.get("labels") is not None:
        mask = [int(x != -100) for x in _ints(row["labels"])]
    mask = mask[: len(ids)]
    if 1 in mask and 0 in mask[: mask.index(1) + 1]:
        start = mask.index(1)
        end = len(mask) - mask[::-1].index(1)
        prompt = decode(ids[:start], skip_special_tokens=False)
        target = decode(ids[start:end], skip_special_tokens=False)
        space = "" if not prompt or prompt[-1].isspace() or target[:1].isspace() else " "
        return prompt, space + target if target.strip() else target, [(0, len(prompt))]
    return split_text(decode(ids, skip_special_tokens=False), tokenizer)


def render_row(
    row: Mapping[str, Any],
    *,
    tokenizer: Any,
    text_template: str = DEFAULT_TEXT_TEMPLATE,
    target_template: str = DEFAULT_TARGET_TEMPLATE,
    label_names: Sequence[str] | None = None,
    dolly_template: str = DEFAULT_DOLLY_TEMPLATE,
    dolly_context_template: str = DEFAULT_DOLLY_CONTEXT_TEMPLATE,
    as_chat: bool = False,
    text_field: str = "text",
) -> tuple[str, str, list[Span]]:
    """``(prompt, target, user_regions)`` for one row; regions are where players may go."""
    fmt = row_format(row, text_field)
    if fmt == "messages":
        messages = chat_messages(row.get("messages", row.get("conversations")))
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError("a chat row must end with an assistant turn (the target)")
        return _chat_result(messages, tokenizer)
    if fmt == "prompt_completion":
        prompt, completion = row["prompt"], row["completion"]
        target = (
            completion if isinstance(completion, str) else chat_messages(completion)[-1]["content"]
        )
        if isinstance(prompt, str):
            if as_chat:
                return _single_turn(prompt, target, tokenizer)
            return prompt, target, [(0, len(prompt))]
        text, regions = _render_chat(chat_messages(prompt), tokenizer)
        return text, target, regions
    if fmt == "instruction":
        instruction = str(row["instruction"])
        context = str(row.get("context") or row.get("input") or "")
        target = str(row.get("response", row.get("output")))
        if as_chat:
            user = instruction if not context else f"{instruction}\n\n{context}"
            return _single_turn(user, target, tokenizer)
        template = dolly_context_template if context else dolly_template
        return _fill(template, {"instruction": instruction, "context": context}, target)
    if fmt == "text_label":
        label = _label_name(row.get("label", row.get("labels")), label_names)
        target = target_template.format(label=label)
        text = str(row[text_field])
        if as_chat:
            user = text_template.format(text=text)
            prompt, _, regions = _single_turn(user, target, tokenizer)
            start = prompt.find(text, regions[0][0]) if regions else -1
            return prompt, target, [(start, start + len(text))] if start >= 0 else regions
        return _fill(text_template, {"text": text}, target)
    if fmt == "text":
        return split_text(str(row[text_field]), tokenizer)
    if fmt == "tokenized_label":
        label = _label_name(row["label"], label_names)
        text = decode(row, tokenizer)
        return _fill(text_template, {"text": text}, target_template.format(label=label))
    return decode_row(row, tokenizer)


def _chat_result(messages: list[dict[str, str]], tokenizer: Any) -> tuple[str, str, list[Span]]:
    text, regions = _render_chat(messages[:-1], tokenizer)
    return text, messages[-1]["content"], regions


def _single_turn(user: str, target: str, tokenizer: Any) -> tuple[str, str, list[Span]]:
    text, regions = _render_chat([{"role": "user", "content": user}], tokenizer)
    return text, target, regions


def _fill(template: str, fields: dict[str, str], target: str) -> tuple[str, str, list[Span]]:
    """Format ``template`` and record where each field's text landed."""
    out: list[str] = []
    regions: list[Span] = []
    pos = 0
    for literal, name, spec, conv in _parse(template):
        out.append(literal)
        pos += len(literal)
        if name is None:
            continue
        if name not in fields:
            raise ValueError(
                f"template {template!r} uses {{{name}}}; the fields here are "
                + ", ".join("{" + f + "}" for f in fields)
            )
        value = format(fields[name] if conv is None else repr(fields[name]), spec or "")
        regions.append((pos, pos + len(value)))
        out.append(value)
        pos += len(value)
    return "".join(out), target, regions


def _parse(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    return [
        (lit, name, spec, conv if conv == "r" else None)
        for lit, name, spec, conv in string.Formatter().parse(template)
    ]


def chat_messages(value: Any) -> list[dict[str, str]]:
    """Turns as ``role``/``content`` strings, whatever the data set calls them.

    ShareGPT's ``from``/``value`` (``human``/``gpt``) become ``role``/``content``
    (``user``/``assistant``); a missing or null content is the empty string, never the
    text ``"None"`` (which would put a word in the prompt that the row does not have).
    Shared by the probes (here) and the SFT data (``training.data``), so a row renders
    the same way in both.
    """
    roles = {"human": "user", "gpt": "assistant"}
    out = []
    for m in value or []:
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        out.append(
            {"role": roles.get(role, role), "content": "" if content is None else str(content)}
        )
    return out


def _render_chat(messages: list[dict[str, str]], tokenizer: Any) -> tuple[str, list[Span]]:
    """Apply the chat template with the generation prompt; locate each user turn's text."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "chat rows need a tokenizer with a chat template (tokenizer.chat_template is "
            "unset); set one, or give rows as plain prompt/completion strings"
        )
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    regions: list[Span] = []
    cursor = 0
    for m in messages:
        content = m["content"] if m["content"] in text else m["content"].strip()  # trimmed?
        start = text.find(content, cursor) if content else -1
        if start < 0:
            continue
        end = start + len(content)
        if m["role"] == "user":
            regions.append((start, end))
        cursor = end
    return text, regions


def _label_name(label: Any, names: Sequence[str] | None) -> str:
    if isinstance(label, (list, tuple)):
        if not label:
            raise ValueError("empty label list")
        label = label[0]
    if isinstance(label, str) and "," in label and names is not None:
        label = label.split(",")[0].strip()
    if isinstance(label, str) and label.strip().isdigit() and names is not None:
        label = int(label)
    if isinstance(label, int):
        if names is None:
            raise ValueError(f"label id {label} given but no label_names to name it")
        return str(names[label])
    return str(label)


def _class_label_names(rows: Any) -> list[str] | None:
    """Names from a ``datasets`` ClassLabel feature, if the rows are a Dataset."""
    features = getattr(rows, "features", None)
    if not features:
        return None
    for key in ("label", "labels"):
        feat = features.get(key) if hasattr(features, "get") else None
        feat = getattr(feat, "feature", feat)  # Sequence(ClassLabel)
        names = getattr(feat, "names", None)
        if names:
            return list(names)
    return None
