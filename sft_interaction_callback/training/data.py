"""Data sets for SFT: read a hub split or a local file, split train/eval, render rows.

Every row becomes a prompt/completion example. With a chat template (the default when the
tokenizer has one) the prompt is a list of messages and the completion one assistant
message, so TRL's ``SFTTrainer`` applies the template and trains on the completion only;
without one, both are plain strings (``data.plain_template``).

Row formats (``data.format``, detected from the columns by default):

* ``goemotions``: ``text`` + label ids or names (``labels`` / ``label``; the GoEmotions TSV
  ``text<TAB>ids<TAB>id`` with ``labels.txt``). The user turn is ``data.instruction``; the
  response is the first label name or all of them joined (``data.label_mode``).
* ``dolly``: ``instruction`` + optional ``context`` + ``response`` (also Alpaca's
  ``instruction`` / ``input`` / ``output``).
* ``prompt_completion``: ``prompt`` + ``completion`` (strings, or message lists).
* ``messages``: a chat (``messages`` or ShareGPT ``conversations``) that ends with the
  assistant turn to learn.

Each example also records its ``focus``: the row's own text (the comment, the instruction
and context, the user turns), where the interaction probes choose their players.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sft_interaction_callback.probing.datasets import chat_messages
from sft_interaction_callback.training.probes import build_probes
from sft_interaction_callback.training.schema import ConfigError, DataConfig

__all__ = [
    "SFTData",
    "build_probes",
    "detect_format",
    "format_rows",
    "load_sft_data",
    "read_file",
    "use_chat_template",
]


@dataclass
class SFTData:
    """Rendered examples (``prompt``, ``completion``, ``focus``) and their ``datasets``."""

    train_examples: list[dict[str, Any]]
    eval_examples: list[dict[str, Any]]
    format: str
    conversational: bool
    label_names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def train_dataset(self) -> Any:
        """A ``datasets.Dataset`` with the ``prompt`` and ``completion`` columns TRL reads."""
        return _to_dataset(self.train_examples)

    def eval_dataset(self) -> Any:
        """The eval rows as a ``datasets.Dataset``, or None when the run has none."""
        return _to_dataset(self.eval_examples) if self.eval_examples else None

    def describe(self) -> str:
        """One line for the run's log: row counts, format and prompt kind."""
        kind = "conversational" if self.conversational else "plain-text"
        return (
            f"{len(self.train_examples)} train / {len(self.eval_examples)} eval rows, "
            f"format {self.format}, {kind} prompt/completion"
        )


def _to_dataset(examples: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": e["prompt"], "completion": e["completion"]} for e in examples]
    )


# ---------------------------------------------------------------------- reading
def read_file(path: str | Path, labels_file: str | Path | None = None) -> tuple[list, list | None]:
    """``(rows, label_names)`` of a local .tsv / .jsonl / .json / .csv / .parquet file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return _read_goemotions_tsv(path, labels_file)
    names = _read_labels(Path(labels_file)) if labels_file else None
    if suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as fh:
            for no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ConfigError(f"{path}:{no}: not a JSON object ({err.msg})") from None
                if not isinstance(row, dict):
                    raise ConfigError(f"{path}:{no}: each line must be a JSON object (a row)")
                rows.append(row)
        return rows, names
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ConfigError(f"{path}: a .json data file must hold a list of row objects")
        return data, names
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh)), names
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist(), names
    raise ConfigError(f"{path}: unsupported file type {suffix!r}")


def _read_labels(path: Path) -> list[str]:
    if not path.is_file():
        raise ConfigError(f"label names file {path} does not exist")
    names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not names:
        raise ConfigError(f"label names file {path} is empty")
    return names


def _read_goemotions_tsv(path: Path, labels_file: Any) -> tuple[list, list[str]]:
    names = _read_labels(Path(labels_file) if labels_file else path.parent / "labels.txt")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for no, line in enumerate(fh, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise ConfigError(
                    f"{path}:{no}: expected text<TAB>label ids[<TAB>id], got {len(parts)} column"
                )
            row = {"text": parts[0], "labels": parts[1]}
            if len(parts) > 2:
                row["id"] = parts[2]
            rows.append(row)
    return rows, names


def _read_hub(cfg: DataConfig, split: str) -> tuple[Any, list[str] | None]:
    from datasets import load_dataset

    try:
        ds = load_dataset(cfg.name, cfg.config_name, split=split, revision=cfg.revision)
    except Exception as err:  # noqa: BLE001 - many error types; the message is what matters
        raise ConfigError(
            f"data.name={cfg.name!r} split {split!r} could not be loaded "
            f"({type(err).__name__}: {err})"
        ) from None
    names = _read_labels(Path(cfg.labels_file)) if cfg.labels_file else _class_names(ds)
    return ds, names


def _class_names(ds: Any) -> list[str] | None:
    features = getattr(ds, "features", None) or {}
    for key in ("labels", "label"):
        feat = features.get(key) if hasattr(features, "get") else None
        names = getattr(getattr(feat, "feature", feat), "names", None)
        if names:
            return list(names)
    return None


def _take(rows: Any, idx: Sequence[int]) -> list[dict[str, Any]]:
    if hasattr(rows, "select") and hasattr(rows, "to_list"):  # a datasets.Dataset
        return rows.select(list(idx)).to_list()
    return [dict(rows[i]) for i in idx]


def _order(n: int, cfg: DataConfig, salt: int = 0) -> list[int]:
    idx = list(range(n))
    if cfg.shuffle:
        random.Random(cfg.seed + salt).shuffle(idx)
    return idx


# ---------------------------------------------------------------------- the pipeline
def use_chat_template(cfg: DataConfig, tokenizer: Any) -> bool:
    """Whether rows become conversations (``data.use_chat_template``, auto = has one)."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if cfg.use_chat_template == "auto":
        return has
    if cfg.use_chat_template and not has:
        raise ConfigError(
            "data.use_chat_template is true but the tokenizer has no chat template; set "
            "model.chat_template (a .jinja file or the template text) or use_chat_template: false"
        )
    return bool(cfg.use_chat_template)


