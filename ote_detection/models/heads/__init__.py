from . import ssd_head  # noqa: F401
