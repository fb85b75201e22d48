"""Necks: feature pyramids between the backbone and the head (FPN, RSSH-FPN)."""

from . import fpn, rssh_fpn  # noqa: F401  (register FPN, RSSH_FPN)
