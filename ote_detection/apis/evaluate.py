"""Evaluation entry point behind the work dir's eval.py: snapshots (.pth) and OpenVINO IR (.xml/.bin)."""

import logging

import yaml

from ..formats.convert import load_dataset
from ..formats.wider import WIDER_GT_FILES, find_wider_gt_dir, find_wider_images_dir  # noqa: F401 (re-exported)
from ..inference.deploy import common_frame_hw
from ..inference.detection_cache import DetectionCache
from ..inference.predictor import detect_images
from ..evaluation import WiderFaceGT, evaluate_detections
from ..evaluation.metrics import format_metrics_table, metrics_to_yaml_entries
from ..evaluation.size_report import face_size_report, format_size_report, size_report_entries
from ..utils.cli import check_batch_pixels
from ..utils.errors import OteError
from ..utils.fileio import atomic_write_text, check_writable_dir, check_writable_file
from ..artefacts.kinds import IR, Checkpoint, open_artefact
from ..inference.factory import artefact_complexity, detection_settings, make_predictor
from .task import Task

log = logging.getLogger(__name__)


def _detect_cached(predictor, settings, weights, paths, keys, cache, batch_size, desc):
    key = cache.key(weights, settings, paths) if cache.cache_dir else None
    cached = cache.load(key, expected=len(paths)) if key else None
    if cached is not None:
        log.info("%s: detections taken from the cache (%s)", desc, cache.cache_dir)
        return dict(zip(keys, cached))
    dets = detect_images(predictor, paths, keys, batch_size=batch_size, desc=desc)
    if key:
        cache.save(key, [dets[k] for k in keys])
    return dets


