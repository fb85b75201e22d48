#!/usr/bin/env bash
# Creates ./venv and installs ote-face with pinned dependencies. Usage: ./init_venv.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")"
VENV=${1:-venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements.txt
"$VENV/bin/python" -m pip install --quiet --no-deps -e .
echo "ote-face installed in $VENV: activate with 'source $VENV/bin/activate'"
