"""compress.py: NNCF quantization (QAT) to an INT8 IR, NNCF magnitude sparsity, torch-pruning filter pruning.

Real NNCF, real OpenVINO, real images, tiny settings (64-256 px, 2 images, 1-2 epochs). Starting weights:
the Open Model Zoo 0200 IR imported into a snapshot (quantizing an untrained model diverges).
NNCF compiles a C++ extension on first use: run_tests.sh keeps it in .torch_extensions.
"""

import copy
import json
import os
import re

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO, SHARED, copy_airport_subset, need_shared, run_here, run_tool, template_path
from conftest import imported_snapshot, real_images

os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(REPO, ".torch_extensions"))

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = os.path.join(REPO, "model_templates", "face-detection", "face-detection-0200", "compression_config.json")


def _compress(work_dir, data, out, *flags):
    """compress.py on ``data`` at 64x64, batch 2, in this process (test_outputs_and_configs.py runs it as a
    process of its own)."""
    ann, root = data
    env_args = ["--train-ann-files", ann, "--train-data-roots", root, "--save-checkpoints-to", str(out),
                "--batch-size", "2", "--workers", "0", "--input-size", "64"]
    return run_here([os.path.join(str(work_dir), "compress.py"), *env_args, *flags], cwd=str(work_dir))


def _tiny_config(tmp_path, **changes):
    """The template's compression config with some parts changed (short schedules for tests)."""
    with open(CONFIG, encoding="utf-8") as f:
        cfg = json.load(f)
    for part, fn in changes.items():
        fn(cfg[part])
    path = tmp_path / "compression_config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


@pytest.fixture(scope="module")
def airport2(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("airport2"))
    ann, _ = copy_airport_subset(root, n=2)
    return ann, root


@pytest.mark.slow
def test_no_algorithm_is_one_line_error(work_dir_0200, airport2, tmp_path):
    r = _compress(work_dir_0200, airport2, tmp_path / "out", "--load-weights", str(work_dir_0200 / "model.py"))
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "no compression algorithm enabled" in lines[0], r.stderr
    from ote_detection.apis.compress import compress
    from ote_detection.utils.errors import OteError
    ann, root = airport2
    with pytest.raises(OteError, match="not supported"):
        compress(str(work_dir_0200 / "template.yaml"), ann, root, str(tmp_path / "out"), nncf_sparsity=True,
                 nncf_pruning=True, load_weights="x.pth")
    with pytest.raises(OteError, match="--load-weights"):
        compress(str(work_dir_0200 / "template.yaml"), ann, root, str(tmp_path / "out"), nncf_quantization=True)