def load_sft_data(cfg: DataConfig, *, conversational: bool) -> SFTData:
    """Read the source(s), pick train/eval rows (seeded), render them as examples."""
    if cfg.name:
        source, names = _read_hub(cfg, cfg.split)
        where = f"{cfg.name}[{cfg.split}]"
    else:
        source, names = read_file(cfg.path, cfg.labels_file)
        where = str(cfg.path)
    if len(source) == 0:
        raise ConfigError(f"data: {where} has no rows")
    eval_source = None
    if cfg.eval_split:
        eval_source, eval_names = _read_hub(cfg, cfg.eval_split)
        names = names or eval_names
    elif cfg.eval_path:
        eval_source, eval_names = read_file(cfg.eval_path, cfg.labels_file)
        names = names or eval_names
    order = _order(len(source), cfg)
    if eval_source is not None:
        eval_order = _order(len(eval_source), cfg, salt=1)
        eval_idx = (
            eval_order if cfg.eval_size is None else eval_order[: _count(cfg, len(eval_source))]
        )
        eval_rows = _take(eval_source, eval_idx)
        train_idx = order
    else:
        k = _count(cfg, len(source)) if cfg.eval_size is not None else 0
        if k >= len(source):
            raise ConfigError(
                f"data.eval_size={cfg.eval_size} holds out {k} of the {len(source)} rows of "
                f"{where}, leaving none to train on; lower it"
            )
        eval_rows = _take(source, order[:k])
        train_idx = order[k:]
    if cfg.max_train_rows is not None:
        train_idx = train_idx[: cfg.max_train_rows]
    train_rows = _take(source, train_idx)
    fmt = cfg.format
    if fmt == "auto":
        first = _renamed(train_rows[0], cfg.columns, where)
        fmt = detect_format(first, where)
    label_names = names
    train_ex = format_rows(train_rows, fmt, cfg, label_names, conversational, where)
    eval_ex = (
        format_rows(eval_rows, fmt, cfg, label_names, conversational, where) if eval_rows else []
    )
    return SFTData(
        train_ex,
        eval_ex,
        fmt,
        conversational,
        label_names,
        info={"source": where, "source_rows": len(source)},
    )


def _count(cfg: DataConfig, n: int) -> int:
    e = cfg.eval_size
    if isinstance(e, float):
        return max(1, round(e * n))
    return min(int(e), n) if cfg.eval_split or cfg.eval_path else int(e)


def detect_format(row: Mapping[str, Any], where: str = "the data") -> str:
    """The row format from the columns of one row (see the module docstring)."""
    keys = set(row)
    if "messages" in keys or "conversations" in keys:
        return "messages"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion"
    if "instruction" in keys and keys & {"response", "output"}:
        return "dolly"
    if "text" in keys and keys & {"labels", "label"}:
        return "goemotions"
    raise ConfigError(
        f"data: cannot tell the row format of {where} from its columns {sorted(keys)}; set "
        "data.format (goemotions, dolly, prompt_completion, messages), and data.columns to "
        "rename columns, e.g. columns: {prompt: question, completion: answer}"
    )


def _renamed(row: Mapping[str, Any], columns: Mapping[str, str] | None, where: str) -> dict:
    if not columns:
        return dict(row)
    out = dict(row)
    for expected, actual in columns.items():
        if actual not in row:
            raise ConfigError(
                f"data.columns maps {expected!r} to {actual!r}, but {where} has no column "
                f"{actual!r} (columns: {sorted(row)})"
            )
        out[expected] = row[actual]
    return out


def format_rows(
    rows: Sequence[Mapping[str, Any]],
    fmt: str,
    cfg: DataConfig,
    label_names: Sequence[str] | None,
    conversational: bool,
    where: str = "the data",
) -> list[dict[str, Any]]:
    """Rows -> ``{"prompt", "completion", "focus"}`` examples (see the module docstring)."""
    rows = [_renamed(r, cfg.columns, where) for r in rows]
    labels_text = ""
    if fmt == "goemotions":
        names = list(label_names) if label_names else _names_seen(rows, where)
        labels_text = ", ".join(names)
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(_example(row, fmt, cfg, label_names, labels_text, conversational))
        except (KeyError, TypeError, ValueError, IndexError) as err:
            msg = err.args[0] if err.args and isinstance(err.args[0], str) else repr(err)
            raise ConfigError(f"data: row {i} of {where} ({fmt} format): {msg}") from None
    return out


