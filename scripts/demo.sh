#!/usr/bin/env bash
# The main job: refresh the environment, then run the end-to-end demo on the bundled real frames.
# Extra arguments go to `lidar-ovseg demo` (see `lidar-ovseg demo --help`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
# The demo never downloads: it runs the real models when `lidar-ovseg weights fetch` has cached
# them, else the tiny built-in profile, and its last lines say which command makes it real.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec .venv/bin/lidar-ovseg demo "$@"
