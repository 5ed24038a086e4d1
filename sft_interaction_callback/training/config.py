"""The training config: YAML files with ``extends:``, ``--set`` overrides, typed validation.

A config has six sections::

    extends: [../base.yaml, ../models/qwen2.5-7b.yaml]   # optional, merged first, in order
    name: qwen2.5-7b_goemotions      # run name; training.output_dir may use {name}
    model:        {name, family, dtype, trust_remote_code, revision, tokenizer, ...}
    lora:         {r, alpha, dropout, target_modules, ...}   # or null: full fine-tuning
    data:         {name | path, split, eval_split | eval_path, format, ...}
    training:     any field of trl.SFTConfig / transformers.TrainingArguments
    interactions: any field of InteractionConfig, plus probes_from (eval | train); or null

Merging: mappings merge key by key; anything else (lists, scalars, ``null``) replaces.
Strings may use ``${VAR}`` / ``${VAR:-default}`` (environment variables). Relative input
paths (``data.path``, ``data.eval_path``, ``data.labels_file``, a ``model.chat_template``
file, and ``model.name`` / ``model.tokenizer`` / ``interactions.reference_model`` when they
start with ``./`` or ``../``) are relative to the file that sets them; on the command line,
to the current directory. Errors name the key, the file that set it, and the fix.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "DataConfig",
    "LoraSettings",
    "ModelConfig",
    "TrainConfig",
    "compose_paths",
    "default_configs_dir",
    "load_config",
    "parse_value",
]

DTYPES = {"auto": "auto", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16"}
DTYPES.update({"fp16": "float16", "float32": "float32", "fp32": "float32"})
FORMATS = ("auto", "goemotions", "dolly", "prompt_completion", "messages")
FILE_SUFFIXES = (".tsv", ".jsonl", ".json", ".csv", ".parquet")
TOP_LEVEL = ("extends", "name", "description", "model", "lora", "data", "training", "interactions")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key, its file and the fix."""


# ---------------------------------------------------------------------- YAML reading
class _Loader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-4`` as a float (YAML 1.1 needs ``1.0e-4``)."""


_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so templates print the way they are written."""


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_presenter)


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML (``3``, ``1e-4``, ``null``, ``[a, b]``, ``{r: 8}``)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError:
        return text


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping (model:, data:, ...), "
            f"not a {type(data).__name__}"
        )
    return data


# ---------------------------------------------------------------------- env and paths
@dataclass(frozen=True)
class _Unresolved:
    """A string whose ``${VAR}`` is unset; an error only if it survives the merge."""

    text: str
    var: str
    source: str


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any, source: str) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, source) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        var, default = m.group(1), m.group(2)
        got = os.environ.get(var)
        if got is None or got == "":
            if default is None:
                missing.append(var)
                return m.group(0)
            return default
        return got

    out = _ENV_RE.sub(sub, value)
    return _Unresolved(value, missing[0], source) if missing else out


#: (section, key) -> "always" (any relative path) or "dotted" (only ./ ../ ~ prefixes)
_PATH_KEYS = {
    ("data", "path"): "always",
    ("data", "eval_path"): "always",
    ("data", "labels_file"): "always",
    ("model", "chat_template"): "template",
    ("model", "name"): "dotted",
    ("model", "tokenizer"): "dotted",
    ("interactions", "reference_model"): "dotted",
    ("interactions", "reference_tokenizer"): "dotted",
}


def _looks_like_template(text: str) -> bool:
    return "{%" in text or "{{" in text or "\n" in text


def _resolve_path(value: Any, rule: str, base: Path) -> Any:
    if not isinstance(value, str) or not value:
        return value
    if rule == "template" and _looks_like_template(value):
        return value
    if value.startswith("~"):
        return str(Path(value).expanduser())
    if os.path.isabs(value):
        return value
    if rule == "dotted" and not value.startswith(("./", "../", ".\\", "..\\")):
        return value  # a hub id such as "Qwen/Qwen2.5-7B-Instruct"
    return str((base / value).resolve())


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    for (section, key), rule in _PATH_KEYS.items():
        sec = data.get(section)
        if isinstance(sec, dict) and key in sec:
            sec[key] = _resolve_path(sec[key], rule, base)


