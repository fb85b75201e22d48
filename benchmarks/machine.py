"""The machine a figure was measured on, with no heavy import (start-up benchmarks import it too)."""

import subprocess


def cpu_model():
    """``lscpu``'s model name (e.g. "AMD EPYC"), or "unknown CPU" where lscpu is missing."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown CPU"
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "unknown CPU")
