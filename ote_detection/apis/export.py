"""Export entry point behind the work dir's export.py: snapshot -> OpenVINO IR (FP32) [+ ONNX]."""

import logging
import os

from ..inference.deploy import check_aspect_flag, deployment_geometry, model_stride
from ..export.exporter import convert_to_openvino, export_onnx
from ..export.openvino_export import INPUT_NAME, save_openvino
from ..utils.errors import OteError
from ..artefacts.formats import ExportInfo, ir_checksums, write_export_info
from ..artefacts.kinds import IR, Checkpoint, open_artefact
from ..utils.complexity import complexity_record
from ..utils.fileio import OutputLock, atomic_dir, check_writable_dir, sha256sum
from .task import Task

log = logging.getLogger(__name__)

# what export writes into --save-model-to; anything else there is the user's and is kept
EXPORT_FILES = ("model.xml", "model.bin", "model.onnx", "export_info.yaml", "model_fp32.xml", "model_fp32.bin")

def export(template, load_weights, save_model_to, onnx=False, input_size=None, aspect=None, int8=False,
           calibration_images=None, val_ann_files=None, val_data_roots=None, max_drop=1.0, max_recall_drop=10.0,
           allow_recall_drop=False):
    """Write ``model.xml``/``model.bin`` (FP32 IR), optionally ``model.onnx``, and ``export_info.yaml`` to
    ``save_model_to``. Everything is written to a temporary folder beside it, which then replaces
    ``save_model_to`` as a whole (``utils.fileio.atomic_dir``): a failure or a kill leaves the old
    export intact, a reader sees the old set or the new set. export_info.yaml records each file's
    sha256. ``int8``: model.xml is the INT8 IR of post-training quantization at that size
    (``compression.ptq.int8_of_exported_ir``: accuracy control on ``val_ann_files``, at most ``max_drop``
    AP points lost; calibration on ``calibration_images`` or the validation images, listed before any
    work; refused when the recall at the operating score falls more than ``max_recall_drop`` points unless
    ``allow_recall_drop``), the FP32 IR is kept as model_fp32.xml, export_info.yaml's ``int8`` has the AP
    and recall before / after and the precision the CPU runs. ``input_size``: (w, h) instead of the snapshot's own, or (w, None): width w, the height from
    ``aspect`` (default 16:9) rounded up to the model's stride, for letterboxed frames
    (``inference/deploy.py``); without it, the snapshot's own size and letterboxing (``train.py
    --input-size Wx``). Returns the path of model.xml."""
    task = Task(template)
    if not load_weights:
        raise OteError("--load-weights is required: the snapshot (.pth) to export")
    check_aspect_flag(input_size, aspect)
    snapshot = open_artefact(load_weights, expect=(Checkpoint,),
                             refuse={IR: "already an OpenVINO IR; export takes a PyTorch snapshot (.pth)"})
    model, snapshot_size, meta = task.load_snapshot(snapshot, with_meta=True)  # checks template and shapes
    sources = None
    if int8:  # the images are listed and the validation set read before the FP32 export (minutes)
        from ..compression.ptq import int8_sources
        sources = int8_sources(calibration_images, val_ann_files, val_data_roots, task.classes)
    # keep_ratio: the IR's model_info says fit_to_window; without --input-size, as the snapshot was trained
    size, keep_ratio = deployment_geometry(tuple(input_size) if input_size is not None else None, aspect=aspect,
                                           stride=model_stride(model), default=(snapshot_size, meta.keep_ratio))
    return write_export(task, model, load_weights, save_model_to, size, keep_ratio, onnx=onnx, int8_sources=sources,
                        max_drop=max_drop, max_recall_drop=max_recall_drop, allow_recall_drop=allow_recall_drop)