@pytest.mark.slow
def test_quantized_ir_runs_int8_close_to_fp32():
    """QAT model of 0200 (NNCF range init on real images) -> IR with FakeQuantize; its convolutions run
    in u8 on the CPU and its detections on a real frame are those of the FP32 model, within a tolerance."""
    from ote_detection.apis.task import Task
    from ote_detection.compression.quantization import is_nncf_model, quantize_model
    from ote_detection.artefacts.checkpoint import load_weights
    from ote_detection.inference.predictor import TorchPredictor
    from ote_detection.export.exporter import convert_to_openvino
    from ote_detection.export.openvino_export import save_openvino
    from ote_detection.inference.openvino_predictor import OpenVINOPredictor, match_detections
    from ote_detection.models.inference import InferenceModel

    snapshot, _ = imported_snapshot()
    task = Task(template_path())
    det = task.build_detector()
    load_weights(det, snapshot)
    det.eval()
    size = (256, 256)
    frames = [cv2.imread(p) for p in real_images(n_airport=3, n_wider=2)]
    fp32 = TorchPredictor(InferenceModel(det, task.img_norm_cfg), size)
    calib = [(fp32.preprocess(f)[0].flip(0) / 255)[None] for f in frames[1:]]  # RGB 0..1, as the model takes
    q = quantize_model(copy.deepcopy(det), calib)
    assert is_nncf_model(q) and not is_nncf_model(det)
    model, _ = convert_to_openvino(InferenceModel(q, task.img_norm_cfg).eval(), size)
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) >= 60
    xml = os.path.join(os.path.dirname(snapshot), "int8", "model.xml")
    save_openvino(model, xml)
    pred = OpenVINOPredictor(xml, precision="f32", threads=1)
    precisions = [op.get_rt_info()["runtimePrecision"].astype(str) for op in pred.compiled.get_runtime_model().get_ops()
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    assert precisions and all(p in ("u8", "i8") for p in precisions), precisions
    ref = fp32.predict_frames(frames[:1])[0]
    out = pred.predict_frames(frames[:1])[0]
    assert out.shape[1] == 6 and len(ref) and len(out)
    m = match_detections(ref, out, min_score=0.5)
    # the FP32 model's confident faces are found by the INT8 IR at nearly the same place and score
    assert m["matched"] >= 1 and not m["unmatched_a"], m
    assert m["min_iou"] > 0.7 and m["max_score_diff"] < 0.3, m


@pytest.mark.slow
def test_compress_quantization_checkpoint_resumes_and_evaluates(work_dir_0200, airport2, tmp_path):
    from ote_detection.apis.evaluate import evaluate
    from ote_detection.compression import restore_compressed_model
    from ote_detection.artefacts.checkpoint import load_checkpoint_file
    snapshot, _ = imported_snapshot()
    def fewer_samples(part):
        part["nncf_config"]["compression"][0]["initializer"] = {"range": {"num_init_samples": 2},
                                                                "batchnorm_adaptation": {"num_bn_adaptation_samples": 2}}
    config = _tiny_config(tmp_path, nncf_quantization=fewer_samples)
    out = tmp_path / "q"
    r = _compress(work_dir_0200, airport2, out, "--nncf-quantization", "--load-weights", snapshot, "--epochs", "1",
                  "--compression-config", config)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = load_checkpoint_file(str(out / "latest.pth"))
    comp = ckpt["meta"]["compression"]
    assert comp["parts"] == ["nncf_quantization"] and comp["state"]["quantized"] and comp["nncf"]
    assert ckpt["meta"]["epoch"] == 1 and ckpt["meta"]["input_size"] == [64, 64]
    assert any("__nncf_hooks" in k for k in ckpt["state_dict"])
    # the config's lr (OTE's 0.00025 / 10, docs/templates.md), fixed policy (OTE's _delete_ of the lr_config)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.000025)
    r = _compress(work_dir_0200, airport2, out, "--nncf-quantization", "--resume-from", str(out / "latest.pth"),
                  "--epochs", "2", "--compression-config", config)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = load_checkpoint_file(str(out / "latest.pth"))
    assert resumed["meta"]["epoch"] == 2 and resumed["meta"]["compression"]["nncf"] == comp["nncf"]
    from ote_detection.apis.task import Task
    model = restore_compressed_model(Task(template_path()).build_detector(), resumed)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 64, 64))
    ann, root = airport2
    metrics = evaluate(str(work_dir_0200 / "template.yaml"), str(out / "latest.pth"), test_ann_files=ann,
                       test_data_roots=root)
    for key in ("ap", "ap_64x64", "size", "complexity"):
        assert key in metrics


@pytest.mark.slow
def test_sparsity_reaches_configured_level_at_configured_step(work_dir_0200, airport2, tmp_path):
    from ote_detection.artefacts.checkpoint import load_checkpoint_file
    snapshot, _ = imported_snapshot()

    def short(part):
        part["nncf_config"]["compression"][0]["params"].update(multistep_sparsity_levels=[0.2, 0.5],
                                                               multistep_steps=[1])
    config = _tiny_config(tmp_path, nncf_sparsity=short)
    out = tmp_path / "s"
    r = _compress(work_dir_0200, airport2, out, "--nncf-sparsity", "--load-weights", snapshot, "--epochs", "2",
                  "--compression-config", config)
    assert r.returncode == 0, r.stderr[-3000:]
    for epoch, level in ((1, 0.2), (2, 0.5)):
        # the level reached is reported after each epoch, as pruning and quantization report theirs
        assert re.search(rf"sparsity: {100 * level:.1f}% of the weights of \d+ masked tensors are zero after epoch "
                         rf"{epoch} \(scheduled level {level:.2f}\)", r.stdout + r.stderr), r.stderr[-3000:]
        ckpt = load_checkpoint_file(str(out / f"epoch_{epoch}.pth"))
        assert ckpt["meta"]["compression"]["state"]["sparsity_level"] == level
        masks = [v for k, v in ckpt["state_dict"].items() if k.endswith("binary_mask")]
        assert len(masks) >= 60  # every convolution weight
        zeros = sum(int((~m.bool()).sum()) for m in masks) / sum(m.numel() for m in masks)
        assert zeros == pytest.approx(level, abs=0.01)