def _names_seen(rows: Sequence[Mapping[str, Any]], where: str) -> list[str]:
    seen: set[str] = set()
    for row in rows:
        for x in _label_items(row.get("labels", row.get("label"))):
            if isinstance(x, int) or (isinstance(x, str) and x.strip().isdigit()):
                raise ConfigError(
                    f"data: {where} gives label ids but no label names; set data.labels_file "
                    "(one name a line, line i = id i)"
                )
            seen.add(str(x).strip())
    return sorted(seen)


def _label_items(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [x.strip() for x in value.split(",") if x.strip()]
    return [value]


def _label_name(x: Any, names: Sequence[str] | None) -> str:
    if isinstance(x, str) and x.strip().isdigit() and names is not None:
        x = int(x)
    if isinstance(x, int) and not isinstance(x, bool):
        if names is None:
            raise ValueError(f"label id {x} but no label names (set data.labels_file)")
        if not 0 <= x < len(names):
            raise ValueError(f"label id {x} is outside the {len(names)} label names")
        return str(names[x])
    return str(x).strip()


def _fill(template: str, key: str, **values: str) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError) as err:
        raise ValueError(
            f"data.{key} uses {{{err.args[0]}}}, which is not one of "
            f"{', '.join('{' + k + '}' for k in values)} (write {{{{ and }}}} for braces)"
        ) from None


def _example(
    row: Mapping[str, Any],
    fmt: str,
    cfg: DataConfig,
    label_names: Sequence[str] | None,
    labels_text: str,
    conversational: bool,
) -> dict[str, Any]:
    if fmt == "messages":
        msgs = chat_messages(row.get("messages", row.get("conversations")))
        if not msgs or msgs[-1]["role"] != "assistant":
            raise ValueError("a chat row must end with an assistant turn (the response)")
        if not conversational:
            raise ValueError(
                "chat rows need a chat template; the tokenizer has none (set model.chat_template)"
            )
        prompt = msgs[:-1]
        if cfg.system_prompt and (not prompt or prompt[0]["role"] != "system"):
            prompt = [{"role": "system", "content": cfg.system_prompt}, *prompt]
        focus = [m["content"] for m in prompt if m["role"] == "user"]
        return {"prompt": prompt, "completion": [msgs[-1]], "focus": focus}
    if fmt == "prompt_completion":
        prompt, completion = row["prompt"], row["completion"]
        if not isinstance(completion, str):
            completion = chat_messages(completion)[-1]["content"]
        if not isinstance(prompt, str):
            msgs = chat_messages(prompt)
            if not conversational:
                raise ValueError("message-list prompts need a chat template (model.chat_template)")
            if cfg.system_prompt and msgs[0]["role"] != "system":
                msgs = [{"role": "system", "content": cfg.system_prompt}, *msgs]
            focus = [m["content"] for m in msgs if m["role"] == "user"]
            asst = [{"role": "assistant", "content": completion}]
            return {"prompt": msgs, "completion": asst, "focus": focus}
        return _wrap(prompt, completion, [prompt], cfg, conversational)
    if fmt == "dolly":
        instruction = str(row["instruction"] or "")
        context = str(row.get("context") or row.get("input") or "")
        response = row.get("response", row.get("output"))
        if response is None:
            raise ValueError("no response / output")
        user = (
            _fill(
                cfg.context_template, "context_template", instruction=instruction, context=context
            )
            if context.strip()
            else instruction
        )
        focus = [instruction] + ([context] if context.strip() else [])
        return _wrap(user, str(response), focus, cfg, conversational)
    if fmt == "goemotions":
        text = str(row["text"])
        items = _label_items(row.get("labels", row.get("label")))
        if not items:
            raise ValueError("the row has no label")
        named = [_label_name(x, label_names) for x in items]
        response = named[0] if cfg.label_mode == "first" else cfg.label_separator.join(named)
        user = _fill(cfg.instruction, "instruction", text=text, labels=labels_text)
        return _wrap(user, response, [text], cfg, conversational)
    raise ValueError(f"unknown format {fmt!r}")


def _wrap(
    user: str, response: str, focus: list[str], cfg: DataConfig, conversational: bool
) -> dict[str, Any]:
    if conversational:
        prompt = [{"role": "user", "content": user}]
        if cfg.system_prompt:
            prompt.insert(0, {"role": "system", "content": cfg.system_prompt})
        return {
            "prompt": prompt,
            "completion": [{"role": "assistant", "content": response}],
            "focus": focus,
        }
    text = _fill(cfg.plain_template, "plain_template", user=user)
    if cfg.system_prompt:
        text = f"{cfg.system_prompt}\n\n{text}"
    return {"prompt": text, "completion": response, "focus": focus}