def evaluate(template, load_weights, test_ann_files=None, test_data_roots=None, save_metrics_to=None,
             wider_dir=None, wider_gt_dir=None, save_pr_curves=None, precision="f32", batch_size=8,
             cache_dir=None, threads=None, input_size=None, keep_ratio=None, tile=None, size_report_thr=0.5,
             data_format="coco", test_subset=None):
    """Compute the template's metrics for a snapshot or an IR; write metrics.yaml; return {key: value}.

    ``input_size``: run a snapshot at another input size than its own: (w, h), or (w, None) for a width
    with the height from the test frames' aspect (letterboxed); an IR has its export size. ``tile``:
    options of tiled inference (see ``make_predictor``). With test annotation files, the recall by face
    size (``evaluation/size_report.py``) at score ``size_report_thr`` is printed and saved under its own
    keys; WIDER e/m/h are computed at the evaluated input size. ``data_format``: of the test files, coco or a
    Datumaro format name (``formats/convert.py``); ``test_subset``: the subset(s) of such a dataset read (default:
    its only one, else its test or val subset: ``formats.convert.pick_subsets``)."""
    task = Task(template)
    if not test_ann_files and not wider_dir:
        raise OteError("nothing to evaluate on: give --test-ann-files/--test-data-roots or --wider-dir")
    # everything that can fail without computing is checked first: outputs writable, the weights
    # belong to this work dir, the data loads (every image decodes, every annotation fits its image)
    if save_metrics_to:
        check_writable_file(save_metrics_to, "--save-metrics-to file")
    if save_pr_curves:
        check_writable_dir(save_pr_curves, "--save-pr-curves folder")
    # (also checks a half-given COCO pair)
    test_set = load_dataset(test_ann_files, test_data_roots, data_format, test_subset, "test", task.classes)
    coco = test_set.load() if test_set else None
    wider_gt = wider_images = None
    if wider_dir:
        wider_images = find_wider_images_dir(wider_dir)
        wider_gt = find_wider_gt_dir(wider_dir, wider_gt_dir)
    # the geometry: 'Wx' takes its height from the test frames (inference.deploy.deployment_geometry)
    artefact = open_artefact(load_weights, expect=(Checkpoint, IR))  # read once: a snapshot or an IR
    predictor = make_predictor(task, artefact, precision, threads, input_size=input_size, keep_ratio=keep_ratio,
                               batch_size=batch_size, tile=tile,
                               frame_hw=common_frame_hw(coco["images"]) if coco is not None else None)
    input_size = predictor.input_size
    try:  # bounded before any image is read (an IR runs one image at a time)
        if isinstance(artefact, Checkpoint):
            check_batch_pixels(min(int(batch_size), len(coco["images"]) if coco else int(batch_size)), input_size,
                               given=batch_size)
    except ValueError as exc:
        raise OteError(str(exc)) from None
    log.info("evaluating at input %dx%d (%s%s)", input_size[0], input_size[1],
             "letterboxed" if predictor.keep_ratio else "stretched", ", tiled" if tile is not None else "")
    cache = DetectionCache(cache_dir, template=task.name)
    settings = detection_settings(task, predictor, artefact, precision, batch_size) if cache.cache_dir else None
    wanted = [m["key"] for m in task.template["metrics"]]
    metrics = {}
    if coco is not None:
        images = coco["images"]
        dets = _detect_cached(predictor, settings, load_weights, [i["path"] for i in images],
                              [i["id"] for i in images], cache, batch_size, "test set")
        keys = [k for k in ("ap", "ap_64x64") if k in wanted]
        metrics.update(evaluate_detections(coco, dets, keys, pr_curves_dir=save_pr_curves))
        size_report = face_size_report(coco, dets, score_thr=size_report_thr)
    if wider_dir:
        gt = WiderFaceGT(wider_gt)
        found = gt.find_images(wider_images)
        if not found:
            raise OteError(f"{wider_dir}: no WIDER FACE val image found (expected <event>/<name>.jpg or <name>.jpg)")
        log.info("WIDER FACE: %d of %d val images present in %s", len(found), len(gt.image_keys), wider_images)
        names = sorted(found)
        dets = _detect_cached(predictor, settings, load_weights, [found[n] for n in names], names,
                              cache, batch_size, "WIDER val")
        wider = gt.evaluate(dets, pr_curves_dir=save_pr_curves)
        metrics.update({k: v for k, v in wider.items() if k.startswith("widerface_")})
        metrics["wider_images"] = wider.get("n_images", len(names))
    provenance = predictor.provenance
    if "size" in wanted or "complexity" in wanted:
        # the evaluated artefact's own figures: a pruned snapshot's or IR's, a foreign IR's own graph
        gflops, mparams, counted_from = artefact_complexity(provenance, predictor)
        metrics["complexity"], metrics["size"] = round(gflops, 2), round(mparams, 2)
        log.info("size and complexity of %s: from %s", load_weights, counted_from)
    # reference figures only for an artefact shown to be this template's model
    template_metrics = task.template["metrics"] if provenance.own else \
        [{k: v for k, v in m.items() if k != "value"} for m in task.template["metrics"]]
    entries = metrics_to_yaml_entries(metrics, template_metrics, include_extra=True)
    entries.append({"key": "input_size", "display_name": "Evaluated input size (w x h)", "unit": "px",
                    "value": f"{input_size[0]}x{input_size[1]}"})
    entries.append({"key": "evaluated", "display_name": "Evaluated artefact", "unit": "",
                    "value": provenance.describe(task.name)})
    entries.append({"key": "reference_template", "display_name": "Template of the reference figures", "unit": "",
                    "value": task.name if provenance.own else None})
    print(f"Evaluated: {provenance.describe(task.name)}")
    print(format_metrics_table(metrics, template_metrics))
    if not provenance.own:
        print(f"Reference: none shown; {task.name}'s figures do not describe this {provenance.kind}")
    if coco is not None:
        entries += size_report_entries(size_report)
        metrics.update({e["key"]: e["value"] for e in size_report_entries(size_report)})
        print(format_size_report(size_report, title=f"Recall at IoU 0.5 by face size (original pixels), input "
                                                    f"{input_size[0]}x{input_size[1]}"))
    if save_metrics_to:
        atomic_write_text(save_metrics_to, yaml.safe_dump({"metrics": entries}, sort_keys=False))
    return metrics
