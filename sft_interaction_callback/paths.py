"""Telling a local model folder from a hub id, so that a missing folder is named as such.

``from_pretrained("/no/such/dir")`` answers with a message about hub repository ids,
which hides the real mistake (a typo in a path). These checks run before anything is
loaded (at construction, on the command line) and need no Hugging Face import.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["looks_local", "model_path_problem"]


def looks_local(spec: str) -> bool:
    """True for what can only be a local path: absolute, ``./``, ``../``, ``~``, or an
    existing file or folder (a hub id is ``name`` or ``owner/name``)."""
    return (
        spec.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or os.path.isabs(spec)
        or os.path.exists(spec)
        or spec.count("/") > 1
    )


def model_path_problem(spec: Any, what: str = "model") -> str | None:
    """Why ``spec`` (a local path) cannot be loaded as a model folder, or None.

    None for objects, hub ids and folders that hold a ``config.json``.
    """
    if not isinstance(spec, (str, os.PathLike)):
        return None
    text = os.fspath(spec)
    if not looks_local(text):
        return None
    path = os.path.expanduser(text)
    if not os.path.exists(path):
        return f"{what} path {text!r} does not exist; check the path (or give a hub id)"
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        return (
            f"{what} path {text!r} has no config.json, so it is not a saved model folder; "
            "point it at the folder written by save_pretrained()"
        )
    return None