# ---------------------------------------------------------------------- merging
def _own_origins(data: Mapping, source: str, prefix: str = "") -> dict[str, str]:
    """``{dotted key: source}`` for every key (sections and leaves) of ``data``."""
    out: dict[str, str] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        out[dotted] = source
        if isinstance(value, Mapping):
            out.update(_own_origins(value, source, dotted))
    return out


def _merge(
    dst: dict,
    dst_origins: dict[str, str],
    src: Mapping,
    src_origins: Mapping[str, str],
    prefix: str = "",
) -> None:
    """Merge ``src`` into ``dst`` in place (mappings key by key, anything else replaces)."""
    for key, value in src.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and isinstance(dst.get(key), dict):
            if dotted in src_origins:
                dst_origins.setdefault(dotted, src_origins[dotted])
            _merge(dst[key], dst_origins, value, src_origins, dotted)
            continue
        for k in [k for k in dst_origins if k == dotted or k.startswith(dotted + ".")]:
            del dst_origins[k]
        dst[key] = _copy(value)
        for k, v in src_origins.items():
            if k == dotted or k.startswith(dotted + "."):
                dst_origins[k] = v


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _load_file(
    path: Path, stack: tuple[Path, ...] = (), loaded: list[str] | None = None
) -> tuple[dict[str, Any], dict]:
    """``(data, origins)``: the file merged over its ``extends`` parents, in order."""
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"config files extend each other in a cycle: {chain}")
    data = _read_yaml(path)
    source = _display(path)
    parents = data.pop("extends", None)
    if parents is None:
        parents = []
    elif isinstance(parents, str):
        parents = [parents]
    elif not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(
            f"{source}: extends must be a file name or a list of file names, got {parents!r}"
        )
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for parent in parents:
        parent_path = Path(os.path.expanduser(parent))
        if not parent_path.is_absolute():
            parent_path = path.parent / parent_path
        if not parent_path.exists():
            raise ConfigError(f"{source}: extends {parent!r}, but {parent_path} does not exist")
        _merge(merged, origins, *_load_file(parent_path, (*stack, path), loaded))
    if loaded is not None:
        loaded.append(source)
    data = _expand_env(data, source)
    _resolve_paths(data, path.parent)
    _merge(merged, origins, data, _own_origins(data, source))
    return merged, origins


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _apply_set(raw: dict[str, Any], origins: dict[str, str], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: use KEY=VALUE, e.g. --set training.max_steps=100")
    key, text = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"--set {item!r}: the key must be dotted names like lora.r")
    value = _expand_env(parse_value(text), "--set")
    section = parts[0]
    if len(parts) == 2 and (section, parts[1]) in _PATH_KEYS:
        value = _resolve_path(value, _PATH_KEYS[(section, parts[1])], Path.cwd())
    nested: Any = value
    for p in reversed(parts):
        nested = {p: nested}
    _merge(raw, origins, nested, _own_origins(nested, "--set"))


# ---------------------------------------------------------------------- typed sections
def _opt(default: Any, help: str, **meta: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: _copy(d), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class ModelConfig:
    name: str = _opt(MISSING, "hub id (org/name) or local folder of the model to fine-tune")
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
    r: int = _opt(8, "LoRA rank")
    alpha: int = _opt(16, "LoRA alpha (scale = alpha / r)")
    dropout: float = _opt(0.05, "dropout on the LoRA input")
    target_modules: Any = _opt(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "module names (list), a regex over full module names (string), or 'all-linear'",
    )
    bias: str = _opt("none", "none, all or lora_only")
    modules_to_save: list[str] | None = _opt(None, "extra modules trained fully and saved")
    use_rslora: bool = _opt(False, "rank-stabilised scaling alpha / sqrt(r)")


@dataclass
class DataConfig:
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
        return "hub" if self.name else "file"


#: Linear layers of a typical model per family, as full module names (layer 0 only).
_DECODER = [
    f"model.layers.0.{part}"
    for part in (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    )
]
FAMILY_MODULES: dict[str, list[str]] = {
    "llama": _DECODER + ["lm_head"],
    "mistral": _DECODER + ["lm_head"],
    "qwen2": _DECODER + ["lm_head"],
    "qwen3": _DECODER + ["lm_head"],
    "gemma": _DECODER + ["lm_head"],
    "gemma2": _DECODER + ["lm_head"],
    "gemma3_text": _DECODER + ["lm_head"],
    # Gemma 3 (4B and up) loads as Gemma3ForConditionalGeneration: text + SigLIP vision tower.
    "gemma3": [n.replace("model.", "model.language_model.", 1) for n in _DECODER]
    + [
        f"model.vision_tower.encoder.layers.0.{part}"
        for part in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
            "mlp.fc1",
            "mlp.fc2",
        )
    ]
    + ["lm_head"],
}
_FAMILY_PATTERNS = [
    ("qwen3", r"qwen-?3"),
    ("qwen2", r"qwen-?2"),
    ("gemma3", r"gemma-?3"),
    ("gemma2", r"gemma-?2"),
    ("gemma", r"gemma"),
    ("mistral", r"mistral"),
    ("llama", r"llama"),
]


