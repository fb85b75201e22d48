"""Environment NNCF needs before it is imported.

NNCF's PyTorch quantizers JIT-compile a C++ extension on first use (g++, ninja) and give up after 60 s
by default, too short on a busy 2-core machine: the timeout is disabled unless the user set one.
``TORCH_EXTENSIONS_DIR`` (run_tests.sh sets a project-local one) keeps the compiled extension.
"""

import logging
import os

os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")


class _NoCudaNotice(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=..." (``torch.utils.cpp_extension``, logged
    when NNCF's extension loader first imports that module on a machine with a CUDA toolkit and no GPU):
    not the user's concern. Its other records (compiler problems) pass."""

    def filter(self, record):
        return not str(record.msg).startswith("No CUDA runtime is found")


def _quiet_cuda_notice():
    """A filter on the logger itself: unlike a level, torch's own logging set-up (``torch._logging``) leaves
    it in place, and it acts however late NNCF imports ``torch.utils.cpp_extension``."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _NoCudaNotice) for f in logger.filters):
        logger.addFilter(_NoCudaNotice())


_quiet_cuda_notice()  # when this package is imported: before any compression path (train, eval, export) loads NNCF


def nncf_environment():
    return {k: os.environ.get(k) for k in ("NNCF_EXTENSION_LOAD_TIMEOUT", "TORCH_EXTENSIONS_DIR")}


def import_nncf():
    """``import nncf`` with the environment above and NNCF's own INFO log lines kept quiet."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import nncf
    logging.getLogger("nncf").setLevel(logging.WARNING)
    return nncf
