"""Deployment input size: run a model at another input size than the one it was trained at.

A detector trained at 256x256 finds faces of 12-50 px in a 1920x1080 frame far better when it sees the
frame at, say, 1280x736 (the weights do not depend on the input size: SSD priors, FCOS/ATSS points are
regenerated for the feature-map sizes). ``deployment_input_size`` turns what the user gives into (w, h):

* ``None``: the default (the snapshot's own input size, or the template's);
* ``W`` or ``(W, W)``: a square input; ``(W, H)``: exactly that;
* ``(W, None)`` ("``--input-size 1280x``"): width ``W``, the height from the frames' aspect ratio
  (``frame_hw``), or from ``aspect`` (e.g. ``"16:9"``) where there are no frames (export), **rounded up**
  to a multiple of the model's stride. Rounding up, not to the nearest: the frame letterboxed into the
  input (``keep_ratio``) then keeps the full width, and the few rows of padding at the bottom cost less
  than scaling the whole frame down (1280x for 1920x1080 gives 1280x736, 960x gives 960x544, 640x gives
  640x384). The width is used as given.

Every size is bounded before any model is built: each side 32..8192 px (``utils.cli.MIN_SIDE`` /
``MAX_SIDE``, the limits of ``--input-size``), the derived height included (``640x`` at an aspect of
1:1000 would be 640x640000; ``1000x`` at 1:9 rounds up to 1000x9024): one OteError naming the bound.

With the aspect kept, the frame should be letterboxed (``FramePredictor(keep_ratio=True)``), which
maps boxes back to the frame's pixels; a stretched frame of about the same aspect works too.
"""

import math
from fractions import Fraction

from ..models.heads import head_class
from ..utils.cli import MAX_SIDE, MIN_SIDE
from ..utils.errors import OteError

DEFAULT_ASPECT = (16, 9)
DEFAULT_STRIDE = 32

__all__ = ["deployment_input_size", "deployment_geometry", "check_aspect_flag", "parse_aspect", "model_stride",
           "DEFAULT_ASPECT"]


def parse_aspect(aspect):
    """``'16:9'``, ``'16/9'``, ``'1.777'``, ``(16, 9)`` or a number -> width / height as a float > 0."""
    if aspect is None:
        return DEFAULT_ASPECT[0] / DEFAULT_ASPECT[1]
    try:
        if isinstance(aspect, (tuple, list)):
            w, h = (float(v) for v in aspect)
            value = w / h
        elif isinstance(aspect, str):
            text = aspect.strip().replace("/", ":")
            if ":" in text:
                w, h = (float(v) for v in text.split(":"))
                value = w / h
            else:
                value = float(Fraction(text))
        else:
            value = float(aspect)
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise OteError(f"aspect ratio {aspect!r} is not W:H (e.g. 16:9) or a number") from exc
    if not math.isfinite(value) or value <= 0:
        raise OteError(f"aspect ratio {aspect!r} is not positive")
    return value


def model_stride(model, default=DEFAULT_STRIDE):
    """The largest of the head's declared ``strides`` (32 for our SSDs; the top FPN level for FCOS/ATSS).

    ``model``: a detector, an ``InferenceModel`` (anything with ``.detector.bbox_head`` / ``.bbox_head``),
    or a model config dict (``cfg.model``; the head class reads its strides from ``bbox_head``).
    ``default`` where there is no head (e.g. an IR's predictor).
    """
    if isinstance(model, dict):
        head_cfg = model.get("bbox_head")
        return int(max(head_class(head_cfg).strides_of_config(head_cfg))) if head_cfg else int(default)
    detector = getattr(model, "detector", model)
    head = getattr(detector, "bbox_head", None)
    return int(max(head.strides)) if head is not None else int(default)


