#!/usr/bin/env bash
# Run the test suite (creates/reuses .venv and installs what is missing first).
set -euo pipefail
. "$(dirname "$0")/_env.sh"
exec python -m pytest -q "$@"
