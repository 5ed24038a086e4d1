"""Validating a merged config: every key known, every value typed, every file present.

:func:`validate` turns the merged raw mapping (and the file that set each key) into a
:class:`~.schema.TrainConfig`, or raises :class:`~.schema.ConfigError` naming the key,
the file that set it and the fix. Checks that would need the model (do the LoRA targets
exist?) use the family table of :mod:`.lora_targets`, so nothing is downloaded.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from sft_interaction_callback.training.checks import (
    check_bool,
    check_str,
    check_unresolved,
    did_you_mean,
    is_int,
    is_num,
    section,
    type_error,
    where,
)
from sft_interaction_callback.training.lora_targets import (
    FAMILY_MODULES,
    default_target_modules,
    guess_family,
    target_matches,
)
from sft_interaction_callback.training.model_source import (
    PACKAGE_PREFIX,
    gguf_problem,
    resolve_package,
)
from sft_interaction_callback.training.schema import (
    DTYPES,
    FILE_SUFFIXES,
    FORMATS,
    TOP_LEVEL,
    ConfigError,
    DataConfig,
    LoraSettings,
    ModelConfig,
    TrainConfig,
    looks_like_template,
)

__all__ = ["validate"]


def _validate_model(
    m: ModelConfig, origins: Mapping[str, str], notes: list[str], check_paths: bool
) -> None:
    check_str(m, "model", ["name"], origins, optional=False)
    check_str(
        m,
        "model",
        ["family", "revision", "tokenizer", "chat_template", "attn_implementation", "gguf_file"],
        origins,
        optional=True,
    )
    check_bool(m, "model", ["trust_remote_code"], origins)
    dtype = str(m.dtype).lower() if isinstance(m.dtype, str) else m.dtype
    if dtype not in DTYPES:
        raise type_error("model.dtype", m.dtype, "one of auto, bfloat16, float16, float32", origins)
    m.dtype = DTYPES[dtype]
    if m.family is not None and m.family not in FAMILY_MODULES:
        notes.append(
            f"model.family={m.family!r} is not one this package knows "
            f"({', '.join(FAMILY_MODULES)}); lora.target_modules are checked when the model loads"
        )
    for key in ("name", "tokenizer"):
        v = getattr(m, key)
        folder, problem = resolve_package(v) if v else (v, None)
        if problem and check_paths:
            raise ConfigError(f"model.{key}={v!r}{where(origins, f'model.{key}')}: {problem}")
        setattr(m, key, folder)
    if check_paths and m.gguf_file and not m.name.startswith(PACKAGE_PREFIX):
        problem = gguf_problem(m.name, m.gguf_file)
        if problem:
            raise ConfigError(f"model.gguf_file{where(origins, 'model.gguf_file')}: {problem}")
    if check_paths:
        for key in ("name", "tokenizer"):
            v = getattr(m, key)
            if v and _is_local(v) and not Path(v).is_dir():
                raise ConfigError(
                    f"model.{key}={v!r}{where(origins, f'model.{key}')}: no such folder (a "
                    "local model is a folder written by save_pretrained; hub ids look like "
                    "org/name)"
                )
        ct = m.chat_template
        if ct and not looks_like_template(ct) and not Path(ct).is_file():
            raise ConfigError(
                f"model.chat_template={ct!r}{where(origins, 'model.chat_template')}: no such "
                "file; give a .jinja file or the template text itself"
            )


def _is_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.isabs(name)


def _validate_lora(
    lo: LoraSettings, m: ModelConfig, origins: Mapping[str, str], notes: list[str]
) -> None:
    if not is_int(lo.r) or lo.r < 1:
        raise type_error("lora.r", lo.r, "an integer >= 1 (8 or 16 are common)", origins)
    if not is_num(lo.alpha) or lo.alpha <= 0:
        raise type_error("lora.alpha", lo.alpha, "a number > 0 (often 2 * r)", origins)
    if not is_num(lo.dropout) or not 0 <= lo.dropout < 1:
        raise type_error("lora.dropout", lo.dropout, "a number in [0, 1)", origins)
    if lo.bias not in ("none", "all", "lora_only"):
        raise type_error("lora.bias", lo.bias, "none, all or lora_only", origins)
    check_bool(lo, "lora", ["use_rslora"], origins)
    family = m.family or guess_family(m.name)
    if lo.target_modules is None:
        lo.target_modules = default_target_modules(family)
    t = lo.target_modules
    if isinstance(t, str):
        if t != "all-linear":
            try:
                re.compile(t)
            except re.error as err:
                raise type_error(
                    "lora.target_modules", t, f"a valid regular expression ({err})", origins
                ) from None
    elif not (isinstance(t, list) and t and all(isinstance(x, str) and x for x in t)):
        raise type_error(
            "lora.target_modules",
            t,
            "a list of module names (e.g. [q_proj, v_proj]), a regex string, or 'all-linear'",
            origins,
        )
    if lo.modules_to_save is not None and not (
        isinstance(lo.modules_to_save, list) and all(isinstance(x, str) for x in lo.modules_to_save)
    ):
        raise type_error("lora.modules_to_save", lo.modules_to_save, "a list of names", origins)
    names = FAMILY_MODULES.get(family or "")
    if names is None:
        return
    at = where(origins, "lora.target_modules")
    if isinstance(t, list):
        for x in t:
            if not target_matches([x], names):
                avail = sorted({n.rsplit(".", 1)[-1] for n in names} - {"lm_head"})
                raise ConfigError(
                    f"lora.target_modules{at}: {x!r} is not a linear layer of a {family} "
                    f"model; its layers are {', '.join(avail)}"
                )
    elif not target_matches(t, names):
        raise ConfigError(
            f"lora.target_modules={t!r}{at} matches no linear layer of a {family} model "
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


def _validate_data(d: DataConfig, origins: Mapping[str, str], check_paths: bool) -> None:
    check_str(
        d,
        "data",
        ["name", "config_name", "eval_split", "revision", "path", "eval_path", "labels_file"],
        origins,
        optional=True,
    )
    templates = ["split", "instruction", "context_template", "plain_template"]
    check_str(d, "data", templates, origins, optional=False)
    check_bool(d, "data", ["shuffle"], origins)
    if d.system_prompt is not None and not isinstance(d.system_prompt, str):
        raise type_error("data.system_prompt", d.system_prompt, "a string or null", origins)
    if not isinstance(d.label_separator, str):
        raise type_error("data.label_separator", d.label_separator, "a string", origins)
    if bool(d.name) == bool(d.path):
        both = "both" if d.name else "neither"
        raise ConfigError(
            f"data: {both} of data.name{where(origins, 'data.name')} and "
            f"data.path{where(origins, 'data.path')} set; give exactly one: a hub id "
            "(data.name) or a local file (data.path), and set the other to null"
        )
    if d.eval_split and d.eval_path:
        raise ConfigError(
            "data: eval_split and eval_path both set; the eval rows come from one of them"
        )
    if d.eval_split and not d.name:
        raise ConfigError(
            f"data.eval_split={d.eval_split!r}{where(origins, 'data.eval_split')} needs a "
            "hub data set (data.name); with a local file use data.eval_path"
        )
    if d.format not in FORMATS:
        raise type_error("data.format", d.format, f"one of {', '.join(FORMATS)}", origins)
    if d.label_mode not in ("first", "all"):
        raise type_error("data.label_mode", d.label_mode, "'first' or 'all'", origins)
    if d.use_chat_template not in (True, False, "auto"):
        raise type_error(
            "data.use_chat_template", d.use_chat_template, "true, false or auto", origins
        )
    if d.columns is not None and not (
        isinstance(d.columns, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in d.columns.items())
    ):
        raise type_error("data.columns", d.columns, "a mapping {expected: actual}", origins)
    if d.max_train_rows is not None and (not is_int(d.max_train_rows) or d.max_train_rows < 1):
        raise type_error(
            "data.max_train_rows", d.max_train_rows, "an integer >= 1 or null", origins
        )
    e = d.eval_size
    if e is not None and not ((is_int(e) and e >= 0) or (isinstance(e, float) and 0 < e < 1)):
        raise type_error(
            "data.eval_size", e, "an integer >= 0, a fraction in (0, 1), or null", origins
        )
    if not is_int(d.seed):
        raise type_error("data.seed", d.seed, "an integer", origins)
    for tmpl_key, needed in (("instruction", "{text}"), ("plain_template", "{user}")):
        if needed not in getattr(d, tmpl_key):
            raise ConfigError(
                f"data.{tmpl_key}{where(origins, f'data.{tmpl_key}')} must contain {needed}"
            )
    for key in ("path", "eval_path"):
        v = getattr(d, key)
        if v and Path(v).suffix.lower() not in FILE_SUFFIXES:
            raise ConfigError(
                f"data.{key}={v!r}{where(origins, f'data.{key}')}: unsupported file type; use "
                f"{', '.join(FILE_SUFFIXES)}"
            )
    if not check_paths:
        return
    for key in ("path", "eval_path", "labels_file"):
        v = getattr(d, key)
        if v and not Path(v).is_file():
            raise ConfigError(f"data.{key}={v!r}{where(origins, f'data.{key}')}: no such file")
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


def _validate_training(
    t: Any, name: str, origins: Mapping[str, str], data: DataConfig
) -> dict[str, Any]:
    if t is None:
        t = {}
    if not isinstance(t, dict):
        raise ConfigError(f"training: expected a mapping of SFTConfig fields, got {t!r}")
    known = _sft_fields()
    out = dict(t)
    for k, v in t.items():
        if v is False and k.endswith("_strategy"):  # YAML 1.1 reads `no` as false
            out[k] = v = "no"
        if k not in known:
            raise ConfigError(
                f"training.{k}{where(origins, f'training.{k}')}: not a field of trl.SFTConfig "
                f"/ TrainingArguments{did_you_mean(str(k), list(known))}"
            )
        want = known[k].type
        ok = {
            int: is_int(v),
            float: is_num(v),
            bool: isinstance(v, bool),
            str: isinstance(v, str),
        }.get(want, True)
        if not ok:
            label = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
            raise type_error(f"training.{k}", v, label[want], origins)
    out.setdefault("output_dir", "runs/{name}")
    for key in ("output_dir", "run_name", "logging_dir"):
        if isinstance(out.get(key), str):
            out[key] = out[key].replace("{name}", name)
    if not isinstance(out["output_dir"], str) or not out["output_dir"]:
        raise type_error("training.output_dir", out["output_dir"], "a folder name", origins)
    out.setdefault("run_name", name)
    has_eval = _has_eval(data)
    if str(out.get("eval_strategy", "no")) != "no" and not has_eval:
        raise ConfigError(
            f"training.eval_strategy={out['eval_strategy']!r}"
            f"{where(origins, 'training.eval_strategy')} needs eval rows, but there are "
            "none (data.eval_size is 0 or null without data.eval_split / data.eval_path); "
            "give eval rows, or eval_strategy: 'no'"
        )
    return out


def _validate_interactions(
    ic: Any, origins: Mapping[str, str], data: DataConfig
) -> dict[str, Any] | None:
    if ic is None:
        return None
    if not isinstance(ic, dict):
        raise ConfigError(f"interactions: expected a mapping or null, got {ic!r}")
    out = dict(ic)
    probes_from = out.setdefault("probes_from", "eval")
    if probes_from not in ("eval", "train"):
        raise type_error("interactions.probes_from", probes_from, "'eval' or 'train'", origins)
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
        at = where(origins, f"interactions.{bad[0]}") if bad else ""
        raise ConfigError(f"interactions{at}: {err}") from None
    return out


def validate(
    raw: dict[str, Any], origins: dict[str, str], sources: list[str], check_paths: bool
) -> TrainConfig:
    """The merged ``raw`` config as a :class:`TrainConfig`; a :class:`ConfigError` if unusable.

    ``origins`` maps each dotted key to the file that set it (for the messages),
    ``sources`` lists the files merged, ``check_paths`` also checks local files exist.
    Notes (not errors, e.g. LoRA reaching a vision tower) are warned and kept.
    """
    for k in raw:
        if k not in TOP_LEVEL:
            raise ConfigError(
                f"{k}{where(origins, k)}: not a config section{did_you_mean(str(k), TOP_LEVEL)}"
                f"; sections are {', '.join(TOP_LEVEL[1:])}"
            )
    for k, v in raw.items():
        check_unresolved(v, k)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("name: give the run a name (name: my-run), used for output_dir")
    if not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
        raise ConfigError(f"name={name!r}: use letters, digits and . _ + - only (a folder name)")
    notes: list[str] = []
    model = section(ModelConfig, raw.get("model"), "model", origins)
    _validate_model(model, origins, notes, check_paths)
    lora = section(LoraSettings, raw.get("lora", {}), "lora", origins, required=False)
    if lora is not None:
        _validate_lora(lora, model, origins, notes)
    data = section(DataConfig, raw.get("data"), "data", origins)
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
