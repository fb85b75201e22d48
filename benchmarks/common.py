"""What the benchmark scripts share: where things are, the data sets of the figures, and the measuring helpers.

A script in ``benchmarks/`` runs as ``python benchmarks/bench_x.py`` (its folder is then first on ``sys.path``)
and imports this module as ``common``; no script imports another script. Everything here calls ote_detection's
entry points (``apis``) and the classes they return, except ``train_dataset`` and ``load_experiment``, which
build training data and a validator as ``apis.train`` does (the one place where the benchmarks reach into it),
and ``checkpoint_complexity``, which rebuilds a checkpoint's model as ``eval.py`` does.
"""

import os
import statistics
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
AIRPORT = os.path.join(ROOT, "data", "airport")  # the repository's copy of OTE's toy set (10 frames, 41 faces)
AIRPORT_ANN = os.path.join(AIRPORT, "annotation_faces_train.json")
TEMPLATES = os.path.join(ROOT, "model_templates", "face-detection")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(ROOT, ".torch_extensions"))

# The shared data sets of the figures: name -> (COCO annotation file, image root).
DATA = {
    "airport": (os.path.join(SHARED, "data", "airport", "annotation_faces_train.json"),
                os.path.join(SHARED, "data", "airport")),
    "wider_val5": (os.path.join(SHARED, "data", "wider_val5", "annotations_coco.json"),
                   os.path.join(SHARED, "data", "wider_val5")),
    "wider_train10": (os.path.join(SHARED, "data", "wider_train10", "annotations_coco.json"),
                      os.path.join(SHARED, "data", "wider_train10")),
}

from ote_detection.apis.evaluate import evaluate  # noqa: E402  (after TORCH_EXTENSIONS_DIR is set)
from ote_detection.apis.import_weights import import_openvino_weights  # noqa: E402
from ote_detection.apis.task import Task  # noqa: E402
from ote_detection.artefacts.checkpoint import load_weights  # noqa: E402
from ote_detection.artefacts.kinds import Checkpoint, open_artefact  # noqa: E402
from ote_detection.apis.train import build_train_dataset, make_validator  # noqa: E402
from ote_detection.compression import restore_compressed_model  # noqa: E402
from ote_detection.compression.sparsity import sparsity_stats  # noqa: E402
from ote_detection.data.coco import load_coco_files  # noqa: E402
from ote_detection.inference.openvino_predictor import OpenVINOPredictor  # noqa: E402
from ote_detection.utils.complexity import model_complexity  # noqa: E402


def template(name):
    """The template.yaml of a template name (``face-detection-0200`` or just ``0200``), or ``name`` if it is a file."""
    if os.path.isfile(name):
        return name
    if not name.startswith("face-detection-"):
        name = f"face-detection-{name}"
    return os.path.join(TEMPLATES, name, "template.yaml")


def omz_ir(name, precision="FP16"):
    """The shared Open Model Zoo IR of template ``name`` at ``precision`` (FP16, FP16-INT8, FP32)."""
    return os.path.join(SHARED, "models", "omz", name, precision, name + ".xml")


def stage(path, fn, log):
    """Run ``fn`` unless ``path`` exists (a finished stage of an earlier run); returns seconds or None."""
    if os.path.exists(path):
        return None
    start = time.time()
    fn()
    seconds = time.time() - start
    log[os.path.basename(os.path.dirname(path)) or path] = round(seconds, 1)
    return seconds


def train_dataset(task, ann_files=AIRPORT_ANN, data_roots=AIRPORT):
    """The training dataset of ``task`` (a ``Task``) as train.py builds it, by default on the airport frames."""
    return build_train_dataset(task.cfg, ann_files, data_roots, task.classes)


def checkpoint_complexity(name, ckpt):
    """(GFLOPs, Mparams, share of zero weights among the masked ones or None) of the model of checkpoint ``ckpt``
    of template ``name`` at the template's input size: a compressed checkpoint's own shapes (pruned), a sparse
    one counted dense (NNCF's wrapper is not counted by the FLOPs counter)."""
    task = Task(template(name))
    det = task.build_detector()
    snapshot = open_artefact(ckpt, expect=(Checkpoint,))
    ckpt_data = snapshot.data
    if snapshot.meta.compression:
        model = restore_compressed_model(det, ckpt_data)
    else:
        load_weights(det, ckpt, ckpt=ckpt_data)
        model = det
    zeros = None
    if any("binary_mask" in k for k in ckpt_data["state_dict"]):
        zeros = sparsity_stats(model)["sparsity_level"]
        model = det
    gflops, mparams = model_complexity(model, task.input_size)
    return gflops, mparams, zeros


