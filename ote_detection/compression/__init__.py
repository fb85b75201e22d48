"""Compression of trained detectors: what compress.py runs.

* quantization-aware training: ``nncf.quantize`` (NNCF 3.x, PyTorch) on a trained model, then ordinary
  fine-tuning of the returned model (``quantization.py``);
* magnitude sparsity: ``nncf.prune(mode=UNSTRUCTURED_MAGNITUDE_GLOBAL)`` with NNCF's multi-step ratio
  schedule, updated once per epoch (``sparsity.py``);
* filter pruning: torch-pruning's dependency graph and FPGM (geometric-median) importance remove filters
  physically, on NNCF's exponential ratio schedule (``pruning.py``);
* post-training quantization with accuracy control on the OpenVINO model (``ptq.py``).

The algorithms and their settings come from the template's ``compression_config.json`` (OTE's format,
``config.py``). Training runs through ``apis.train.train`` with a ``CompressionPlugin`` (``plugin.py``);
``restore_compressed_model`` rebuilds a compressed checkpoint's model for eval, export and resume.
"""

from .env import nncf_environment  # noqa: F401  (sets NNCF's extension timeout before NNCF loads)
from .plugin import CompressionPlugin, is_compressed_checkpoint, restore_compressed_model  # noqa: F401
from .quantization import is_nncf_model  # noqa: F401

__all__ = ["CompressionPlugin", "is_compressed_checkpoint", "is_nncf_model", "nncf_environment",
           "restore_compressed_model"]
