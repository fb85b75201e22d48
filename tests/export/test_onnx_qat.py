"""export.py --onnx on a QAT checkpoint (compress.py --nncf-quantization): the IR is written as without --onnx,
and model.onnx holds the quantizers as standard QuantizeLinear/DequantizeLinear pairs that ONNX Runtime runs
(NNCF's default, OpenVINO's FakeQuantize in the org.openvinotoolkit domain, is not an ONNX Runtime op).
Before: torch.export failed on NNCF's quantizers, exit 2, and no IR was written either."""

import os

import numpy as np
import pytest
import torch
import yaml

from conftest import copy_airport_subset, run_here
from conftest import imported_snapshot

os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")


@pytest.mark.slow
def test_export_onnx_of_a_qat_checkpoint_writes_the_ir_and_an_onnx_runtime_model(work_dir_0200, tmp_path,
                                                                                   one_torch_thread):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (requirements.txt) is not installed")
    import onnx
    import openvino as ov
    ann, _ = copy_airport_subset(str(tmp_path / "data"), n=2)
    root = str(tmp_path / "data")
    snap, _ = imported_snapshot()
    r = run_here([work_dir_0200 / "compress.py", "--train-ann-files", ann, "--train-data-roots", root,
                  "--save-checkpoints-to", tmp_path / "qat", "--batch-size", "2", "--workers", "0", "--input-size",
                  "64", "--nncf-quantization", "--load-weights", snap, "--epochs", "1"], cwd=work_dir_0200)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "ir"
    r = run_here([work_dir_0200 / "export.py", "--load-weights", tmp_path / "qat" / "latest.pth", "--save-model-to",
                  out, "--onnx"], cwd=work_dir_0200)
    assert r.returncode == 0, r.stderr[-3000:]
    info = yaml.safe_load((out / "export_info.yaml").read_text())
    assert set(info["files"]) == {"model.xml", "model.bin", "model.onnx"} and info["onnx"]["outputs"]
    assert any(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(str(out / "model.xml")).get_ops())
    model = onnx.load(str(out / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and {n.domain for n in model.graph.node} == {""}, ops
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).uniform(0, 255, (1, 3, 64, 64)).astype(np.float32)
    got = session.run(None, {"image": image})
    # the same network in PyTorch (NNCF's simulated quantization): INT8 rounding differs a little
    from ote_detection.apis.task import Task
    from ote_detection.export.adapters import adapter_for
    task = Task(str(work_dir_0200 / "template.yaml"))
    net, size = task.load_snapshot(str(tmp_path / "qat" / "latest.pth"))
    module = adapter_for(net.detector.bbox_head).raw_module(net.eval(), size).eval()
    with torch.no_grad():
        ref = [t.numpy() for t in module(torch.from_numpy(image))]
    assert [o.name for o in session.get_outputs()] == list(info["onnx"]["outputs"])
    for a, b in zip(got, ref):
        assert a.shape == b.shape and np.abs(a - b).mean() < 0.05, (np.abs(a - b).mean(), np.abs(b).mean())
