"""Load the study scripts of ``scripts/experiments/`` as modules (they are not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "scripts" / "experiments"


def _load(name: str) -> ModuleType:
    """Import ``scripts/experiments/<name>.py``; registered first, as dataclasses require."""
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_script():
    """``load_script(name)`` -> the module of ``scripts/experiments/<name>.py``."""
    return _load
