"""One way to get a frame predictor for any weights file: snapshot (.pth) or OpenVINO IR (.xml/.bin)."""

import os

import yaml

from ..engine.predictor import TorchPredictor
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
    snapshot stretches). ``tile``: None, or a dict of ``engine.tiling.TiledPredictor`` options
    (``overlap``, ``tile_scale``): a full-frame pass plus overlapping tiles at the network's input size.
    """
    if is_ir(weights):
        from ..export.openvino_predictor import OpenVINOPredictor
        check_ir_belongs(weights, task)
        keep = ir_keep_ratio(weights) if keep_ratio is None else keep_ratio
        predictor = OpenVINOPredictor(weights, precision=precision, threads=threads, keep_ratio=keep)
    else:
        model, snapshot_size = task.load_snapshot(weights)
        predictor = TorchPredictor(model, input_size or snapshot_size, keep_ratio=bool(keep_ratio),
                                   batch_size=batch_size)
    if tile is not None:
        from ..engine.tiling import TiledPredictor
        test_cfg = task.cfg.model.get("test_cfg") or {}
        predictor = TiledPredictor(predictor, nms_iou=float((test_cfg.get("nms") or {}).get("iou_threshold", 0.45)),
                                   max_per_img=int(test_cfg.get("max_per_img", 200) or 200), **tile)
    return predictor


def _versions():
    import torch

    from .. import __version__
    try:
        from openvino import get_version as ov_version
        ov = ov_version()
    except ImportError:
        ov = None
    return {"ote_detection": __version__, "torch": torch.__version__, "openvino": ov}


def detection_settings(task, predictor, weights, precision, batch_size):
    """Everything besides the weights' content that decides ``predictor``'s detections, as a JSON-able
    dict (the detection cache's key, ``engine.detection_cache``): the resolved model config (``model``
    with anchors and ``test_cfg``; ``img_norm_cfg``), the input size (w, h) and keep-ratio, the tiling
    options, the backend with its precision, the batch size (a snapshot batches frames) and the library
    versions. The model config is included for an IR too: tiling merges tiles with its ``test_cfg``."""
    tiled = getattr(predictor, "inner", None) is not None
    settings = {
        "backend": f"openvino:{precision}" if is_ir(weights) else "torch",
        "input_size": [int(v) for v in predictor.input_size],
        "keep_ratio": bool(predictor.keep_ratio),
        "model": task.cfg.model,
        "img_norm_cfg": task.cfg.get("img_norm_cfg"),
        "batch_size": None if is_ir(weights) else int(batch_size),
        "tile": None,
        "versions": _versions(),
    }
    if tiled:
        settings["tile"] = {k: getattr(predictor, k) for k in ("overlap", "tile_scale", "full_frame", "nms_iou",
                                                               "max_per_img", "drop_cut", "cut_margin")}
    return settings
