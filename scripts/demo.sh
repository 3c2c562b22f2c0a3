#!/usr/bin/env bash
# The main job: refresh the environment, then run the end-to-end demo on the bundled real frames.
# Extra arguments go to `lidar-ovseg demo` (see `lidar-ovseg demo --help`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec .venv/bin/lidar-ovseg demo "$@"
