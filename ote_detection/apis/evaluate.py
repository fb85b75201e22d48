"""Evaluation entry point behind the work dir's eval.py: snapshots (.pth) and OpenVINO IR (.xml/.bin)."""

import hashlib
import json
import logging
import os

import numpy as np
import yaml

from ..data.coco import load_coco_files
from ..engine.inference import TorchPredictor, detect_images
from ..evaluation import WiderFaceGT, evaluate_detections
from ..evaluation.metrics import format_metrics_table, metrics_to_yaml_entries
from ..utils.complexity import model_complexity
from ..utils.errors import OteError
from ..utils.fileio import atomic_path, atomic_write_text, sha256sum
from .task import Task

log = logging.getLogger(__name__)

IR_SUFFIXES = (".xml", ".bin")


def is_ir(path):
    return str(path).lower().endswith(IR_SUFFIXES)


def make_predictor(task, weights, precision="f32", threads=None):
    """(predictor, input_size (w, h)) for a snapshot or an IR."""
    if is_ir(weights):
        from ..export.openvino_predictor import OpenVINOPredictor
        predictor = OpenVINOPredictor(weights, precision=precision, threads=threads)
        return predictor, predictor.input_size
    model, input_size = task.load_snapshot(weights)
    return TorchPredictor(model), input_size


class DetectionCache:
    """Detections per (weights file content, precision, input size, image list), as .npz files."""

    def __init__(self, cache_dir):
        self.cache_dir = cache_dir

    def key(self, weights, precision, input_size, paths):
        digest = hashlib.sha256()
        files = [weights] if not is_ir(weights) else [os.path.splitext(weights)[0] + s for s in IR_SUFFIXES]
        for f in files:
            digest.update(sha256sum(f).encode())
        digest.update(json.dumps([precision if is_ir(weights) else "torch", list(input_size)]).encode())
        for p in paths:
            st = os.stat(p)
            digest.update(f"{os.path.abspath(p)}:{st.st_size}:{st.st_mtime_ns}".encode())
        return digest.hexdigest()[:32]

    def load(self, key):
        path = os.path.join(self.cache_dir, key + ".npz")
        if not self.cache_dir or not os.path.isfile(path):
            return None
        with np.load(path) as data:
            return [data[f"d{i}"] for i in range(len(data.files))]

    def save(self, key, dets):
        if not self.cache_dir:
            return
        os.makedirs(self.cache_dir, exist_ok=True)
        with atomic_path(os.path.join(self.cache_dir, key + ".npz")) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **{f"d{i}": d for i, d in enumerate(dets)})


def _detect_cached(predictor, weights, precision, input_size, paths, keys, cache, batch_size, desc):
    key = cache.key(weights, precision, input_size, paths) if cache.cache_dir else None
    cached = cache.load(key) if key else None
    if cached is not None and len(cached) == len(paths):
        log.info("%s: detections taken from the cache (%s)", desc, cache.cache_dir)
        return dict(zip(keys, cached))
    dets = detect_images(predictor, paths, input_size, keys, batch_size=batch_size, desc=desc)
    if key:
        cache.save(key, [dets[k] for k in keys])
    return dets


WIDER_GT_FILES = ("wider_face_val.mat", "wider_easy_val.mat", "wider_medium_val.mat", "wider_hard_val.mat")


def find_wider_gt_dir(wider_dir, wider_gt_dir=None):
    """The folder with the official .mat files: given, or where WIDER's archives put them near the images."""
    if wider_gt_dir:
        candidates = [wider_gt_dir]
    else:
        candidates = [os.path.join(wider_dir, *rel) for rel in
                      [(), ("..",), ("..", "wider_face_split"), ("..", "..", "wider_face_split"),
                       ("..", "eval_tools", "ground_truth"), ("..", "..", "eval_tools", "ground_truth")]]
    for folder in candidates:
        if all(os.path.isfile(os.path.join(folder, f)) for f in WIDER_GT_FILES):
            return os.path.normpath(folder)
    where = wider_gt_dir or f"{wider_dir} or the wider_face_split / eval_tools/ground_truth folders beside it"
    raise OteError(f"WIDER FACE ground truth ({', '.join(WIDER_GT_FILES)}) not found in {where}; give --wider-gt-dir")


def evaluate(template, load_weights, test_ann_files=None, test_data_roots=None, save_metrics_to=None,
             wider_dir=None, wider_gt_dir=None, save_pr_curves=None, precision="f32", batch_size=8,
             cache_dir=None, threads=None):
    """Compute the template's metrics for a snapshot or an IR; write metrics.yaml; return {key: value}."""
    task = Task(template)
    if not test_ann_files and not wider_dir:
        raise OteError("nothing to evaluate on: give --test-ann-files/--test-data-roots or --wider-dir")
    predictor, input_size = make_predictor(task, load_weights, precision, threads)
    batch_size = 1 if is_ir(load_weights) else batch_size
    cache = DetectionCache(cache_dir)
    wanted = [m["key"] for m in task.template["metrics"]]
    metrics = {}
    if test_ann_files:
        coco = load_coco_files(test_ann_files, test_data_roots, task.classes)
        images = coco["images"]
        dets = _detect_cached(predictor, load_weights, precision, input_size, [i["path"] for i in images],
                              [i["id"] for i in images], cache, batch_size, "test set")
        keys = [k for k in ("ap", "ap_64x64") if k in wanted]
        metrics.update(evaluate_detections(coco, dets, keys, pr_curves_dir=save_pr_curves))
    if wider_dir:
        gt = WiderFaceGT(find_wider_gt_dir(wider_dir, wider_gt_dir))
        found = gt.find_images(wider_dir)
        if not found:
            raise OteError(f"{wider_dir}: no WIDER FACE val image found (expected <event>/<name>.jpg or <name>.jpg)")
        log.info("WIDER FACE: %d of %d val images present in %s", len(found), len(gt.image_keys), wider_dir)
        names = sorted(found)
        dets = _detect_cached(predictor, load_weights, precision, input_size, [found[n] for n in names], names,
                              cache, batch_size, "WIDER val")
        wider = gt.evaluate(dets, pr_curves_dir=save_pr_curves)
        metrics.update({k: v for k, v in wider.items() if k.startswith("widerface_")})
        metrics["wider_images"] = wider.get("n_images", len(names))
    if "size" in wanted or "complexity" in wanted:
        gflops, mparams = model_complexity(task.build_detector(), input_size)
        metrics["complexity"], metrics["size"] = round(gflops, 2), round(mparams, 2)
    entries = metrics_to_yaml_entries(metrics, task.template["metrics"], include_extra=True)
    print(format_metrics_table(metrics, task.template["metrics"]))
    if save_metrics_to:
        atomic_write_text(save_metrics_to, yaml.safe_dump({"metrics": entries}, sort_keys=False))
    return metrics
