"""``InputSize``: a network input size, from the CLI (``utils.cli.input_size``: a (w, h) pair) and the
config (an int or a pair) into a checkpoint's meta and an IR's export_info.yaml (a [w, h] list)."""

from typing import NamedTuple, Optional

__all__ = ["InputSize"]


class InputSize(NamedTuple):
    """Network input size in pixels (width, height); ``height`` is None for 'Wx' (keep the aspect ratio,
    width given). The one type of an input size from the CLI (``input_size``) through the config
    (``InputSize.of``: an int or a pair) into the checkpoint's meta (a [w, h] list)."""
    width: int
    height: Optional[int]

    @classmethod
    def of(cls, value):
        """An ``InputSize`` from an int (square), a (w, h) pair (list, tuple, InputSize) or None (-> None).
        Raises ValueError for anything else (the caller names the file)."""
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not an input size")
        if isinstance(value, (int, float)):
            if int(value) != value or value <= 0:
                raise ValueError(f"{value!r} is not an input size")
            return cls(int(value), int(value))
        try:
            width, height = value
            return cls(int(width), None if height is None else int(height))
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not an input size (an int or [width, height])") from None
