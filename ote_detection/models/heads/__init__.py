from . import atss_head, fcos_head, ssd_head  # noqa: F401  (register the heads)