def guess_family(model_name: str) -> str | None:
    low = model_name.lower()
    for fam, rx in _FAMILY_PATTERNS:
        if re.search(rx, low):
            return fam
    return None


def target_matches(target: Any, names: Sequence[str]) -> list[str]:
    """The module names that PEFT would adapt for ``target`` (list, regex or all-linear)."""
    if target == "all-linear":
        return [n for n in names if n != "lm_head"]
    if isinstance(target, str):
        return [n for n in names if re.fullmatch(target, n)]
    return [n for n in names if any(n == t or n.endswith("." + t) for t in target)]


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
            "training": _copy(self.training),
            "interactions": _copy(self.interactions),
        }

    def to_yaml(self) -> str:
        head = "# merged from: " + (", ".join(self.sources) or "(nothing)") + "\n"
        body = yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False, allow_unicode=True)
        return head + body

    @property
    def output_dir(self) -> str:
        return str(self.training["output_dir"])

    @property
    def probes_from(self) -> str:
        return (self.interactions or {}).get("probes_from", "eval")

    def sft_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``trl.SFTConfig``."""
        return _copy(self.training)

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
        src = self.origins.get(key)
        return f" (set in {src})" if src else ""

    def plan(self, world_size: int | None = None) -> str:
        """What a run would do, in a few lines (printed by ``--dry-run`` and at start)."""
        m, d, t, lo = self.model, self.data, self.training, self.lora
        rows = [("experiment", self.name)]
        if self.sources:
            rows.append(("configs", ", ".join(self.sources)))
        fam = m.family or guess_family(m.name) or "family unknown"
        trust = str(m.trust_remote_code).lower()
        rows.append(("model", f"{m.name}  [{fam}, dtype {m.dtype}, trust_remote_code {trust}]"))
        if lo is None:
            rows.append(("fine-tuning", "full (lora: null): every weight trains"))
        else:
            tm = lo.target_modules
            shown = tm if isinstance(tm, str) else ", ".join(tm)
            rows.append(
                ("fine-tuning", f"LoRA r={lo.r} alpha={lo.alpha} dropout={lo.dropout} on {shown}")
            )
        if d.name:
            sub = f" ({d.config_name})" if d.config_name else ""
            src = f"hub {d.name}{sub}, split {d.split}"
        else:
            src = f"file {d.path}"
        cap = "all rows" if d.max_train_rows is None else f"at most {d.max_train_rows} rows"
        rows.append(("data", f"{src}; train on {cap} (shuffle {d.shuffle}, seed {d.seed})"))
        eval_src = f"split {d.eval_split}" if d.eval_split else None
        if d.eval_path:
            eval_src = f"file {d.eval_path}"
        if eval_src:
            size = "all rows" if d.eval_size is None else f"at most {d.eval_size} rows"
            rows.append(("eval", f"{eval_src}, {size}"))
        elif d.eval_size:
            rows.append(("eval", f"{d.eval_size} rows held out of the training rows"))
        else:
            rows.append(("eval", "none"))
        fmt = d.format
        if fmt == "goemotions" or (fmt == "auto" and str(d.path or "").endswith(".tsv")):
            fmt += f" (response: {'first label' if d.label_mode == 'first' else 'all labels'})"
        chat = {True: "always", False: "never (plain text)"}.get(d.use_chat_template, "auto")
        rows.append(("format", f"{fmt}; chat template {chat}; loss on the completion only"))
        per = int(t.get("per_device_train_batch_size", 8))
        acc = int(t.get("gradient_accumulation_steps", 1))
        ws = world_size or int(os.environ.get("WORLD_SIZE") or 1)
        max_steps = t.get("max_steps", -1)
        length = (
            f"max_steps {max_steps}"
            if max_steps not in (None, -1)
            else (f"{t.get('num_train_epochs', 3)} epochs")
        )
        if t.get("bf16"):
            prec = "bf16"
        elif t.get("fp16"):
            prec = "fp16"
        else:
            prec = "fp32" if t.get("bf16") is False else "bf16 unless fp16 (TRL default)"
        rows.append(
            (
                "training",
                f"SFTTrainer, {length}, lr {t.get('learning_rate', 2e-5)} "
                f"{t.get('lr_scheduler_type', 'linear')}, batch {per}/device x {acc} "
                f"accumulation x {ws} process(es) = {per * acc * ws}, {prec}",
            )
        )
        ev = str(t.get("eval_strategy", "no"))
        sv = str(t.get("save_strategy", "steps"))
        ev_s = f"eval every {t.get('eval_steps')} steps" if ev == "steps" else f"eval {ev}"
        sv_s = f"save every {t.get('save_steps', 500)} steps" if sv == "steps" else f"save {sv}"
        rows.append(("", f"{ev_s}, {sv_s}, report_to {t.get('report_to', 'none')}"))
        rows.append(("output_dir", self.output_dir))
        ic = self.interactions
        if ic is None:
            rows.append(("interactions", "off (interactions: null)"))
        else:
            sched = ic.get("schedule")
            sched_s = "dense early, sparse later" if sched is None else repr(sched)
            stop = (
                f"stop after noise rises {ic.get('patience', 3)} probe points in a row"
                if ic.get("early_stopping", True)
                else "no early stop"
            )
            rows.append(
                (
                    "interactions",
                    f"{ic.get('num_probes', 8)} probes x {ic.get('n_players', 10)} players from "
                    f"the {self.probes_from} rows; schedule {sched_s}; {stop}",
                )
            )
            if ic.get("reference_model"):
                rows.append(("", f"reference model for gamma: {ic['reference_model']}"))
            sub = ic.get("output_subdir", "interactions")
            rows.append(("", f"snapshots in {os.path.join(self.output_dir, sub)}"))
        rows.extend(("note", n) for n in self.notes)
        return "\n".join(f"{k:<13} {v}".rstrip() for k, v in rows)


# ---------------------------------------------------------------------- loading
def default_configs_dir() -> Path:
    """``$SFT_INTERACTIONS_CONFIGS``, else ./configs, else the repository's configs/."""
    env = os.environ.get("SFT_INTERACTIONS_CONFIGS")
    if env:
        return Path(env)
    here = Path.cwd() / "configs"
    if (here / "base.yaml").exists():
        return here
    return Path(__file__).resolve().parents[2] / "configs"


