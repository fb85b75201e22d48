"""Export of an InferenceModel in Open Model Zoo's formats: the head family's adapter
(``export/adapters.py``, chosen by ``head.export_family``) wraps the network captured by
``export/openvino_export.py`` and appends the post-processing as OpenVINO ops."""

import torch

from ..utils.errors import OteError
from .adapters import adapter_for
from ..utils.fileio import is_write_failure
from .model_info import model_info, set_model_info
from .openvino_export import INPUT_NAME, capture, first_line, is_nncf_model, quiet_onnx_optimizer


def convert_to_openvino(inference_model, input_size, classes=("face",), keep_ratio=False):
    """The IR (``openvino.Model``) of ``inference_model`` for a [1, 3, h, w] input, post-processing
    included, by the adapter of its head's ``export_family``, with Model API's ``model_info`` in its
    runtime info (``export/model_info.py``: ``classes`` as labels; ``keep_ratio``: frames letterboxed
    into it, input size ``Wx``). Returns ``(model, info)``: ``info`` is what the adapter writes into
    ``export_info.yaml`` (``output`` fields and the folding flag)."""
    inference_model = inference_model.eval()
    head = inference_model.detector.bbox_head
    adapter = adapter_for(head)
    model, info = adapter.to_openvino(inference_model, tuple(int(v) for v in input_size))
    set_model_info(model, model_info(head, classes, keep_ratio))
    return model, info


def _nncf_quantizers(module):
    """NNCF's quantizer modules inside ``module`` (a QAT checkpoint's model), [] for a plain model."""
    try:
        from nncf.torch.quantization.layers import BaseQuantizer
    except ImportError:  # NNCF absent: no model of ours can hold its quantizers
        return []
    return [m for m in module.modules() if isinstance(m, BaseQuantizer)]


def export_onnx(inference_model, input_size, path):
    """ONNX of the network without NMS; the outputs are the adapter's raw ones (see ``export_info.yaml``).
    Returns their description.

    A plain model goes through torch.export (``torch.onnx.export(dynamo=True)``). An NNCF-quantized model
    (QAT) cannot be captured by torch.export (its quantizers read their state with data-dependent
    ``.item()`` calls): it is traced (``torch.onnx.export(dynamo=False)``) with its quantizers exported as
    standard ``QuantizeLinear``/``DequantizeLinear`` pairs (NNCF's ``ONNX_QUANTIZE_DEQUANTIZE_PAIRS``
    mode, opset 13+), which ONNX Runtime runs; their default, OpenVINO's ``FakeQuantize`` in the
    ``org.openvinotoolkit`` domain, is not an ONNX Runtime op."""
    adapter = adapter_for(inference_model.detector.bbox_head)
    module = adapter.raw_module(inference_model.eval(), input_size)
    try:
        if is_nncf_model(module):
            _export_quantized_onnx(module, input_size, path, list(adapter.onnx_outputs))
        else:
            program = capture(module, input_size)
            with quiet_onnx_optimizer():
                onnx_program = torch.onnx.export(program, input_names=[INPUT_NAME],
                                                 output_names=list(adapter.onnx_outputs), dynamo=True, verbose=False)
            onnx_program.save(path)
    except OteError:
        raise
    except Exception as exc:
        if is_write_failure(exc):  # a full disk: the caller (utils.fileio.atomic_dir) names the output folder
            raise
        raise OteError(f"ONNX export failed: {first_line(exc)}") from exc
    return dict(adapter.onnx_outputs)


def _export_quantized_onnx(module, input_size, path, output_names, opset=17):
    import warnings

    from nncf.torch.quantization.layers import QuantizerExportMode
    width, height = (int(v) for v in input_size)
    quantizers = _nncf_quantizers(module)
    modes = [q._export_mode for q in quantizers]
    try:
        for q in quantizers:
            q.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's and the legacy exporter's, not ours
            torch.onnx.export(module.eval(), (torch.zeros(1, 3, height, width),), path, input_names=[INPUT_NAME],
                              output_names=output_names, dynamo=False, opset_version=opset)
    finally:
        for q, mode in zip(quantizers, modes):
            q.set_export_mode(mode)
