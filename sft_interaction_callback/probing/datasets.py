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

from sft_interaction_callback.probing.players import eligible_words, select_players
from sft_interaction_callback.probing.probes import Probe, Span

DEFAULT_TEXT_TEMPLATE = "Classify the emotion of this comment: {text}\nEmotion:"
DEFAULT_TARGET_TEMPLATE = " {label}"
DEFAULT_DOLLY_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
DEFAULT_DOLLY_CONTEXT_TEMPLATE = (
    "### Instruction:\n{instruction}\n\n### Context:\n{context}\n\n### Response:\n"
)


def probes_from_dataset(
    rows: Iterable[Mapping[str, Any]] | Any,
    *,
    tokenizer: Any,
    n_players: int = 10,
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
) -> list[Probe]:
    """Sample ``num_probes`` rows (deterministically by ``seed``) and turn them into probes.

    Supported rows: ``prompt``/``completion`` (strings or message lists), chat ``messages``,
    Dolly ``instruction``/``context``/``response``, and ``text`` + ``label``/``labels`` (a
    name, an id resolved by ``label_names`` or the data set's ``ClassLabel``, or a list whose
    first entry is used). ``as_chat=True`` renders plain rows as one user turn through the
    chat template. Rows with at least ``n_players`` eligible words are preferred; if too few
    exist, shorter rows are used with fewer players (with a warning). Iterables without a
    length (streaming data sets) are sampled among their first ``max_rows`` rows.
    """
    if label_names is None:
        label_names = _class_label_names(rows)
    if hasattr(rows, "__getitem__") and hasattr(rows, "__len__"):
        data = rows
    else:  # a generator or streaming data set: sample among its first ``max_rows`` rows
        data = list(itertools.islice(rows, max_rows))
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    full: list[Probe] = []
    short: list[tuple[int, Probe]] = []
    for idx in order:
        if len(full) >= num_probes:
            break
        row = data[idx]
        prompt, target, regions = render_row(
            row,
            tokenizer=tokenizer,
            text_template=text_template,
            target_template=target_template,
            label_names=label_names,
            dolly_template=dolly_template,
            dolly_context_template=dolly_context_template,
            as_chat=as_chat,
        )
        if not target.strip():
            continue
        n_ok = len(eligible_words(prompt, tokenizer=tokenizer, regions=regions))
        if n_ok == 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            players = select_players(
                prompt,
                n_players,
                tokenizer=tokenizer,
                strategy=strategy,
                seed=seed + idx,
                regions=regions,
            )
        probe = Probe(prompt, target, players, id=f"{id_prefix}{idx}")
        if n_ok >= n_players:
            full.append(probe)
        elif len(short) < num_probes:
            short.append((n_ok, probe))
    if len(full) < num_probes and short:
        short.sort(key=lambda t: -t[0])
        extra = [p for _, p in short[: num_probes - len(full)]]
        warnings.warn(
            f"only {len(full)} rows have {n_players} eligible words; adding {len(extra)} "
            f"probes with fewer players ({', '.join(str(p.n_players) for p in extra)})",
            stacklevel=2,
        )
        full.extend(extra)
    if not full:
        raise ValueError("no usable rows: every sampled row had an empty target or no words")
    return full


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
) -> tuple[str, str, list[Span]]:
    """``(prompt, target, user_regions)`` for one row; regions are where players may go."""
    if "messages" in row or "conversations" in row:
        messages = chat_messages(row.get("messages", row.get("conversations")))
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError("a chat row must end with an assistant turn (the target)")
        return _chat_result(messages, tokenizer)
    if "prompt" in row and "completion" in row:
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
    if "instruction" in row and ("response" in row or "output" in row):
        instruction = str(row["instruction"])
        context = str(row.get("context") or row.get("input") or "")
        target = str(row.get("response", row.get("output")))
        if as_chat:
            user = instruction if not context else f"{instruction}\n\n{context}"
            return _single_turn(user, target, tokenizer)
        template = dolly_context_template if context else dolly_template
        return _fill(template, {"instruction": instruction, "context": context}, target)
    if "text" in row and ("label" in row or "labels" in row):
        label = _label_name(row.get("label", row.get("labels")), label_names)
        target = target_template.format(label=label)
        text = str(row["text"])
        if as_chat:
            user = text_template.format(text=text)
            prompt, _, regions = _single_turn(user, target, tokenizer)
            start = prompt.find(text, regions[0][0]) if regions else -1
            return prompt, target, [(start, start + len(text))] if start >= 0 else regions
        return _fill(text_template, {"text": text}, target)
    raise ValueError(
        f"unrecognised row with keys {sorted(row)}; expected prompt/completion, messages, "
        "instruction/context/response or text/label"
    )


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
