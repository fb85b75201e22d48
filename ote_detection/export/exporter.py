"""Export of an InferenceModel in Open Model Zoo's formats: the head family's adapter
(``export/adapters.py``, chosen by ``head.export_family``) wraps the network captured by
``export/openvino_export.py`` and appends the post-processing as OpenVINO ops."""

import torch

from ..utils.errors import OteError
from .adapters import adapter_for
from .openvino_export import INPUT_NAME, capture, first_line


def convert_to_openvino(inference_model, input_size):
    """The IR (``openvino.Model``) of ``inference_model`` for a [1, 3, h, w] input, post-processing
    included, by the adapter of its head's ``export_family``. Returns ``(model, info)``: ``info`` is
    what the adapter writes into ``export_info.yaml`` (``output`` fields and the folding flag)."""
    inference_model = inference_model.eval()
    adapter = adapter_for(inference_model.detector.bbox_head)
    return adapter.to_openvino(inference_model, tuple(int(v) for v in input_size))


def export_onnx(inference_model, input_size, path):
    """ONNX of the network without NMS, through torch.export (``torch.onnx.export(dynamo=True)``);
    the outputs are the adapter's raw ones (see ``export_info.yaml``). Returns their description."""
    adapter = adapter_for(inference_model.detector.bbox_head)
    module = adapter.raw_module(inference_model.eval(), input_size)
    program = capture(module, input_size)
    try:
        onnx_program = torch.onnx.export(program, input_names=[INPUT_NAME], output_names=list(adapter.onnx_outputs),
                                         dynamo=True, verbose=False)
        onnx_program.save(path)
    except Exception as exc:
        raise OteError(f"ONNX export failed: {first_line(exc)}") from exc
    return dict(adapter.onnx_outputs)