@pytest.mark.slow
def test_pruning_removes_filters_and_the_pruned_model_exports_and_runs(work_dir_0200, airport2, tmp_path):
    from ote_detection.apis.export import export
    from ote_detection.apis.task import Task
    from ote_detection.artefacts.checkpoint import load_checkpoint_file
    from ote_detection.inference.openvino_predictor import OpenVINOPredictor
    snapshot, _ = imported_snapshot()

    def short(part):
        part["nncf_config"]["compression"][0]["params"].update(pruning_init=0.1, pruning_target=0.3, pruning_steps=1)
    config = _tiny_config(tmp_path, nncf_pruning=short)
    out = tmp_path / "p"
    r = _compress(work_dir_0200, airport2, out, "--nncf-pruning", "--load-weights", snapshot, "--epochs", "2",
                  "--compression-config", config)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = load_checkpoint_file(str(out / "latest.pth"))
    shapes = ckpt["meta"]["compression"]["shapes"]
    assert ckpt["meta"]["compression"]["state"]["pruning_ratio"] == pytest.approx(0.3)
    original = Task(template_path()).build_detector()
    orig = {n: m.out_channels for n, m in original.named_modules() if isinstance(m, torch.nn.Conv2d)}
    # the expansion convolutions of the inverted residual blocks: 30% of their filters are gone
    expansion = [n for n in orig if n.startswith("backbone") and n.endswith("conv1.conv") and "unit" in n]
    kept = sum(shapes[n][1] for n in expansion) / sum(orig[n] for n in expansion)
    assert kept == pytest.approx(0.7, abs=0.03)
    # the head's depthwise convolutions (OTE's ignored scopes) and the prediction convolutions keep theirs
    for n in orig:
        if n.startswith("bbox_head"):
            assert shapes[n][1] == orig[n], n
    params = sum(v.numel() for k, v in ckpt["state_dict"].items() if not k.endswith(("running_mean", "running_var",
                                                                                      "num_batches_tracked")))
    assert params < 0.8 * sum(p.numel() for p in original.parameters())
    xml = export(str(work_dir_0200 / "template.yaml"), str(out / "latest.pth"), str(tmp_path / "export"))
    pred = OpenVINOPredictor(xml, precision="f32", threads=1)
    dets = pred.predict_frames([cv2.imread(real_images(n_airport=1, n_wider=0)[0])])[0]
    assert dets.ndim == 2 and dets.shape[1] == 6 and np.isfinite(dets).all()