def ap_of(name, weights, sets):
    """COCO AP (%) of ``weights`` (snapshot or IR) of template ``name`` on each data set of ``sets`` (f32)."""
    out = {}
    for key in sets:
        ann, root = DATA[key]
        out[key] = evaluate(template(name), weights, test_ann_files=ann, test_data_roots=root, precision="f32",
                            batch_size=1)["ap"]
    return out


def test_image(size):
    """An airport frame resized to ``size`` (w, h) as the network's input [1, 3, h, w] float32 BGR 0..255
    (random pixels where the shared data is absent)."""
    import cv2
    path = os.path.join(SHARED, "data", "airport", "train", "image_000000.jpg")
    img = cv2.imread(path) if os.path.isfile(path) else None
    if img is None:
        img = np.random.default_rng(0).uniform(0, 255, (size[1], size[0], 3)).astype(np.uint8)
    img = cv2.resize(img, tuple(size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None].astype(np.float32))


def interleaved_ms(predictors, img, runs, warmup=5):
    """Median ms of ``predictor.infer(img)`` per predictor, the runs interleaved so that outside load hits all
    alike."""
    for p in predictors:
        for _ in range(warmup):
            p.infer(img)
    times = [[] for _ in predictors]
    for _ in range(runs):
        for i, p in enumerate(predictors):
            t = time.perf_counter()
            p.infer(img)
            times[i].append((time.perf_counter() - t) * 1000)
    return [statistics.median(t) for t in times]


def precision_used(predictor):
    """The inference precision OpenVINO compiled an ``OpenVINOPredictor`` for (e.g. ``f32``, ``bf16``)."""
    used = predictor.compiled.get_property("INFERENCE_PRECISION_HINT")
    return used.get_type_name() if hasattr(used, "get_type_name") else str(used)


def latency(irs, runs, threads, precision, warmup=5):
    """(median ms per IR, precision used) of IRs of one input size, one synchronous request, batch 1."""
    preds = [OpenVINOPredictor(x, precision=precision, threads=threads) for x in irs]
    return interleaved_ms(preds, test_image(preds[0].input_size), runs, warmup), precision_used(preds[0])


def latency_table(title, labels, irs, runs, results):
    """Print the latency of ``irs`` for 1 and 2 threads at the f32 hint and the CPU default, with the ratios
    ``irs[0]`` / each, and add the rows to ``results['latency'][title]``."""
    print(f"\n{title}: median ms of {runs} runs, batch 1 (ratio = {labels[0]} / each)")
    print(f"{'threads':>7s} {'precision':>12s} " + " ".join(f"{lb:>10s}" for lb in labels) + "   ratios")
    rows = []
    for threads in (1, 2):
        for precision in ("f32", "default"):
            ms, used = latency(irs, runs, threads, precision)
            label = precision if precision != "default" else f"def={used}"
            ratios = [ms[0] / m for m in ms[1:]]
            print(f"{threads:7d} {label:>12s} " + " ".join(f"{m:10.2f}" for m in ms) + "   "
                  + " ".join(f"{r:.2f}x" for r in ratios), flush=True)
            rows.append({"threads": threads, "precision": label, "ms": dict(zip(labels, ms))})
    results.setdefault("latency", {})[title] = rows


def load_experiment(model, work, train, snapshot=None, sets=("airport", "wider_val5")):
    """The QAT experiments' set-up (bench_qat_curve.py, bench_quant_settings.py): the Open Model Zoo IR of
    ``model`` imported into ``work`` (reused; or ``snapshot``, e.g. bench_compression.py's fine-tuned 0205 start),
    its ``Task``, the training dataset ``train`` (a key of ``DATA``) and its image paths, the float detector, and
    ``ap(model)``: AP % on ``sets`` (PyTorch, as validation during training)."""
    os.makedirs(work, exist_ok=True)
    tpl = template(model)
    snap = snapshot or os.path.join(work, model + ".pth")
    if not os.path.exists(snap):
        import_openvino_weights(tpl, omz_ir(model), snap, verify=False,
                                calibration_images=DATA["airport"][1])  # as bench_compression.py
    task = Task(tpl)
    dataset = train_dataset(task, *DATA[train])
    inner = dataset.dataset if hasattr(dataset, "times") else dataset
    paths = [img["path"] for img in inner.coco["images"]]
    vals = {k: make_validator(load_coco_files(*DATA[k], task.classes), task.input_size, task.img_norm_cfg, 8, 0)
            for k in sets}
    det = task.build_detector()
    load_weights(det, snap)
    det.eval()

    def ap(m):
        m.eval()
        return {k: round(float(v(m)["ap"]), 2) for k, v in vals.items()}

    return task, dataset, paths, det, ap
