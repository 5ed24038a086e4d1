#!/usr/bin/env bash
# The main job on an embedded default; finishes on a laptop CPU.
set -euo pipefail
. "$(dirname "$0")/_env.sh"
exec sft-interactions demo "$@"
