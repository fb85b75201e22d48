#!/usr/bin/env bash
# Set up (venv + pinned packages) and run the main job end to end; arguments go to tools/run_end_to_end.py.
set -euo pipefail
cd "$(dirname "$0")"
./init_venv.sh
exec venv/bin/python tools/run_end_to_end.py "$@"
