"""Conversion of an InferenceModel to OpenVINO IR (and ONNX) in Open Model Zoo's formats.

The network part (backbone, neck, head maps and, for anchor-free heads, the box decoding; the input
normalisation folded into the first convolution; no NMS) is captured with ``torch.export`` and
converted by ``openvino.convert_model``. The post-processing is then appended as OpenVINO ops with
the graph API by the head family's adapter (``export/adapters.py``): ``DetectionOutput`` for SSD,
``MulticlassNms`` for the others. Every IR reads input ``image``: [1, 3, H, W] f32, planar BGR,
0..255 (no mean/scale to apply outside).
"""

import contextlib
import copy
import logging
import warnings

import torch
import torch.nn as nn

from ..utils.errors import OteError
from ..utils.fileio import LOW_SPACE_BYTES, free_bytes, is_write_failure, write_error

log = logging.getLogger(__name__)

INPUT_NAME = "image"


class _FoldedInput(nn.Module):
    """BGR 0..255 -> the detector, with the channel swap and the 1/std of the normalisation folded into the
    first convolution's weights (as Open Model Zoo's IRs have it); only a non-zero mean stays a Subtract,
    so zero padding keeps its meaning. ``build`` returns None when the first layer is not a plain Conv2d
    reading the input (the normalisation then stays in the graph, as InferenceModel computes it)."""

    def __init__(self, detector, mean):
        super().__init__()
        self.detector = detector
        self.register_buffer("mean", mean.clone(), persistent=False)
        self.subtract = bool(torch.any(mean != 0))

    @classmethod
    def build(cls, inference_model):
        detector = copy.deepcopy(inference_model.detector).eval()
        first = _first_conv_on_input(detector)
        if first is None:
            return None
        std = inference_model.std.reshape(-1)
        mean = inference_model.mean.reshape(1, -1, 1, 1)
        with torch.no_grad():
            weight = first.weight / std.reshape(1, -1, 1, 1)
            if inference_model.to_rgb:
                weight = weight.flip(1)
                mean = mean.flip(1)
            first.weight.copy_(weight)
        return cls(detector, mean)

    def forward(self, bgr):
        x = bgr - self.mean if self.subtract else bgr
        return self.detector(x)


def _first_conv_on_input(detector):
    """The Conv2d that reads the network input directly (the first layer), or None."""
    seen = {}

    def hook(module, inputs, output):
        if "first" not in seen:
            seen["first"] = (module, inputs[0])

    handles = [m.register_forward_hook(hook) for m in detector.modules() if isinstance(m, nn.Conv2d)]
    probe = torch.zeros(1, 3, 64, 64)
    try:
        with torch.no_grad():
            detector(probe)
    finally:
        for h in handles:
            h.remove()
    first = seen.get("first")
    if first is None or first[1] is not probe or first[0].in_channels != 3 or first[0].groups != 1:
        return None
    return first[0]


def foldable(inference_model):
    """(module, folded): BGR 0..255 -> the detector's outputs, with the normalisation folded into the
    first convolution where it reads the input directly (else kept in the graph)."""
    folded = _FoldedInput.build(inference_model)
    return (folded, True) if folded is not None else (inference_model, False)


def first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_nncf_model(module):
    """Whether ``module`` carries NNCF's hooks (a compress.py checkpoint's model)."""
    return any("__nncf_hooks" in name for name, _ in module.named_modules())


def capture(module, input_size):
    """``torch.export`` program of ``module`` for a [1, 3, h, w] input (the first step of both IR and
    ONNX export; no TorchScript)."""
    width, height = (int(v) for v in input_size)
    example = torch.zeros(1, 3, height, width)
    try:
        with torch.no_grad():
            return torch.export.export(module.eval(), (example,), strict=False)
    except Exception as exc:  # torch.export raises many kinds of errors
        raise OteError(f"torch.export of the network failed: {first_line(exc)}") from exc


def convert_network(module, input_size):
    """``openvino.Model`` of ``module`` (image -> tensors) for a static [1, 3, h, w] input.

    The module is captured with ``torch.export``. A model that torch.export cannot capture (NNCF's
    quantizers read their state with data-dependent ``.item()`` calls) is converted from TorchScript
    instead, which OpenVINO turns into FakeQuantize ops; torch's tracing warnings are not shown."""
    import openvino as ov
    width, height = (int(v) for v in input_size)
    shape = [ov.PartialShape([1, 3, height, width])]
    try:
        try:
            if is_nncf_model(module):
                raise OteError("an NNCF-compressed model is not captured by torch.export")
            program = capture(module, input_size)
        except OteError as exc:
            log.info("%s; converting from TorchScript instead", exc)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                net = ov.convert_model(module.eval(), example_input=torch.zeros(1, 3, height, width), input=shape)
        else:
            net = ov.convert_model(program, input=shape)
    except OteError:
        raise
    except Exception as exc:  # conversion failures come as many kinds of exceptions
        raise OteError(f"OpenVINO conversion failed: {first_line(exc)}") from exc
    param = net.get_parameters()[0]
    param.set_friendly_name(INPUT_NAME)
    param.output(0).get_tensor().set_names({INPUT_NAME})
    return net


def save_openvino(model, xml_path, shown_as=None, source=None):
    """Write .xml + .bin in FP32 (no FP16 weight compression). A full or read-only disk (OpenVINO says
    ``RuntimeError: basic_ios::clear: iostream error``) is one OteError line naming ``shown_as`` (the
    final path when ``xml_path`` is a temporary one). ``source``: the IR ``model`` was made from (e.g. the
    FP32 IR NNCF quantized): its ``model_info`` is written where ``model`` has none."""
    import errno
    import os

    import openvino as ov

    from .model_info import get_model_info, set_model_info
    if source is not None and not get_model_info(model):
        set_model_info(model, get_model_info(source))
    try:
        ov.save_model(model, xml_path, compress_to_fp16=False)
    except (OSError, RuntimeError) as exc:
        if not is_write_failure(exc):
            raise
        free = free_bytes(xml_path)  # OpenVINO's stream error has no errno: too little room is a full disk
        if free is not None and free < ir_bytes(model) + LOW_SPACE_BYTES:
            exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise write_error(shown_as or xml_path, exc) from None


def ir_bytes(model):
    """Bytes of an ``openvino.Model``'s constants: about the size of its .bin."""
    return sum(op.get_byte_size() for op in model.get_ordered_ops() if op.get_type_name() == "Constant")


# the ONNX optimizer's INFO lines (~80 per export: "Removed 517 unused nodes", "Replaced initializer ...");
# their warnings and errors still show
ONNX_OPTIMIZER_LOGGERS = ("onnxscript", "onnx_ir")


@contextlib.contextmanager
def quiet_onnx_optimizer():
    """The loggers of ``ONNX_OPTIMIZER_LOGGERS`` at WARNING for the block (restored afterwards)."""
    loggers = [logging.getLogger(name) for name in ONNX_OPTIMIZER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
