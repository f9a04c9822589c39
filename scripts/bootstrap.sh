#!/usr/bin/env bash
# Set up everything on a fresh machine: system packages, a virtualenv in .venv, the project.
# Safe to run again: each step is skipped or quick when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# Fashion-MNIST (the default report's second model trains on it) and Chromium (browser tests).
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
if [ "${MODELCARD_BROWSER:-1}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then need+=(chromium); fi
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${need[*]}"
    $SUDO apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || \
      { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q "${need[@]}" >/dev/null; } || \
      echo "warning: could not install ${need[*]}; tests that need them are skipped" >&2
  else
    echo "warning: no apt-get; install Fashion-MNIST IDX files and chromium yourself" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[dev]"
echo "ready: .venv/bin/modelcard"
