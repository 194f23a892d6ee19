#!/usr/bin/env bash
# Set up the project from nothing: a virtual environment in .venv with everything the worker,
# the tests and the Blender add-on tests need (bpy 4.5 is Blender as a Python 3.11 module),
# and one small environment per other Blender version the add-on is tested on, in
# .venv-blender/<version> (bpy and the tests' packages only; their worker runs from .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: Python 3.11 is required (bpy 4.5 is built for it); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
# Both packages importable from anywhere (scripts, tests), edited in place.
.venv/bin/python -m pip install --quiet --no-deps -e .

# Other Blender versions: "<Python version> <bpy version>" (each bpy wheel is built for one Python).
OTHER_BLENDERS=("3.11 4.2.23" "3.11 5.0.1" "3.13 5.3.0")

find_python() {  # an interpreter of version $1: on PATH, or one that pyenv installed
  local candidate
  for candidate in "python$1" "$(pyenv root 2>/dev/null)/versions/$1"*/bin/"python$1"; do
    if "$candidate" -c 'import sys' >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

for spec in "${OTHER_BLENDERS[@]}"; do
  read -r python_version bpy_version <<<"$spec"
  env=".venv-blender/$bpy_version"
  if [ ! -x "$env/bin/python" ]; then
    if ! base=$(find_python "$python_version"); then
      echo "warning: no Python $python_version here: the add-on is not tested on Blender $bpy_version" >&2
      continue
    fi
    "$base" -m venv "$env"
  fi
  "$env/bin/python" -m pip install --quiet --upgrade pip
  "$env/bin/python" -m pip install --quiet "bpy==$bpy_version" -r tests/requirements-blender.txt
  "$env/bin/python" -m pip install --quiet --no-deps -e .
done
echo "ready: .venv/bin/python"