@pytest.mark.slow
def test_ptq_with_accuracy_control_writes_an_int8_ir_that_eval_reads(work_dir_0200, airport2, tmp_path):
    """--ptq: NNCF's quantize_with_accuracy_control on the IR, metric = COCO AP on the val files; at --input-size
    Wx (letterboxed, the height from the 16:9 training frames, as train.py takes it), with NNCF's full bias
    correction for these few calibration images."""
    import yaml
    snap, _ = imported_snapshot()
    ann, root = airport2
    out = tmp_path / "ptq"
    r = run_here([os.path.join(str(work_dir_0200), "compress.py"), "--train-ann-files", ann, "--train-data-roots",
                  root, "--val-ann-files", ann, "--val-data-roots", root, "--save-checkpoints-to", str(out),
                  "--load-weights", snap, "--nncf-quantization", "--ptq", "--max-drop", "5", "--input-size", "160x"],
                 cwd=str(work_dir_0200))
    assert r.returncode == 0, r.stderr[-3000:]
    info = yaml.safe_load((out / "ptq_info.yaml").read_text())
    assert info["input_size"] == [160, 96] and info["bias_correction"] == "full", info
    assert info["ap_fp32_ir"] > 0 and info["ap_fp32_ir"] - info["ap_int8_ir"] <= 5.0 + 1e-6, info
    import openvino as ov
    model = ov.Core().read_model(str(out / "model.xml"))
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops()) > 0
    r = run_here([os.path.join(str(work_dir_0200), "eval.py"), "--load-weights", str(out / "model.xml"),
                  "--test-ann-files", ann, "--test-data-roots", root, "--cache-dir", ""])
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow
def test_export_int8_at_a_deployment_size_records_ap_before_and_after(work_dir_0200, airport2, tmp_path):
    """export.py --input-size Wx --int8: PTQ with accuracy control on the IR at that (letterboxed) size;
    model.xml is the INT8 IR (u8/i8 convolutions on this CPU), model_fp32.xml the FP32 one, export_info.yaml
    has the AP of both and the precision the CPU runs; eval.py reads the folder."""
    import openvino as ov
    import yaml
    snap, _ = imported_snapshot()
    ann, root = airport2
    out = tmp_path / "int8"
    r = run_here([os.path.join(str(work_dir_0200), "export.py"), "--load-weights", snap, "--save-model-to", str(out),
                  "--input-size", "320x", "--int8", "--val-ann-files", ann, "--val-data-roots", root,
                  "--calibration-images", os.path.join(root, "train"), "--max-drop", "5"], cwd=str(work_dir_0200))
    assert r.returncode == 0, r.stderr[-3000:]
    info = yaml.safe_load((out / "export_info.yaml").read_text())
    q = info["int8"]
    assert info["precision"].startswith("INT8") and info["input"]["input_size"] == [320, 192]
    assert q["ap_fp32_ir"] > 0 and q["ap_fp32_ir"] - q["ap_int8_ir"] <= 5.0 + 1e-6, q
    assert q["calibration_images"] == 2 and q["validation_images"] == 2
    assert set(q["cpu"]["convolution_precisions"]) & {"u8", "i8"}, q["cpu"]
    assert set(info["sha256"]) == {"model.xml", "model.bin", "model_fp32.xml", "model_fp32.bin"}
    core = ov.Core()
    assert sum(op.get_type_name() == "FakeQuantize" for op in core.read_model(str(out / "model.xml")).get_ops()) > 0
    assert not any(op.get_type_name() == "FakeQuantize" for op in core.read_model(str(out / "model_fp32.xml")).get_ops())
    r = run_here([os.path.join(str(work_dir_0200), "eval.py"), "--load-weights", str(out / "model.xml"),
                  "--test-ann-files", ann, "--test-data-roots", root, "--cache-dir", ""])
    assert r.returncode == 0, r.stderr[-3000:]
    # nothing to calibrate on: one line, exit code 2
    r = run_here([os.path.join(str(work_dir_0200), "export.py"), "--load-weights", snap, "--save-model-to",
                  str(tmp_path / "x"), "--int8"], cwd=str(work_dir_0200))
    assert r.returncode == 2 and "--int8 needs images" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_compress_on_two_processes_keeps_ranks_in_step(work_dir_0200, airport2, tmp_path, capfd):
    """compress.py --gpu-num 2 (gloo on the CPU): quantization + sparsity, and pruning, give the same kind of
    checkpoint as one process; the plugin compares every state entry (weights, quantizer scales, masks,
    pruned shapes) across the ranks at each epoch and at the end; only rank 0 writes. The tool runs here,
    its two ranks are processes of their own (their lines come on file descriptor 2)."""
    from ote_detection.artefacts.checkpoint import load_checkpoint_file
    snapshot, _ = imported_snapshot()

    def fewer(part):
        part["nncf_config"]["compression"][0]["initializer"] = {"range": {"num_init_samples": 2}}

    def short_sparsity(part):
        part["nncf_config"]["compression"][0]["params"].update(multistep_sparsity_levels=[0.2, 0.5],
                                                               multistep_steps=[1])

    def short_pruning(part):
        part["nncf_config"]["compression"][0]["params"].update(pruning_init=0.1, pruning_target=0.3, pruning_steps=1)
    config = _tiny_config(tmp_path, nncf_quantization=fewer, nncf_sparsity=short_sparsity,
                          nncf_pruning=short_pruning)
    for flags, name in ((["--nncf-quantization", "--nncf-sparsity"], "qs"), (["--nncf-pruning"], "p")):
        out = tmp_path / name
        r = _compress(work_dir_0200, airport2, out, *flags, "--load-weights", snapshot, "--epochs", "2",
                      "--compression-config", config, "--gpu-num", "2")
        ranks = capfd.readouterr().err
        said = r.stderr + ranks
        assert r.returncode == 0, said[-3000:]
        assert "Grad strides do not match" not in said, said[-3000:]  # engine.distributed.wrap_ddp
        assert ranks.count("state identical on 2 ranks") >= 3, ranks[-3000:]  # 2 epochs + the end
        assert sorted(os.listdir(out)) == ["epoch_1.pth", "epoch_2.pth", "latest.pth"], os.listdir(out)
        ckpt = load_checkpoint_file(str(out / "latest.pth"))
        comp = ckpt["meta"]["compression"]
        assert ckpt["meta"]["epoch"] == 2 and not any(k.startswith("module.") for k in ckpt["state_dict"])
        if name == "qs":
            # the ranks' masks agree without a broadcast (NNCF's mask order follows each process's string
            # hashing: sparsity.sort_hooks; DDP pairs buffers across ranks by position)
            assert "differed across ranks" not in r.stderr, r.stderr[-3000:]
            assert comp["state"]["quantized"] and comp["nncf"] and comp["state"]["sparsity_level"] == 0.5
            assert any("__nncf_hooks" in k for k in ckpt["state_dict"])
        else:
            assert comp["state"]["pruning_ratio"] == pytest.approx(0.3) and comp["shapes"]


