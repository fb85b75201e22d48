"""Environment NNCF needs before it is imported.

NNCF's PyTorch quantizers JIT-compile a C++ extension on first use (g++, ninja) and give up after 60 s
by default, too short on a busy 2-core machine: the timeout is disabled unless the user set one.
``TORCH_EXTENSIONS_DIR`` (run_tests.sh sets a project-local one) keeps the compiled extension.
"""

import os

os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")


def nncf_environment():
    return {k: os.environ.get(k) for k in ("NNCF_EXTENSION_LOAD_TIMEOUT", "TORCH_EXTENSIONS_DIR")}


def import_nncf():
    """``import nncf`` with the environment above and NNCF's own INFO log lines kept quiet."""
    import logging
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import nncf
    logging.getLogger("nncf").setLevel(logging.WARNING)
    # building/loading NNCF's extension on a CPU-only machine logs "No CUDA runtime is found" (torch's
    # cpp_extension): not the user's concern
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return nncf
