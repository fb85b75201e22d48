"""One way to get a frame predictor for any weights file: snapshot (.pth) or OpenVINO IR (.xml/.bin),
and what that file is (``Provenance``): whose model it is shown to be, and its own size and complexity."""

import logging

import torch.nn as nn

from ..artefacts.formats import check_ir_belongs
from ..artefacts.kinds import IR, Checkpoint, open_artefact
from ..artefacts.provenance import Provenance
from ..utils.complexity import model_complexity
from ..utils.errors import OteError
from .deploy import deployment_geometry, model_stride
from .predictor import TorchPredictor

log = logging.getLogger(__name__)


def _template_conv_shapes(task):
    return sorted(tuple(int(d) for d in m.weight.shape) for m in task.build_detector().modules()
                  if isinstance(m, nn.Conv2d))


_UNREAD = object()


def ir_provenance(task, weights, model=None, info=_UNREAD):
    """``Provenance`` of an IR for ``task``'s work dir. An IR whose export_info.yaml names another
    template or other classes is refused (``check_ir_belongs``, one line); one without export_info.yaml
    (e.g. Open Model Zoo's) is this template's only when its graph has the template model's
    convolutions (weight shapes) and input size, else it is reported as foreign. ``model``: the IR's
    ``openvino.Model`` as it is run (its input made static, ``static_input``), default read from ``weights``;
    ``info``: what ``check_ir_belongs`` returned for it, when the caller has checked it already."""
    if info is _UNREAD:
        info = check_ir_belongs(weights, task)
    if info is not None:
        return Provenance(weights, "IR", True, f"export_info.yaml names {info.template or 'no template'}", info)
    from .ir_model import ir_conv_shapes
    from .openvino_predictor import read_ir, static_input
    if model is None:
        model = static_input(read_ir(weights), weights, task.input_size)[0]
    _, _, h, w = (int(d) for d in model.inputs[0].get_partial_shape().to_shape())
    ir_shapes = ir_conv_shapes(model)
    own_shapes = _template_conv_shapes(task)
    if ir_shapes != own_shapes:
        why = (f"no export_info.yaml; its {len(ir_shapes)} convolutions are not the {len(own_shapes)} of the "
               f"template's model")
        return Provenance(weights, "IR", False, why)
    if (w, h) != tuple(task.input_size):
        why = (f"no export_info.yaml; the template's architecture, but input {w}x{h}, not the template's "
               f"{task.input_size[0]}x{task.input_size[1]}")
        return Provenance(weights, "IR", False, why)
    return Provenance(weights, "IR", True, "no export_info.yaml; its convolutions and input size are the "
                                           "template model's")


def check_ir_input_size(artefact, input_size):
    """Refuse (one line) an ``input_size`` given for an IR whose input size is fixed: only an IR with a
    dynamic height or width (``ir_input_is_dynamic``) is run at a size the user chooses. ``artefact``: what
    ``artefacts.kinds.open_artefact`` returned (a snapshot takes any size)."""
    from .openvino_predictor import ir_input_is_dynamic
    if input_size is not None and isinstance(artefact, IR) and not ir_input_is_dynamic(artefact.xml):
        raise OteError(f"{artefact.path}: --input-size is for snapshots and IRs with a dynamic input; this IR has the "
                       f"input size it was exported at (export it at another size with export.py --input-size)")


def artefact_complexity(provenance, predictor):
    """(GFLOPs, Mp, where they come from) of the evaluated artefact itself: a snapshot's model (a
    pruned one's own shapes) at the evaluated input size; an IR's export_info.yaml ``complexity`` (the
    exported model's, written by export.py / compress.py --ptq) when recorded for this input size, else
    counted from the IR's own graph (``inference.ir_model.ir_complexity``)."""
    base = getattr(predictor, "inner", predictor)
    size = tuple(int(v) for v in predictor.input_size)
    if provenance.kind == "snapshot":
        gflops, mparams = model_complexity(base.model.detector, size)
        return gflops, mparams, "the snapshot's model (ptflops)"
    info = provenance.info
    record = info.complexity if info is not None else None
    if record and tuple(record.get("input_size") or ()) == size and "gflops" in record and "mparams" in record:
        return float(record["gflops"]), float(record["mparams"]), "export_info.yaml (the exported model, ptflops)"
    from .ir_model import ir_complexity
    gflops, mparams = ir_complexity(base.model)  # as run: a dynamic input made static
    return gflops, mparams, "the IR's graph (convolutions and activations; BatchNorm folded)"