def _named(kind: str, value: str, configs_dir: Path) -> Path:
    p = Path(value)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    candidate = configs_dir / kind / f"{value}.yaml"
    if candidate.exists():
        return candidate
    folder = configs_dir / kind
    known = sorted(x.stem for x in folder.glob("*.yaml")) if folder.is_dir() else []
    close = difflib.get_close_matches(value, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"--{kind[:-1] if kind != 'data' else 'data'} {value!r}: no {candidate}{hint}; "
        f"known: {', '.join(known) or '(none)'}"
    )


def compose_paths(
    model: str | None = None,
    data: str | None = None,
    configs: Sequence[str | os.PathLike] = (),
    configs_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Files to merge, in order: base + model + data (shorthand), then ``configs``."""
    root = Path(configs_dir) if configs_dir else default_configs_dir()
    paths: list[Path] = []
    if model or data:
        base = root / "base.yaml"
        if not base.exists():
            raise ConfigError(f"--model/--data compose {base}, which does not exist")
        paths.append(base)
        if model:
            paths.append(_named("models", model, root))
        if data:
            paths.append(_named("data", data, root))
    paths.extend(Path(c) for c in configs)
    if not paths:
        raise ConfigError("give --config FILE.yaml, or --model NAME and --data NAME")
    return paths


def load_config(
    paths: Sequence[str | os.PathLike],
    overrides: Sequence[str] = (),
    *,
    name: str | None = None,
    check_paths: bool = True,
) -> TrainConfig:
    """Merge ``paths`` (each with its ``extends``) and ``overrides``; validate; resolve.

    ``check_paths`` also checks that local files and folders exist (data files, label
    files, a local model folder, a chat template file). Nothing is downloaded.
    """
    origins: dict[str, str] = {}
    raw: dict[str, Any] = {}
    sources: list[str] = []
    for p in paths:
        _merge(raw, origins, *_load_file(Path(p), loaded=sources))
    raw.pop("extends", None)
    for item in overrides:
        _apply_set(raw, origins, item)
    if name is None and not raw.get("name") and paths:
        name = "_".join(Path(p).stem for p in paths if Path(p).stem != "base")
    if name:
        raw["name"] = name
    return _validate(raw, origins, sources, check_paths)


#: Names people write for a setting (PEFT's, transformers') -> the name here.
_ALIASES = {
    "rank": "r",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "torch_dtype": "dtype",
    "model_name": "name",
    "model_name_or_path": "name",
    "dataset_name": "name",
    "subset": "config_name",
    "lr": "learning_rate",
    "epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size",
}


def _did_you_mean(key: str, known: Sequence[str]) -> str:
    if _ALIASES.get(key) in known:
        return f" (did you mean {_ALIASES[key]!r}?)"
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _where(origins: Mapping[str, str], key: str) -> str:
    src = origins.get(key)
    if src is None:  # a section replaced as a whole records the section key
        parts = key.split(".")
        while parts and src is None:
            parts.pop()
            src = origins.get(".".join(parts))
    return f" (set in {src})" if src else ""


def _check_unresolved(value: Any, key: str) -> None:
    if isinstance(value, _Unresolved):
        raise ConfigError(
            f"{key}={value.text!r} (set in {value.source}) needs the environment variable "
            f"{value.var}, which is not set: export {value.var}=..., or override the key with "
            f"--set {key}=..."
        )
    if isinstance(value, dict):
        for k, v in value.items():
            _check_unresolved(v, f"{key}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_unresolved(v, f"{key}[{i}]")


def _section(
    cls: type, raw: Any, key: str, origins: Mapping[str, str], required: bool = True
) -> Any:
    if raw is None and not required:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{key}: expected a mapping of settings, got {raw!r}{_where(origins, key)}"
        )
    known = [f.name for f in fields(cls)]
    for k in raw:
        if k not in known:
            raise ConfigError(
                f"{key}.{k}{_where(origins, f'{key}.{k}')}: not a {key} setting"
                f"{_did_you_mean(str(k), known)}; {key} settings are: {', '.join(known)}"
            )
    missing = [
        f.name
        for f in fields(cls)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in raw
    ]
    if missing:
        raise ConfigError(f"{key}.{missing[0]} is required: {fields_help(cls)[missing[0]]}")
    return cls(**raw)


def fields_help(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in fields(cls)}


def _type_error(key: str, value: Any, want: str, origins: Mapping[str, str]) -> ConfigError:
    return ConfigError(f"{key}={value!r}{_where(origins, key)}: expected {want}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_str(obj: Any, sec: str, names: Sequence[str], origins, optional: bool) -> None:
    for n in names:
        v = getattr(obj, n)
        if v is None and optional:
            continue
        if not isinstance(v, str) or not v.strip():
            raise _type_error(f"{sec}.{n}", v, "a non-empty string", origins)


def _check_bool(obj: Any, sec: str, names: Sequence[str], origins) -> None:
    for n in names:
        v = getattr(obj, n)
        if not isinstance(v, bool):
            raise _type_error(f"{sec}.{n}", v, "true or false", origins)


def _validate_model(m: ModelConfig, origins, notes: list[str], check_paths: bool) -> None:
    _check_str(m, "model", ["name"], origins, optional=False)
    _check_str(
        m,
        "model",
        ["family", "revision", "tokenizer", "chat_template", "attn_implementation"],
        origins,
        optional=True,
    )
    _check_bool(m, "model", ["trust_remote_code"], origins)
    dtype = str(m.dtype).lower() if isinstance(m.dtype, str) else m.dtype
    if dtype not in DTYPES:
        raise _type_error(
            "model.dtype", m.dtype, "one of auto, bfloat16, float16, float32", origins
        )
    m.dtype = DTYPES[dtype]
    if m.family is not None and m.family not in FAMILY_MODULES:
        notes.append(
            f"model.family={m.family!r} is not one this package knows "
            f"({', '.join(FAMILY_MODULES)}); lora.target_modules are checked when the model loads"
        )
    if check_paths:
        for key in ("name", "tokenizer"):
            v = getattr(m, key)
            if v and _is_local(v) and not Path(v).is_dir():
                raise ConfigError(
                    f"model.{key}={v!r}{_where(origins, f'model.{key}')}: no such folder (a "
                    "local model is a folder written by save_pretrained; hub ids look like "
                    "org/name)"
                )
        ct = m.chat_template
        if ct and not _looks_like_template(ct) and not Path(ct).is_file():
            raise ConfigError(
                f"model.chat_template={ct!r}{_where(origins, 'model.chat_template')}: no such "
                "file; give a .jinja file or the template text itself"
            )


def _is_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.isabs(name)


def _validate_lora(lo: LoraSettings, m: ModelConfig, origins, notes: list[str]) -> None:
    if not _is_int(lo.r) or lo.r < 1:
        raise _type_error("lora.r", lo.r, "an integer >= 1 (8 or 16 are common)", origins)
    if not _is_num(lo.alpha) or lo.alpha <= 0:
        raise _type_error("lora.alpha", lo.alpha, "a number > 0 (often 2 * r)", origins)
    if not _is_num(lo.dropout) or not 0 <= lo.dropout < 1:
        raise _type_error("lora.dropout", lo.dropout, "a number in [0, 1)", origins)
    if lo.bias not in ("none", "all", "lora_only"):
        raise _type_error("lora.bias", lo.bias, "none, all or lora_only", origins)
    _check_bool(lo, "lora", ["use_rslora"], origins)
    t = lo.target_modules
    if isinstance(t, str):
        if t != "all-linear":
            try:
                re.compile(t)
            except re.error as err:
                raise _type_error(
                    "lora.target_modules", t, f"a valid regular expression ({err})", origins
                ) from None
    elif not (isinstance(t, list) and t and all(isinstance(x, str) and x for x in t)):
        raise _type_error(
            "lora.target_modules",
            t,
            "a list of module names (e.g. [q_proj, v_proj]), a regex string, or 'all-linear'",
            origins,
        )
    if lo.modules_to_save is not None and not (
        isinstance(lo.modules_to_save, list) and all(isinstance(x, str) for x in lo.modules_to_save)
    ):
        raise _type_error("lora.modules_to_save", lo.modules_to_save, "a list of names", origins)
    family = m.family or guess_family(m.name)
    names = FAMILY_MODULES.get(family or "")
    if names is None:
        return
    where = _where(origins, "lora.target_modules")
    if isinstance(t, list):
        for x in t:
            if not target_matches([x], names):
                avail = sorted({n.rsplit(".", 1)[-1] for n in names} - {"lm_head"})
                raise ConfigError(
                    f"lora.target_modules{where}: {x!r} is not a linear layer of a {family} "
                    f"model; its layers are {', '.join(avail)}"
                )
    elif not target_matches(t, names):
        raise ConfigError(
            f"lora.target_modules={t!r}{where} matches no linear layer of a {family} model "
            f"(e.g. {names[0]})"
        )
    hits = target_matches(t, names)
    vision = [n for n in hits if "vision" in n]
    if vision:
        notes.append(
            f"lora.target_modules also adapt the vision tower of this {family} model "
            f"({vision[0]}, ...); a regex such as '.*language_model.*\\.(q_proj|v_proj)' "
            "keeps LoRA on the language model"
        )


def _validate_data(d: DataConfig, origins, check_paths: bool) -> None:
    _check_str(
        d,
        "data",
        ["name", "config_name", "eval_split", "revision", "path", "eval_path", "labels_file"],
        origins,
        optional=True,
    )
    templates = ["split", "instruction", "context_template", "plain_template"]
    _check_str(d, "data", templates, origins, optional=False)
    _check_bool(d, "data", ["shuffle"], origins)
    if d.system_prompt is not None and not isinstance(d.system_prompt, str):
        raise _type_error("data.system_prompt", d.system_prompt, "a string or null", origins)
    if not isinstance(d.label_separator, str):
        raise _type_error("data.label_separator", d.label_separator, "a string", origins)
    if bool(d.name) == bool(d.path):
        both = "both" if d.name else "neither"
        raise ConfigError(
            f"data: {both} of data.name{_where(origins, 'data.name')} and "
            f"data.path{_where(origins, 'data.path')} set; give exactly one: a hub id "
            "(data.name) or a local file (data.path), and set the other to null"
        )
    if d.eval_split and d.eval_path:
        raise ConfigError(
            "data: eval_split and eval_path both set; the eval rows come from one of them"
        )
    if d.eval_split and not d.name:
        raise ConfigError(
            f"data.eval_split={d.eval_split!r}{_where(origins, 'data.eval_split')} needs a "
            "hub data set (data.name); with a local file use data.eval_path"
        )
    if d.format not in FORMATS:
        raise _type_error("data.format", d.format, f"one of {', '.join(FORMATS)}", origins)
    if d.label_mode not in ("first", "all"):
        raise _type_error("data.label_mode", d.label_mode, "'first' or 'all'", origins)
    if d.use_chat_template not in (True, False, "auto"):
        raise _type_error(
            "data.use_chat_template", d.use_chat_template, "true, false or auto", origins
        )
    if d.columns is not None and not (
        isinstance(d.columns, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in d.columns.items())
    ):
        raise _type_error("data.columns", d.columns, "a mapping {expected: actual}", origins)
    if d.max_train_rows is not None and (not _is_int(d.max_train_rows) or d.max_train_rows < 1):
        raise _type_error(
            "data.max_train_rows", d.max_train_rows, "an integer >= 1 or null", origins
        )
    e = d.eval_size
    if e is not None and not ((_is_int(e) and e >= 0) or (isinstance(e, float) and 0 < e < 1)):
        raise _type_error(
            "data.eval_size", e, "an integer >= 0, a fraction in (0, 1), or null", origins
        )
    if not _is_int(d.seed):
        raise _type_error("data.seed", d.seed, "an integer", origins)
    for tmpl_key, needed in (("instruction", "{text}"), ("plain_template", "{user}")):
        if needed not in getattr(d, tmpl_key):
            raise ConfigError(
                f"data.{tmpl_key}{_where(origins, f'data.{tmpl_key}')} must contain {needed}"
            )
    for key in ("path", "eval_path"):
        v = getattr(d, key)
        if v and Path(v).suffix.lower() not in FILE_SUFFIXES:
            raise ConfigError(
                f"data.{key}={v!r}{_where(origins, f'data.{key}')}: unsupported file type; use "
                f"{', '.join(FILE_SUFFIXES)}"
            )
    if not check_paths:
        return
    for key in ("path", "eval_path", "labels_file"):
        v = getattr(d, key)
        if v and not Path(v).is_file():
            raise ConfigError(f"data.{key}={v!r}{_where(origins, f'data.{key}')}: no such file")
    tsv = d.path and Path(d.path).suffix.lower() == ".tsv"
    if tsv and d.format in ("auto", "goemotions") and not d.labels_file:
        labels = Path(d.path).parent / "labels.txt"
        if not labels.is_file():
            raise ConfigError(
                f"data.path={d.path!r}: a GoEmotions TSV needs its label names; no {labels}. "
                "Set data.labels_file to a file with one label name a line"
            )


def _sft_fields() -> dict[str, Any]:
    try:
        from trl import SFTConfig
    except ImportError as err:  # pragma: no cover - trl is a declared extra
        raise ConfigError(
            f"training: needs TRL ({err}); pip install 'sft_interaction_callback[trl]'"
        ) from None
    return {f.name: f for f in fields(SFTConfig)}


def _has_eval(d: DataConfig) -> bool:
    """Whether the run will have eval rows (an eval source, or rows held out)."""
    if d.eval_split or d.eval_path:
        return d.eval_size != 0
    return bool(d.eval_size)


def _validate_training(t: Any, name: str, origins, data: DataConfig) -> dict[str, Any]:
    if t is None:
        t = {}
    if not isinstance(t, dict):
        raise ConfigError(f"training: expected a mapping of SFTConfig fields, got {t!r}")
    known = _sft_fields()
    out = dict(t)
    for k, v in t.items():
        if k not in known:
            raise ConfigError(
                f"training.{k}{_where(origins, f'training.{k}')}: not a field of trl.SFTConfig "
                f"/ TrainingArguments{_did_you_mean(str(k), list(known))}"
            )
        want = known[k].type
        ok = {
            int: _is_int(v),
            float: _is_num(v),
            bool: isinstance(v, bool),
            str: isinstance(v, str),
        }.get(want, True)
        if not ok:
            label = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
            raise _type_error(f"training.{k}", v, label[want], origins)
    out.setdefault("output_dir", "runs/{name}")
    for key in ("output_dir", "run_name", "logging_dir"):
        if isinstance(out.get(key), str):
            out[key] = out[key].replace("{name}", name)
    if not isinstance(out["output_dir"], str) or not out["output_dir"]:
        raise _type_error("training.output_dir", out["output_dir"], "a folder name", origins)
    out.setdefault("run_name", name)
    has_eval = _has_eval(data)
    if str(out.get("eval_strategy", "no")) != "no" and not has_eval:
        raise ConfigError(
            f"training.eval_strategy={out['eval_strategy']!r}"
            f"{_where(origins, 'training.eval_strategy')} needs eval rows, but there are "
            "none (data.eval_size is 0 or null without data.eval_split / data.eval_path); "
            "give eval rows, or eval_strategy: 'no'"
        )
    return out


def _validate_interactions(ic: Any, origins, data: DataConfig) -> dict[str, Any] | None:
    if ic is None:
        return None
    if not isinstance(ic, dict):
        raise ConfigError(f"interactions: expected a mapping or null, got {ic!r}")
    out = dict(ic)
    probes_from = out.setdefault("probes_from", "eval")
    if probes_from not in ("eval", "train"):
        raise _type_error("interactions.probes_from", probes_from, "'eval' or 'train'", origins)
    has_eval = _has_eval(data)
    if probes_from == "eval" and not has_eval:
        raise ConfigError(
            "interactions.probes_from='eval' but there are no eval rows (data.eval_size is 0, "
            "or null without eval_split / eval_path); give eval rows or set "
            "interactions.probes_from: train"
        )
    from sft_interaction_callback.config import InteractionConfig

    kwargs = {k: v for k, v in out.items() if k != "probes_from"}
    try:
        InteractionConfig.from_kwargs(**kwargs)
    except (TypeError, ValueError) as err:
        bad = sorted((k for k in kwargs if k in str(err)), key=len, reverse=True)
        where = _where(origins, f"interactions.{bad[0]}") if bad else ""
        raise ConfigError(f"interactions{where}: {err}") from None
    return out


def _validate(
    raw: dict[str, Any], origins: dict[str, str], sources: list[str], check_paths: bool
) -> TrainConfig:
    for k in raw:
        if k not in TOP_LEVEL:
            raise ConfigError(
                f"{k}{_where(origins, k)}: not a config section{_did_you_mean(str(k), TOP_LEVEL)}"
                f"; sections are {', '.join(TOP_LEVEL[1:])}"
            )
    for k, v in raw.items():
        _check_unresolved(v, k)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("name: give the run a name (name: my-run), used for output_dir")
    if not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
        raise ConfigError(f"name={name!r}: use letters, digits and . _ + - only (a folder name)")
    notes: list[str] = []
    model = _section(ModelConfig, raw.get("model"), "model", origins)
    _validate_model(model, origins, notes, check_paths)
    lora = _section(LoraSettings, raw.get("lora", {}), "lora", origins, required=False)
    if lora is not None:
        _validate_lora(lora, model, origins, notes)
    data = _section(DataConfig, raw.get("data"), "data", origins)
    _validate_data(data, origins, check_paths)
    training = _validate_training(raw.get("training"), name, origins, data)
    interactions = _validate_interactions(raw.get("interactions", {}), origins, data)
    desc = raw.get("description")
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    return TrainConfig(
        name=name,
        model=model,
        lora=lora,
        data=data,
        training=training,
        interactions=interactions,
        description=desc if isinstance(desc, str) else None,
        sources=sources,
        origins=dict(origins),
        notes=notes,
    )