def deployment_input_size(spec, frame_hw=None, aspect=None, stride=DEFAULT_STRIDE, default=None):
    """The network input (w, h) for ``spec``.

    Args:
        spec: None, an int ``W``, or a pair ``(W, H)`` / ``(W, None)`` (e.g. ``artefacts.input_size.InputSize``).
        frame_hw: (height, width) of the frames (all frames of a set share it, as a video's do);
            used for ``(W, None)``; wins over ``aspect``.
        aspect: width / height where there are no frames (``'16:9'``, a number or a pair); default 16:9.
        stride: the model's largest stride; the derived height is rounded up to a multiple of it.
        default: returned for ``spec=None`` (the snapshot's own input size).
    """
    if spec is None:
        if default is None:
            raise OteError("no input size given and no default")
        return tuple(int(v) for v in default)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        width, height = int(spec), int(spec)
    else:
        try:
            width, height = spec
        except (TypeError, ValueError) as exc:
            raise OteError(f"input size {spec!r} is not W, (W, H) or (W, None)") from exc
        width = int(width)
        if height is not None:
            height = int(height)
    if width <= 0 or (height is not None and height <= 0):
        raise OteError(f"input size {spec!r} is not positive")
    if height is None:
        stride = max(1, int(stride))
        if frame_hw is not None:
            fh, fw = (float(v) for v in frame_hw[:2])
            if fh <= 0 or fw <= 0:
                raise OteError(f"frame size {frame_hw!r} is not positive")
            ratio = fw / fh
            source = f"the frames' aspect {int(fw)}:{int(fh)}"
        else:
            ratio = parse_aspect(aspect)
            source = f"aspect {aspect if aspect is not None else '%d:%d' % DEFAULT_ASPECT}"
        height = max(stride, int(math.ceil(width / ratio / stride - 1e-9)) * stride)
        if height > MAX_SIDE:  # bounded before any model is built (640x at 1:1000 would be 640x640000)
            raise OteError(f"input size {width}x{height} (the height from {source}, rounded up to the stride "
                           f"{stride}) is over the limit of {MAX_SIDE} px a side; give a smaller width or a wider "
                           f"aspect")
    for side in (width, height):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise OteError(f"input size {width}x{height}: each side must be between {MIN_SIDE} and {MAX_SIDE} px")
    return width, height


def check_aspect_flag(spec, aspect):
    """One line when ``--aspect`` is given with anything but ``--input-size Wx`` (it sets only the height
    of a width-only size; W and WxH fix both sides). ``spec``: as ``deployment_input_size``'s."""
    if aspect is None:
        return
    if spec is None or not isinstance(spec, (tuple, list)) or spec[1] is not None:
        if spec is None:
            given, width = "no --input-size", "W"
        elif isinstance(spec, (tuple, list)):
            given, width = f"--input-size {spec[0]}x{spec[1]}", spec[0]
        else:
            given, width = f"--input-size {spec}", spec
        raise OteError(f"--aspect {aspect} is only for --input-size Wx (the height from the aspect); {given} "
                       f"fixes both sides: leave --aspect out, or give --input-size {width}x")


def deployment_geometry(spec, frame_hw=None, aspect=None, stride=DEFAULT_STRIDE, default=None, keep_ratio=None):
    """The one decision of how frames meet the network: ((w, h), keep_ratio), for training (train.py),
    export, eval and the demo alike.

    The size is ``deployment_input_size(spec, frame_hw, aspect, stride, default[0])``. ``keep_ratio``
    (frames letterboxed: scaled by one factor, zero-padded at the right and bottom, as
    ``data.scale_crop.letterbox`` does) is, in order: the caller's explicit ``keep_ratio`` (True/False; None:
    not given); True for a width-only ``spec`` ``(W, None)`` ("``--input-size 960x``"); the snapshot's own for
    ``spec=None`` (``default``: ((w, h), keep_ratio), e.g. a ``CheckpointMeta``'s); False for ``W`` / ``WxH``
    (stretched, OTE's way). ``aspect`` with anything but ``(W, None)`` is refused (``check_aspect_flag``)."""
    check_aspect_flag(spec, aspect)
    default_size, default_keep = (None, False) if default is None else default
    size = deployment_input_size(spec, frame_hw=frame_hw, aspect=aspect, stride=stride, default=default_size)
    if keep_ratio is None:
        if spec is None:
            keep_ratio = bool(default_keep)
        else:
            keep_ratio = isinstance(spec, (tuple, list)) and spec[1] is None
    return size, bool(keep_ratio)


def common_frame_hw(images):
    """(h, w) shared by the most COCO ``images`` entries (with width/height), for ``deployment_input_size``."""
    counts = {}
    for img in images:
        if img.get("height") and img.get("width"):
            hw = (int(img["height"]), int(img["width"]))
            counts[hw] = counts.get(hw, 0) + 1
    if not counts:
        return None
    return max(counts.items(), key=lambda kv: kv[1])[0]
