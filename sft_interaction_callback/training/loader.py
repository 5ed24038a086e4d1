"""Reading config files: YAML with ``extends:``, ``${VAR}`` values, relative paths, ``--set``.

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
to the current directory. The merged data, with the file that set each key, goes to
:func:`~.validate.validate`; errors name the key, the file that set it, and the fix.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from sft_interaction_callback.training.schema import (
    ConfigError,
    TrainConfig,
    Unresolved,
    copy_value,
    looks_like_template,
)
from sft_interaction_callback.training.validate import validate

__all__ = ["compose_paths", "default_configs_dir", "load_config", "parse_value"]


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
    return Unresolved(value, missing[0], source) if missing else out


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


def _resolve_path(value: Any, rule: str, base: Path) -> Any:
    if not isinstance(value, str) or not value:
        return value
    if rule == "template" and looks_like_template(value):
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
        dst[key] = copy_value(value)
        for k, v in src_origins.items():
            if k == dotted or k.startswith(dotted + "."):
                dst_origins[k] = v


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
    return validate(raw, origins, sources, check_paths)