class _Pointwise(torch.nn.Module):
    """3x3 conv, 1x1 conv, depthwise 3x3, 1x1 conv: the weight shapes with size-1 dimensions of 0200."""

    def __init__(self):
        super().__init__()
        self.convs = torch.nn.ModuleList([torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 16, 1),
                                          torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.Conv2d(16, 4, 1)])

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        return x


@pytest.mark.slow
def test_ddp_gradients_have_their_parameters_strides_under_nncf(tmp_path):
    """NNCF's sparsity masks on channels_last 1x1 and depthwise weights give those weights gradients whose
    strides differ from theirs on the size-1 dimensions (what made DDP warn "Grad strides do not match bucket
    view strides" under compress.py --gpu-num 2); under ``wrap_ddp`` (real DDP, one gloo process in this
    one) every gradient has its parameter's strides and the same values as without DDP. The masks are in the
    order of their names, not of the process's string hashing."""
    import torch.distributed as dist
    from ote_detection.compression.sparsity import apply_sparsity
    from ote_detection.engine.distributed import wrap_ddp
    from nncf.torch.function_hook.wrapper import get_hook_storage
    torch.manual_seed(0)
    model = apply_sparsity(_Pointwise(), torch.zeros(1, 3, 8, 8), 0.2).to(memory_format=torch.channels_last)
    masks = list(get_hook_storage(model).post_hooks)  # the same order in every process (sparsity.sort_hooks)
    assert len(masks) == 4 and masks == sorted(masks)
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    model(x).square().sum().backward()
    plain = {name: p.grad.clone() for name, p in model.named_parameters()}
    # the cause, without the hooks: the masked 1x1 and depthwise weights
    assert [n for n, p in model.named_parameters() if p.grad.stride() != p.stride()] == [
        "convs.1.weight", "convs.2.weight", "convs.3.weight"]
    model.zero_grad(set_to_none=True)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrap_ddp(model, "cpu")(x).square().sum().backward()
    finally:
        dist.destroy_process_group()
    for name, p in model.named_parameters():
        assert p.grad.stride() == p.stride(), (name, p.grad.stride(), p.stride())
        assert torch.equal(p.grad, plain[name]), name


