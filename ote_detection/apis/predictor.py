"""One way to get a frame predictor for any weights file: snapshot (.pth) or OpenVINO IR (.xml/.bin)."""

import os

import yaml

from ..inference.predictor import TorchPredictor
from ..utils.artefacts import check_ir_belongs, ir_paths

IR_SUFFIXES = (".xml", ".bin")


def is_ir(path):
    return str(path).lower().endswith(IR_SUFFIXES)


def ir_keep_ratio(weights):
    """Whether an IR was exported for letterboxed frames (``export.py --input-size Wx``)."""
    info = ir_paths(weights)[2]
    if not os.path.isfile(info):
        return False
    with open(info, encoding="utf-8") as f:
        return bool(((yaml.safe_load(f) or {}).get("input") or {}).get("keep_ratio", False))


def make_predictor(task, weights, precision="f32", threads=None, input_size=None, keep_ratio=None, batch_size=8,
                   tile=None):
    """A ``FramePredictor`` for ``weights``, checked to belong to ``task``'s template.

    Snapshot: the PyTorch model at ``input_size`` (w, h), default the snapshot's own. IR: OpenVINO on
    the CPU at ``precision`` (f32, bf16, f16 or default) with ``threads``; its input size is the IR's.
    ``keep_ratio``: letterbox frames instead of stretching them (None: as the IR was exported; a
    snapshot stretches). ``tile``: None, or a dict of ``inference.tiling.TiledPredictor`` options
    (``overlap``, ``tile_scale``): a full-frame pass plus overlapping tiles at the network's input size.
    """
    if is_ir(weights):
        from ..inference.openvino_predictor import OpenVINOPredictor
        check_ir_belongs(weights, task)
        keep = ir_keep_ratio(weights) if keep_ratio is None else keep_ratio
        predictor = OpenVINOPredictor(weights, precision=precision, threads=threads, keep_ratio=keep)
    else:
        model, snapshot_size = task.load_snapshot(weights)
        predictor = TorchPredictor(model, input_size or snapshot_size, keep_ratio=bool(keep_ratio),
                                   batch_size=batch_size)
    if tile is not None:
        from ..inference.tiling import TiledPredictor
        test_cfg = task.cfg.model.get("test_cfg") or {}
        predictor = TiledPredictor(predictor, nms_iou=float((test_cfg.get("nms") or {}).get("iou_threshold", 0.45)),
                                   max_per_img=int(test_cfg.get("max_per_img", 200) or 200), **tile)
    return predictor


def predictor_variant(predictor, weights, precision):
    """What besides weights and input size decides a predictor's detections (for the detection cache)."""
    tiled = getattr(predictor, "inner", None) is not None
    parts = [precision if is_ir(weights) else "torch", "letterbox" if predictor.keep_ratio else "stretch"]
    if tiled:
        parts.append(f"tiles:{predictor.overlap}:{predictor.tile_scale}:{predictor.full_frame}")
    return "/".join(parts)
