"""Small checks behind config validation: where a key was set, did-you-mean, type tests.

Every config error names the key, the file that set it and the fix; these helpers build
those messages, so :mod:`.validate` reads as the list of rules.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields
from typing import Any

from sft_interaction_callback.training.schema import ConfigError, Unresolved, fields_help

__all__ = [
    "check_bool",
    "check_str",
    "check_unresolved",
    "did_you_mean",
    "is_int",
    "is_num",
    "section",
    "type_error",
    "where",
]

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


def did_you_mean(key: str, known: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for a misspelt or foreign (PEFT, transformers) key name."""
    if _ALIASES.get(key) in known:
        return f" (did you mean {_ALIASES[key]!r}?)"
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def where(origins: Mapping[str, str], key: str) -> str:
    """`` (set in FILE)`` for ``key`` (or the section that set it), so errors point at a file."""
    src = origins.get(key)
    if src is None:  # a section replaced as a whole records the section key
        parts = key.split(".")
        while parts and src is None:
            parts.pop()
            src = origins.get(".".join(parts))
    return f" (set in {src})" if src else ""


def check_unresolved(value: Any, key: str) -> None:
    """Refuse a ``${VAR}`` that is still unset after every file and ``--set`` merged."""
    if isinstance(value, Unresolved):
        raise ConfigError(
            f"{key}={value.text!r} (set in {value.source}) needs the environment variable "
            f"{value.var}, which is not set: export {value.var}=..., or override the key with "
            f"--set {key}=..."
        )
    if isinstance(value, dict):
        for k, v in value.items():
            check_unresolved(v, f"{key}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_unresolved(v, f"{key}[{i}]")


def section(
    cls: type, raw: Any, key: str, origins: Mapping[str, str], required: bool = True
) -> Any:
    """The ``cls`` section from its raw mapping: unknown keys and missing required keys refused."""
    if raw is None and not required:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{key}: expected a mapping of settings, got {raw!r}{where(origins, key)}"
        )
    known = [f.name for f in fields(cls)]
    for k in raw:
        if k not in known:
            raise ConfigError(
                f"{key}.{k}{where(origins, f'{key}.{k}')}: not a {key} setting"
                f"{did_you_mean(str(k), known)}; {key} settings are: {', '.join(known)}"
            )
    missing = [
        f.name
        for f in fields(cls)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in raw
    ]
    if missing:
        raise ConfigError(f"{key}.{missing[0]} is required: {fields_help(cls)[missing[0]]}")
    return cls(**raw)


def type_error(key: str, value: Any, want: str, origins: Mapping[str, str]) -> ConfigError:
    """The error for a value of the wrong type: key, value, file, what is expected."""
    return ConfigError(f"{key}={value!r}{where(origins, key)}: expected {want}")


def is_int(x: Any) -> bool:
    """An int that is not a bool (YAML ``true`` must not pass as 1)."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_num(x: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_str(
    obj: Any, sec: str, names: Sequence[str], origins: Mapping[str, str], optional: bool
) -> None:
    """Each of ``names`` on ``obj`` is a non-empty string (or None when ``optional``)."""
    for n in names:
        v = getattr(obj, n)
        if v is None and optional:
            continue
        if not isinstance(v, str) or not v.strip():
            raise type_error(f"{sec}.{n}", v, "a non-empty string", origins)


def check_bool(obj: Any, sec: str, names: Sequence[str], origins: Mapping[str, str]) -> None:
    """Each of ``names`` on ``obj`` is true or false (not "yes", not 1)."""
    for n in names:
        v = getattr(obj, n)
        if not isinstance(v, bool):
            raise type_error(f"{sec}.{n}", v, "true or false", origins)
