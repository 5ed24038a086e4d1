"""Which linear layers LoRA adapts: PEFT's defaults and matching, and a family table.

Two things live here, both borrowed from PEFT where PEFT has them:

* **Defaults.** ``lora.target_modules: null`` takes PEFT's own per-architecture default
  (``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``, what ``LoraConfig`` itself
  falls back to), so a config means the same here as in plain PEFT. The small table
  :data:`FALLBACK_TARGETS` covers only families PEFT's table lacks.
* **Matching.** :func:`target_matches` asks PEFT's ``check_target_module_exists`` which
  module names a target adapts, so the check before a run cannot drift from the run.

:data:`FAMILY_MODULES` lists layer-0 linear layers per family (transformers' names) so a
config's targets can be checked without downloading the model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

__all__ = [
    "FALLBACK_TARGETS",
    "FAMILY_MODULES",
    "LAST_RESORT_TARGETS",
    "default_target_modules",
    "guess_family",
    "target_matches",
]

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

#: Default targets for families that PEFT's table lacks. Gemma 3 (multimodal) gets PEFT's
#: choice for its text model (``gemma3_text``: q_proj, v_proj), kept off the vision tower.
FALLBACK_TARGETS: dict[str, Any] = {
    "gemma3": r".*language_model.*\.(q_proj|v_proj)",
}
#: The targets when neither table knows the family (the package's historical default);
#: checked against the real model when it loads.
LAST_RESORT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]

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
    """The family a hub id names (``meta-llama/...`` -> ``llama``), so checks need no download."""
    low = model_name.lower()
    for fam, rx in _FAMILY_PATTERNS:
        if re.search(rx, low):
            return fam
    return None


def default_target_modules(family: str | None) -> Any:
    """PEFT's default targets for ``family``; else :data:`FALLBACK_TARGETS`; else q/k/v/o."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT

    if family in PEFT:
        return list(PEFT[family])
    if family in FALLBACK_TARGETS:
        return FALLBACK_TARGETS[family]
    return list(LAST_RESORT_TARGETS)


def target_matches(target: Any, names: Sequence[str]) -> list[str]:
    """The module names that PEFT would adapt for ``target`` (list, regex or all-linear).

    Lists and regexes go through PEFT's own ``check_target_module_exists``; ``all-linear``
    (which PEFT expands from the loaded model) is every linear layer but the output head.
    """
    if target == "all-linear":
        return [n for n in names if n != "lm_head"]
    from peft.tuners.tuners_utils import check_target_module_exists

    config = SimpleNamespace(
        target_modules=target,
        exclude_modules=None,
        modules_to_save=None,
        target_parameters=None,
        layers_to_transform=None,
        layers_pattern=None,
    )
    return [n for n in names if check_target_module_exists(config, n)]
