#!/usr/bin/env bash
# Set up (venv + pinned packages) and run the test suite; arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
./init_venv.sh
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.torch_extensions}"
exec venv/bin/python -m pytest -q "$@"