def write_export(task, model, load_weights, save_model_to, size, keep_ratio, onnx=False, int8_sources=None,
                 max_drop=1.0, max_recall_drop=10.0, allow_recall_drop=False):
    """The export set of ``model`` (the ``InferenceModel`` of the snapshot ``load_weights``) at the resolved
    geometry ``size`` (w, h) / ``keep_ratio`` (``inference.deploy.deployment_geometry``) in ``save_model_to``:
    model.xml/.bin, export_info.yaml, [model.onnx], and with ``int8_sources`` (``compression.ptq.int8_sources``)
    model.xml INT8 and model_fp32.xml (see ``export``). export.py and the size sweep (choose_input_size) write
    their IRs here. Returns the path of model.xml."""
    out_dir = os.path.abspath(save_model_to)
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise OteError(f"{out_dir}: exists and is not a folder (give a folder for --save-model-to)")
    parent = os.path.dirname(out_dir)
    check_writable_dir(parent, "folder of --save-model-to")  # before converting, not after
    # one export at a time into out_dir; the new set is built beside it and swapped in as a whole
    with OutputLock(out_dir, "export.py"), atomic_dir(out_dir, owned=EXPORT_FILES) as tmp:
        ov_model, info = convert_to_openvino(model, size, classes=task.classes, keep_ratio=keep_ratio)
        int8_info = None
        if int8_sources is not None:
            from ..compression.ptq import int8_of_exported_ir
            quantized, int8_info = int8_of_exported_ir(ov_model, size, keep_ratio, int8_sources, max_drop,
                                                       max_recall_drop, allow_recall_drop)
            save_openvino(ov_model, os.path.join(tmp, "model_fp32.xml"),
                          shown_as=os.path.join(out_dir, "model_fp32.xml"))
            save_openvino(quantized, os.path.join(tmp, "model.xml"), shown_as=os.path.join(out_dir, "model.xml"),
                          source=ov_model)
            files = ["model.xml", "model.bin", "model_fp32.xml", "model_fp32.bin"]
        else:
            save_openvino(ov_model, os.path.join(tmp, "model.xml"), shown_as=os.path.join(out_dir, "model.xml"))
            files = ["model.xml", "model.bin"]
        onnx_outputs = onnx_error = None
        if onnx:  # never at the cost of the IR: a failure is said after the IR is in place
            try:
                onnx_outputs = export_onnx(model, size, os.path.join(tmp, "model.onnx"))
                files.append("model.onnx")
            except OteError as exc:
                onnx_error = str(exc)
                if os.path.exists(os.path.join(tmp, "model.onnx")):
                    os.remove(os.path.join(tmp, "model.onnx"))
        norm = task.img_norm_cfg
        export_info = ExportInfo(
            template=task.name,
            source_snapshot=os.path.abspath(load_weights),
            source_sha256=sha256sum(load_weights),
            precision="INT8 (PTQ)" if int8_sources is not None else "FP32",
            files=files,
            # readers (artefacts.formats.check_ir_belongs / read_ir_files) check these: a model.bin of
            # another export beside this model.xml is refused instead of giving garbage detections
            sha256=ir_checksums(tmp, files),
            input={
                "name": INPUT_NAME, "shape": [1, 3, size[1], size[0]], "layout": "NCHW", "color": "BGR",
                "range": [0, 255], "input_size": [size[0], size[1]], "keep_ratio": bool(keep_ratio),
                "normalization_folded_in": {"mean": [float(v) for v in norm["mean"]],
                                            "std": [float(v) for v in norm["std"]],
                                            "to_rgb": bool(norm.get("to_rgb", True)),
                                            "into_first_convolution": bool(info["normalisation_in_first_conv"])},
            },
            complexity=complexity_record(model.detector, size),  # the exported model's own (pruned: smaller)
            classes=list(task.classes),
            head_family=model.detector.bbox_head.export_family,
            output=info["output"],
            onnx={"file": "model.onnx", "outputs": onnx_outputs} if onnx_outputs else None,
            int8=int8_info,
        )
        write_export_info(tmp, export_info)  # a full disk: atomic_dir's line
    xml = os.path.join(out_dir, "model.xml")
    log.info("exported %s (%dx%d) to %s", task.name, size[0], size[1], xml)
    if onnx_error:
        raise OteError(f"{xml} written, but not model.onnx: {onnx_error}")
    return xml