def _qat_int8_ir_ap(work_dir, snapshot, tmp_path):
    """compress.py --nncf-quantization with the work dir's own compression_config.json for one epoch (one
    iteration) on wider_train10, exported to an INT8 IR; returns {set: (FP32 AP, INT8 IR AP)} (COCO AP %,
    the INT8 IR with OpenVINO at the f32 hint) for airport and wider_val5."""
    from ote_detection.apis.evaluate import evaluate
    need_shared("data", "wider_train10")
    train = (os.path.join(SHARED, "data", "wider_train10", "annotations_coco.json"),
             os.path.join(SHARED, "data", "wider_train10"))
    out = tmp_path / "qat"
    r = run_here([os.path.join(str(work_dir), "compress.py"), "--train-ann-files", train[0], "--train-data-roots",
                  train[1], "--save-checkpoints-to", str(out), "--batch-size", "20", "--workers", "0",
                  "--nncf-quantization", "--load-weights", snapshot, "--epochs", "1"], cwd=str(work_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "use --ptq" in r.stderr, r.stderr[-3000:]
    r = run_here([os.path.join(str(work_dir), "export.py"), "--load-weights", str(out / "latest.pth"),
                  "--save-model-to", str(tmp_path / "ir")], cwd=str(work_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    tpl = str(work_dir / "template.yaml")
    sets = {"airport": (os.path.join(SHARED, "data", "airport", "annotation_faces_train.json"),
                        os.path.join(SHARED, "data", "airport")),
            "wider_val5": (os.path.join(SHARED, "data", "wider_val5", "annotations_coco.json"),
                           os.path.join(SHARED, "data", "wider_val5"))}
    result = {}
    for key, (ann, root) in sets.items():
        fp32 = evaluate(tpl, snapshot, test_ann_files=ann, test_data_roots=root)["ap"]
        int8 = evaluate(tpl, str(tmp_path / "ir" / "model.xml"), test_ann_files=ann, test_data_roots=root,
                        precision="f32")["ap"]
        result[key] = (fp32, int8)
    return result


@pytest.mark.slow
def test_qat_with_the_template_settings_keeps_ap_close_to_fp32(work_dir_0200, tmp_path):
    """Issue 19's goal at a tiny setting, a real run: compress.py --nncf-quantization with 0200's own
    compression_config.json (range init on un-augmented images, BatchNorm frozen, lr 0.000025) for one
    iteration on wider_train10, exported to an INT8 IR, COCO AP with OpenVINO (f32): on wider_val5 within the
    goal's 1.0 point of the FP32 model; on airport within 1.5, NOT the goal's 1.0. This test's one iteration
    measured (AMD EPYC, AVX512-BF16; deterministic run to run): airport 12.69 vs 13.84, wider_val5 10.94 vs
    11.46. The gap with the template's 2 epochs (bench_compression.py): airport INT8 IR 12.32 vs FP32 IR 13.84
    (-1.52, 0.52 beyond the goal); the loss is in the quantization itself,
    before any fine-tuning (NNCF's simulation 12.70 at 0 iterations, mostly the activation quantizers), and no
    range estimator, preset, init-image set, float first convolution or distillation measured in
    benchmarks/bench_quant_settings.py closes it on a 10-image set (docs/templates.md). OTE's settings lost
    1.4-2.3. compress.py says to prefer --ptq on a set this small."""
    snapshot, _ = imported_snapshot()
    ap = _qat_int8_ir_ap(work_dir_0200, snapshot, tmp_path)
    for key, tolerance in (("airport", 1.5), ("wider_val5", 1.0)):
        fp32, int8 = ap[key]
        assert fp32 > 10 and int8 >= fp32 - tolerance, (key, fp32, int8)


@pytest.mark.slow
def test_qat_0204_with_the_template_settings_keeps_ap_within_one_point(tmp_path):
    """Issue 19's goal reached for 0204, a real run: its compression_config.json (the same QAT settings as
    0200's: plain range init, no BN adaptation, BatchNorm frozen, lr 0.000025) for one iteration on
    wider_train10, exported to an INT8 IR: COCO AP with OpenVINO (f32) within 1.0 point of the FP32 model on
    airport and on wider_val5 (this test's one iteration measured 13.66 / 18.01; the template's 2 epochs in
    bench_compression.py 13.76 / 18.15, OTE's settings 12.40 / 16.62; FP32 IR 14.27 / 18.30)."""
    work = tmp_path / "wd0204"
    r = run_tool([os.path.join(REPO, "tools", "instantiate_template.py"), template_path("face-detection-0204"),
                  str(work), "--do-not-load-snapshot"])
    assert r.returncode == 0, r.stderr
    snapshot, _ = imported_snapshot("face-detection-0204")
    ap = _qat_int8_ir_ap(work, snapshot, tmp_path)
    for key in ("airport", "wider_val5"):
        fp32, int8 = ap[key]
        assert fp32 > 10 and int8 >= fp32 - 1.0, (key, fp32, int8)


@pytest.mark.slow
def test_compression_without_training_reaches_the_final_levels_at_once(tmp_path):
    """``compress_without_training`` (bench_recovery.py's "right after compression" state): the template's
    pruning part at its 30 % target and the sparsity part at its schedule's last level (0.5) in one step, no
    fine-tuning: the kept weights are the snapshot's, the checkpoint rebuilds and runs; quantization has no
    level and is refused with one line."""
    from ote_detection.apis.compress import compress_without_training
    from ote_detection.apis.task import Task
    from ote_detection.compression import restore_compressed_model
    from ote_detection.compression.plugin import CompressionPlugin
    from ote_detection.compression.config import load_compression_settings
    from ote_detection.artefacts.checkpoint import load_checkpoint_file
    from ote_detection.utils.errors import OteError
    snapshot, _ = imported_snapshot()
    original = load_checkpoint_file(snapshot)["state_dict"]
    task = Task(template_path())

    state = compress_without_training(template_path(), snapshot, str(tmp_path / "p.pth"), nncf_pruning=True)
    assert state == {"pruning_ratio": pytest.approx(0.3)}
    ckpt = load_checkpoint_file(str(tmp_path / "p.pth"))
    assert ckpt["meta"]["epoch"] == 0 and ckpt["meta"]["compression"]["parts"] == ["nncf_pruning"]
    shapes = ckpt["meta"]["compression"]["shapes"]
    orig = {n: m.out_channels for n, m in task.build_detector().named_modules() if isinstance(m, torch.nn.Conv2d)}
    expansion = [n for n in orig if n.startswith("backbone") and n.endswith("conv1.conv") and "unit" in n]
    assert sum(shapes[n][1] for n in expansion) / sum(orig[n] for n in expansion) == pytest.approx(0.7, abs=0.03)
    pruned = restore_compressed_model(task.build_detector(), ckpt).eval()
    with torch.no_grad():
        outs = pruned(torch.zeros(1, 3, 256, 256))
    assert all(torch.isfinite(t).all() for t in _flat(outs))

    state = compress_without_training(template_path(), snapshot, str(tmp_path / "s.pth"), nncf_sparsity=True)
    assert state == {"sparsity_level": 0.5}
    sd = load_checkpoint_file(str(tmp_path / "s.pth"))["state_dict"]
    masks = {k: v for k, v in sd.items() if k.endswith("binary_mask")}
    assert len(masks) >= 60
    zeros = sum(int((~m.bool()).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert zeros == pytest.approx(0.5, abs=0.01)
    # no fine-tuning: every weight and BatchNorm statistic is the snapshot's (NNCF keeps the dense weight)
    same = [k for k in original if k in sd and torch.equal(sd[k], original[k])]
    assert len(same) == len(original), sorted(set(original) - set(same))[:3]

    settings = load_compression_settings(task.template_path, task.template, ["nncf_quantization"])
    with pytest.raises(OteError, match="post-training quantization"):
        CompressionPlugin(settings).apply_final_levels(task.build_detector())


def _flat(out):
    if isinstance(out, (list, tuple)):
        for x in out:
            yield from _flat(x)
    else:
        yield out


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the processes in /proc (Linux)")
def test_a_compression_process_killed_by_a_signal_is_one_line(work_dir_0200, airport2, tmp_path):
    """compress.py --gpu-num 2, kill -9 of process 1 after epoch 1: one line naming the process and the signal,
    no traceback, no 'leaked semaphore' warnings (issue 24; train.py's case: tests/engine/test_distributed.py)."""
    import sys
    from conftest import assert_one_line_for_the_killed_process, kill_rank_1_after_epoch_1
    snapshot, _ = imported_snapshot()

    def short_sparsity(part):
        part["nncf_config"]["compression"][0]["params"].update(multistep_sparsity_levels=[0.2, 0.5],
                                                               multistep_steps=[1])
    config = _tiny_config(tmp_path, nncf_sparsity=short_sparsity)
    ann, root = airport2
    out = tmp_path / "out"
    code, err = kill_rank_1_after_epoch_1(
        [sys.executable, str(work_dir_0200 / "compress.py"), "--train-ann-files", ann, "--train-data-roots", root,
         "--save-checkpoints-to", str(out), "--batch-size", "2", "--workers", "0", "--input-size", "64",
         "--nncf-sparsity", "--load-weights", snapshot, "--epochs", "30", "--compression-config", config,
         "--gpu-num", "2"], out)
    assert_one_line_for_the_killed_process(code, err)