def make_predictor(task, weights, precision="f32", threads=None, input_size=None, keep_ratio=None, batch_size=8,
                   tile=None, frame_hw=None):
    """A ``FramePredictor`` for ``weights`` (a path, or what ``artefacts.kinds.open_artefact`` returned for
    it), checked to belong to ``task``'s template; its
    ``.provenance`` (``Provenance``) says what the file is. An IR that is not shown to be the
    template's is said so in one warning line (every reader: eval, the demo).

    The geometry is ``inference.deploy.deployment_geometry``'s (the one decision) of ``input_size`` (None,
    W, (W, H), or (W, None): the height from ``frame_hw``, the frames' (h, w), rounded up to the model's
    stride) and ``keep_ratio`` (letterbox frames instead of stretching them; None: as the policy says,
    and without ``input_size`` as the artefact was made: a snapshot as it was trained (``train.py
    --input-size Wx`` letterboxing), an IR as it was exported (its export_info.yaml, else its model_info)).
    Snapshot: the PyTorch model at that size, default the snapshot's own. IR: OpenVINO on the CPU at
    ``precision`` (f32, bf16, f16 or default) with ``threads``; its input size is the IR's, or for an IR
    with a dynamic input (``static_input``) ``input_size``, default the template's. ``tile``: None, or a
    dict of ``inference.tiling.TiledPredictor`` options (``overlap``, ``tile_scale``): a full-frame pass
    plus overlapping tiles at the network's input size.
    """
    spec = tuple(input_size) if input_size is not None else None
    stride = model_stride(task.cfg.model)
    artefact = open_artefact(weights, expect=(Checkpoint, IR))
    weights = artefact.path
    if isinstance(artefact, IR):
        from .openvino_predictor import OpenVINOPredictor, ir_keep_ratio
        check_ir_input_size(artefact, spec)
        info = check_ir_belongs(weights, task)
        geometry = None
        if spec is not None:  # an IR with a dynamic input, run at the requested size
            geometry = deployment_geometry(spec, frame_hw=frame_hw, stride=stride, keep_ratio=keep_ratio)
        size = geometry[0] if geometry else task.input_size
        why = (f"--input-size {size[0]}x{size[1]}" if geometry else
               f"the template's input size {size[0]}x{size[1]}; --input-size WxH to choose")
        predictor = OpenVINOPredictor(artefact, precision=precision, threads=threads, input_size=size, size_why=why)
        if geometry is None:  # the IR's own size and letterboxing (export_info.yaml, else its model_info)
            own_keep = info.keep_ratio if info is not None else ir_keep_ratio(predictor.model)
            geometry = deployment_geometry(None, keep_ratio=keep_ratio, default=(predictor.input_size, own_keep))
        predictor.keep_ratio = geometry[1]
        provenance = ir_provenance(task, weights, predictor.model, info)
        if not provenance.own:
            log.warning("%s: not shown to be %s's model (%s): reported as what it is, without the template's "
                        "reference figures", weights, task.name, provenance.why)
    else:
        model, snapshot_size, meta = task.load_snapshot(artefact, with_meta=True)
        provenance = Provenance(weights, artefact.kind, True, "its meta and weights fit the template")
        size, keep = deployment_geometry(spec, frame_hw=frame_hw, stride=stride, keep_ratio=keep_ratio,
                                         default=(snapshot_size, meta.keep_ratio))
        predictor = TorchPredictor(model, size, keep_ratio=keep, batch_size=batch_size)
    if tile is not None:
        from .tiling import TiledPredictor
        test_cfg = task.cfg.model.get("test_cfg") or {}
        predictor = TiledPredictor(predictor, nms_iou=float((test_cfg.get("nms") or {}).get("iou_threshold", 0.45)),
                                   max_per_img=int(test_cfg.get("max_per_img", 200) or 200), **tile)
    predictor.provenance = provenance
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


def detection_settings(task, predictor, artefact, precision, batch_size):
    """Everything besides the weights' content that decides ``predictor``'s detections, as a JSON-able
    dict (the detection cache's key, ``inference.detection_cache``): the resolved model config (``model``
    with anchors and ``test_cfg``; ``img_norm_cfg``), the input size (w, h) and keep-ratio, the tiling
    options, the backend with its precision, the batch size (a snapshot batches frames) and the library
    versions. The model config is included for an IR too: tiling merges tiles with its ``test_cfg``.
    ``artefact``: what ``artefacts.kinds.open_artefact`` returned for the weights (a ``Checkpoint`` or ``IR``)."""
    tiled = getattr(predictor, "inner", None) is not None
    ir = isinstance(artefact, IR)
    settings = {
        "backend": f"openvino:{precision}" if ir else "torch",
        "input_size": [int(v) for v in predictor.input_size],
        "keep_ratio": bool(predictor.keep_ratio),
        "model": task.cfg.model,
        "img_norm_cfg": task.cfg.get("img_norm_cfg"),
        "batch_size": None if ir else int(batch_size),
        "tile": None,
        "versions": _versions(),
    }
    if tiled:
        settings["tile"] = {k: getattr(predictor, k) for k in ("overlap", "tile_scale", "full_frame", "nms_iou",
                                                               "max_per_img", "drop_cut", "cut_margin")}
    return settings
