#!/usr/bin/env python3
"""Fine-tuning for one camera: AP on frames it never saw, before and after, at the deployment geometry.

The 10 annotated airport frames (../shared/data/airport, 1920x1080) are split in two halves: the first 5
(image_000000-04, 16 faces) to train on, the last 5 (image_000005-09, 25 faces) to test on. The start is
Open Model Zoo's face-detection-0200 IR (FP16) imported into the template's model with its BatchNorm
statistics calibrated on the training half (tools/import_openvino_weights.py --calibrate-bn). For each
width (default 960 and 640: train.py --input-size 960x / 640x, i.e. 960x544 / 640x384 letterboxed for
16:9 frames):

* ``imported``: the imported snapshot exported at that geometry (export.py --input-size Wx);
* ``<pipeline>``: the imported snapshot fine-tuned on the training half (train.py --load-weights
  --input-size Wx --epochs E --base-learning-rate LR --batch-size B), exported with no size flag (the
  snapshot carries its geometry), for each training pipeline: ``ote`` (the template's: OTE's SSD
  augmentation, MinIoURandomCrop + Resize, here letterboxed) and ``deployment`` (_base_/datasets/
  wider_face_deployment_scale.py: DeploymentScaleCrop, OTE's photometric part);

each as an FP32 IR and as an INT8 IR (export.py --int8: NNCF post-training quantization with accuracy
control on the training half, at most 1 AP point lost there). Every IR is evaluated on the test half with
OpenVINO at the f32 precision hint, --threads threads: COCO AP@[.5:.95], AP50, and the recall (IoU 0.5) at
the operating score (--score-thr, the demo's default 0.5). Run times are wall seconds of each stage on this
machine (the CPU is printed); finished stages in --work are reused, so a later run with more widths or
pipelines only adds what is missing.

``--pipeline-speed N``: instead, ms per training sample of each pipeline (interleaved).
``--int8-settings``: after the table's stages, each FP32 IR quantized again with ``nncf.quantize`` (no accuracy
control) under NNCF settings that differ in one thing, calibrated on the training half: ``fast-bc`` (NNCF's
fast bias correction, export.py's before), ``full-bc`` (its full bias correction, export.py's for up to 50
calibration images), ``fast-bc+views`` (the 5 frames plus 8 deployment-scale views of each, zoom 0.8-1.25,
every other one mirrored: 45 inputs), ``fast-bc+float-ends`` (the first convolution and the prediction
convolutions left in float). Each is measured on the test half by the INT8 error of the prediction
convolutions' outputs (sum of squared differences from the FP32 IR's, % of the FP32 outputs' variance, over
the 5 frames and their mirror images: free of the AP's noise on 25 faces), AP and recall.
``--sweep-lrs 0.002,0.006,0.02``: instead, the learning rate x epochs sweep the recipe's defaults come from
(first width and pipeline; one run per learning rate, its checkpoints at --sweep-epochs measured with PyTorch).

    python benchmarks/bench_finetune.py [--widths 960,640] [--pipelines ote,deployment] [--epochs 24]
        [--base-learning-rate 0.002] [--batch-size 2] [--no-int8] [--work outputs/bench_finetune]
    python benchmarks/bench_finetune.py --widths 640 --pipelines deployment --sweep-lrs 0.002,0.006,0.02 --sweep-epochs 12,24
    python benchmarks/bench_finetune.py --widths 960 --pipeline-speed 60
    python benchmarks/bench_finetune.py --int8-settings
"""

import argparse
import json
import os
import sys
import time

from machine import cpu_model as cpu_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
AIRPORT = os.path.join(SHARED, "data", "airport")
AIRPORT_ANN = os.path.join(AIRPORT, "annotation_faces_train.json")
OMZ_IR = os.path.join(SHARED, "models", "omz", "face-detection-0200", "FP16", "face-detection-0200.xml")
TEMPLATE = os.path.join(ROOT, "model_templates", "face-detection", "face-detection-0200", "template.yaml")
# training pipeline -> the _base_ dataset file of the work dir's model.py
PIPELINES = {"ote": "wider_face.py", "deployment": "wider_face_deployment_scale.py"}


def split_airport(work):
    """(train.json, test.json): the first and the last 5 frames of the airport annotation file."""
    with open(AIRPORT_ANN, encoding="utf-8") as f:
        data = json.load(f)
    images = sorted(data["images"], key=lambda i: i["file_name"])
    halves = {"train": images[:len(images) // 2], "test": images[len(images) // 2:]}
    paths = {}
    for name, imgs in halves.items():
        ids = {i["id"] for i in imgs}
        part = dict(data, images=imgs, annotations=[a for a in data["annotations"] if a["image_id"] in ids])
        paths[name] = os.path.join(work, f"airport_{name}5.json")
        with open(paths[name], "w", encoding="utf-8") as f:
            json.dump(part, f)
    return paths["train"], paths["test"]


class Stages:
    """Finished stages are kept in ``results.json`` (and their files in the work folder)."""

    def __init__(self, work):
        self.path = os.path.join(work, "results.json")
        self.data = {}
        if os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.data = json.load(f)

    def run(self, key, fn, output=None):
        """``fn()``'s result (a JSON-able value) with its wall seconds, or the stored one."""
        done = self.data.get(key)
        if done is not None and (output is None or os.path.exists(output)):
            return done
        start = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] {key} ...", flush=True)
        value = fn()
        done = {"value": value, "seconds": round(time.time() - start, 1)}
        self.data[key] = done
        with open(self.path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(self.data, f, indent=1)
        os.replace(self.path + ".tmp", self.path)
        print(f"[{time.strftime('%H:%M:%S')}] {key}: {done['seconds']} s {value if not isinstance(value, str) else ''}",
              flush=True)
        return done


def work_dir_for(work, pipeline):
    """A work dir of 0200 whose model.py trains with ``pipeline``'s _base_ dataset file."""
    from ote_detection.apis.instantiate import instantiate
    wd = os.path.join(work, f"wd_{pipeline}")
    if not os.path.isfile(os.path.join(wd, "template.yaml")):
        instantiate(TEMPLATE, wd, load_snapshot=False)
        path = os.path.join(wd, "model.py")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        base = "datasets/" + PIPELINES["ote"]
        if base not in text:
            sys.exit(f"{path}: no {base} in its _base_ list")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace(base, "datasets/" + PIPELINES[pipeline]))
    return os.path.join(wd, "template.yaml")


def measure(template, xml, test_ann, threads, score_thr):
    """AP, AP50 and recall at ``score_thr`` (%) on the test half of an IR (OpenVINO, f32 hint) or a snapshot
    (PyTorch FP32), each at its own geometry."""
    from ote_detection.inference.factory import make_predictor
    from ote_detection.apis.task import Task
    from ote_detection.data.coco import load_coco_files
    from ote_detection.evaluation.coco_ap import coco_ap
    from ote_detection.evaluation.size_report import face_size_report
    from ote_detection.inference.predictor import detect_images
    coco = load_coco_files(test_ann, AIRPORT, quiet=True)
    predictor = make_predictor(Task(template), xml, precision="f32", threads=threads)
    images = coco["images"]
    dets = detect_images(predictor, [i["path"] for i in images], [i["id"] for i in images], batch_size=1,
                         progress=False)
    ap, curves = coco_ap(coco, dets, return_curves=True)
    recall = face_size_report(coco, dets, score_thr=score_thr)["recall_all"]
    return {"ap": round(100 * ap, 2), "ap50": round(100 * curves["AP@.50"][2], 2), "recall": round(recall, 2),
            "input": "%dx%d%s" % (*predictor.input_size, " letterboxed" if predictor.keep_ratio else "")}


def sweep(a, st, snap, train_ann, test_ann):
    """Learning rate x epochs: one run of max(--sweep-epochs) epochs per learning rate (the template's schedule
    does not depend on the number of epochs before its first step at epoch 40, so the checkpoint of epoch
    e is the run of e epochs), its checkpoints at each of --sweep-epochs measured with PyTorch FP32."""
    from ote_detection.apis.train import train
    epochs = sorted(int(e) for e in a.sweep_epochs.split(","))
    width, pipeline = int(a.widths.split(",")[0]), a.pipelines.split(",")[0]
    template = work_dir_for(a.work, pipeline)
    rows = []
    for lr in (float(x) for x in a.sweep_lrs.split(",")):
        out = os.path.join(a.work, f"sweep_{pipeline}_{width}_lr{lr:g}")
        done = st.run(f"sweep train {pipeline} {width}x lr {lr:g}", lambda: train(
            template, train_ann, AIRPORT, out, load_weights=snap, input_size=(width, None), gpu_num=0, workers=0,
            progress=False, overwrite=True, epochs=epochs[-1], base_learning_rate=lr, batch_size=a.batch_size,
            seed=a.seed) and None, os.path.join(out, f"epoch_{epochs[-1]}.pth"))
        for e in epochs:
            m = st.run(f"sweep eval {pipeline} {width}x lr {lr:g} epoch {e}", lambda: measure(
                template, os.path.join(out, f"epoch_{e}.pth"), test_ann, a.threads, a.score_thr))
            rows.append(dict(lr=lr, epochs=e, train_s=done["seconds"], **m["value"]))
    print(f"\nlearning rate x epochs, {pipeline} pipeline, {rows[0]['input']}, batch {a.batch_size}, PyTorch FP32, "
          f"airport test half; CPU {cpu_name()}\n")
    print("| lr | epochs | AP | AP50 | recall |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lr']:g} | {r['epochs']} | {r['ap']:.1f} | {r['ap50']:.1f} | {r['recall']:.1f} |")


def pipeline_speed(a, train_ann):
    """ms per training sample (decode, augmentation, letterbox or crop, normalisation) of each pipeline at the
    first width, the pipelines' samples interleaved so that outside load hits them alike; the ratio to OTE's."""
    import statistics
    from ote_detection.apis.task import Task
    from ote_detection.apis.train import build_train_dataset
    from ote_detection.inference.deploy import common_frame_hw
    width = int(a.widths.split(",")[0])
    datasets = {}
    for pipeline in PIPELINES:
        task = Task(work_dir_for(a.work, pipeline))
        with open(train_ann, encoding="utf-8") as f:
            hw = common_frame_hw(json.load(f)["images"])
        size, _ = task.resolve_geometry((width, None), frame_hw=hw)  # as train.py --input-size Wx
        datasets[pipeline] = build_train_dataset(task.cfg, train_ann, AIRPORT, task.classes, quiet=True)
    times = {k: [] for k in datasets}
    for i in range(a.pipeline_speed):
        for name, ds in datasets.items():
            start = time.perf_counter()
            ds[i % len(ds)]
            times[name].append(1000 * (time.perf_counter() - start))
    ote = statistics.median(times["ote"])
    print(f"training samples at {size[0]}x{size[1]} letterboxed, median of {a.pipeline_speed} (interleaved), 1 process; "
          f"CPU {cpu_name()}")
    for name, t in times.items():
        print(f"  {name:16s} {statistics.median(t):7.1f} ms/sample  ({statistics.median(t) / ote:.2f}x OTE's)")


INT8_SETTINGS = ("fast-bc", "full-bc", "fast-bc+views", "fast-bc+float-ends")


def prediction_convolutions(model):
    """Friendly names of an IR's convolutions from which no other convolution is reachable: the head's
    prediction layers (class scores and box deltas per level)."""
    convs = ("Convolution", "GroupConvolution")
    feeds_conv = set()
    for op in reversed(model.get_ordered_ops()):  # consumers before producers
        if any(t.get_node().get_type_name() in convs or t.get_node().get_instance_id() in feeds_conv
               for out in op.outputs() for t in out.get_target_inputs()):
            feeds_conv.add(op.get_instance_id())
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in convs and op.get_instance_id() not in feeds_conv]


def deployment_views(paths, size, views, seed=0):
    """``views`` deployment-scale views of each frame (the training pipeline's DeploymentScaleCrop at its
    default zoom range 0.8-1.25, letterboxed, every other view mirrored) as [1, 3, h, w] float32 BGR arrays,
    as the IR takes them."""
    import random
    import numpy as np
    from ote_detection.data.images import read_image
    from ote_detection.data.scale_crop import DeploymentScaleCrop
    crop, out = DeploymentScaleCrop(img_scale=size, keep_ratio=True), []
    random.seed(seed)  # the transform draws from the random module, as in training
    for path in paths:
        frame = read_image(path)
        for k in range(views):
            img = crop({"img": frame})["img"]  # no boxes: the first window drawn
            img = img[:, ::-1] if k % 2 else img
            out.append(np.ascontiguousarray(img.transpose(2, 0, 1), np.float32)[None])
    return out


def int8_settings(a, rows, train_ann, test_ann):
    """The --int8-settings table: every FP32 IR of ``rows`` quantized under each of INT8_SETTINGS."""
    import numpy as np
    import openvino as ov
    import nncf
    from ote_detection.compression.ptq import calibration_tensors, post_processing_scope
    from ote_detection.data.coco import load_coco_files
    from ote_detection.evaluation.coco_ap import coco_ap
    from ote_detection.evaluation.size_report import face_size_report
    from ote_detection.inference.openvino_predictor import OpenVINOPredictor
    from ote_detection.inference.predictor import detect_images
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": a.threads}
    test, train = (load_coco_files(p, AIRPORT, quiet=True) for p in (test_ann, train_ann))
    print(f"\nINT8 settings (nncf.quantize, no accuracy control; calibration on the training half), test half; "
          f"CPU {cpu_name()}\n")
    print("| input | weights | setting | head error % | AP | AP50 | recall | INT8 - FP32 AP | quantization s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("precision") != "fp32":
            continue
        fp32 = core.read_model(os.path.join(a.work, "ir", f"{r['variant']}_{r['width']}_fp32", "model.xml"))
        shape = fp32.inputs[0].get_partial_shape()
        size = (shape[3].get_length(), shape[2].get_length())
        frames = calibration_tensors([i["path"] for i in train["images"]], size, keep_ratio=True)
        tests = calibration_tensors([i["path"] for i in test["images"]], size, keep_ratio=True)
        tests += [np.ascontiguousarray(t[..., ::-1]) for t in tests]
        heads = prediction_convolutions(fp32)

        def head_outputs(model):
            model = model.clone()
            ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
            model.add_outputs([ops[n].output(0) for n in heads])
            compiled = core.compile_model(model, "CPU", config)
            outs = compiled.outputs[-len(heads):]
            return [[res[o] for o in outs] for res in (compiled(t) for t in tests)]

        reference = head_outputs(fp32)
        for setting in INT8_SETTINGS:
            names = list(post_processing_scope(fp32).names)
            if setting.endswith("float-ends"):
                names += [op.get_friendly_name() for op in fp32.get_ordered_ops()
                          if op.get_type_name() == "Convolution"][:1] + heads
            calib = frames + (deployment_views([i["path"] for i in train["images"]], size, 8)
                              if setting.endswith("views") else [])
            start = time.time()
            q = nncf.quantize(fp32, nncf.Dataset(calib), preset=nncf.QuantizationPreset.MIXED,
                              subset_size=len(calib), fast_bias_correction=setting.startswith("fast"),
                              ignored_scope=nncf.IgnoredScope(names=names, validate=False))
            seconds = time.time() - start
            num = den = 0.0
            for ref, out in zip(reference, head_outputs(q)):
                for x, y in zip(ref, out):
                    num += float(((x - y) ** 2).sum())
                    den += float(((x - x.mean()) ** 2).sum())
            predictor = OpenVINOPredictor.from_compiled(q, core.compile_model(q, "CPU", config), keep_ratio=True)
            dets = detect_images(predictor, [i["path"] for i in test["images"]], [i["id"] for i in test["images"]],
                                 batch_size=1, progress=False)
            ap, curves = coco_ap(test, dets, return_curves=True)
            recall = face_size_report(test, dets, score_thr=a.score_thr)["recall_all"]
            print(f"| {r['input']} | {r['variant']} | {setting} | {100 * num / den:.3f} | {100 * ap:.1f} | "
                  f"{100 * curves['AP@.50'][2]:.1f} | {recall:.1f} | {100 * ap - r['ap']:+.1f} | {seconds:.0f} |",
                  flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="960,640", help="input widths (train.py --input-size Wx), comma-separated")
    p.add_argument("--pipelines", default="ote,deployment", help=f"training pipelines: {', '.join(PIPELINES)}")
    p.add_argument("--epochs", type=int, default=24, help="fine-tuning epochs (default: %(default)s, the recipe's)")
    p.add_argument("--base-learning-rate", type=float, default=0.002, help="train.py --base-learning-rate "
                   "(default: %(default)s; the template's warm-up applies)")
    p.add_argument("--batch-size", type=int, default=2, help="train.py --batch-size (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="train.py --seed (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch and OpenVINO threads (default 1)")
    p.add_argument("--score-thr", type=float, default=0.5, help="operating score of the recall (default 0.5)")
    p.add_argument("--no-int8", action="store_true", help="FP32 IRs only")
    p.add_argument("--max-drop", type=float, default=1.0, help="export.py --int8 --max-drop: AP points INT8 may lose "
                   "on the training half (default: %(default)s, export.py's)")
    p.add_argument("--work", default=os.path.join(ROOT, "outputs", "bench_finetune"),
                   help="folder of snapshots, IRs and results.json (finished stages are reused; a changed "
                        "schedule needs a new folder)")
    p.add_argument("--sweep-lrs", default=None, help="instead of the table: learning rates to sweep (comma-separated; "
                   "the first of --widths and --pipelines), each trained to the largest of --sweep-epochs")
    p.add_argument("--sweep-epochs", default="6,12,24", help="with --sweep-lrs: the epochs at which the checkpoints "
                   "are measured (default: %(default)s)")
    p.add_argument("--int8-settings", action="store_true", help="after the table: each FP32 IR quantized under "
                   f"NNCF settings {', '.join(INT8_SETTINGS)}, measured on the test half (see above)")
    p.add_argument("--pipeline-speed", type=int, default=0, metavar="N", help="instead of the table: time N training "
                   "samples of each pipeline at the first width (interleaved)")
    a = p.parse_args()
    for path in (AIRPORT_ANN, OMZ_IR):
        if not os.path.isfile(path):
            sys.exit(f"{path}: not found (the shared data of ote-face)")
    pipelines = [x for x in a.pipelines.split(",") if x]
    if any(x not in PIPELINES for x in pipelines):
        sys.exit(f"--pipelines: choose from {', '.join(PIPELINES)}")
    os.makedirs(a.work, exist_ok=True)
    import torch
    torch.set_num_threads(a.threads)
    from ote_detection.apis.export import export
    from ote_detection.apis.import_weights import import_openvino_weights
    from ote_detection.apis.train import train
    schedule = dict(epochs=a.epochs, base_learning_rate=a.base_learning_rate, batch_size=a.batch_size,
                    seed=a.seed)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs, {a.threads} thread(s); fine-tuning {schedule}",
          flush=True)
    train_ann, test_ann = split_airport(a.work)
    st = Stages(a.work)
    snap = os.path.join(a.work, "imported.pth")
    with open(train_ann, encoding="utf-8") as f:
        train_images = ",".join(os.path.join(AIRPORT, i["file_name"]) for i in json.load(f)["images"])
    st.run("import", lambda: import_openvino_weights(TEMPLATE, OMZ_IR, snap, verify=False,
                                                     calibration_images=train_images) and None, snap)
    if a.pipeline_speed:
        pipeline_speed(a, train_ann)
        return
    if a.sweep_lrs:
        sweep(a, st, snap, train_ann, test_ann)
        return
    int8 = dict(val_ann_files=train_ann, val_data_roots=AIRPORT, max_drop=a.max_drop)  # calibrated on the same images
    int8_name = "int8" if a.max_drop == 1.0 else f"int8-drop{a.max_drop:g}"
    rows = []
    for width in (int(w) for w in a.widths.split(",") if w):
        variants = [("imported", TEMPLATE, snap, (width, None))]
        for pipeline in pipelines:
            template = work_dir_for(a.work, pipeline)
            out = os.path.join(a.work, f"{pipeline}_{width}")
            last = os.path.join(out, f"epoch_{a.epochs}.pth")
            trained = st.run(f"train {pipeline} {width}x", lambda: train(
                template, train_ann, AIRPORT, out, load_weights=snap, input_size=(width, None), gpu_num=0,
                workers=0, progress=False, overwrite=True, **schedule) and None, last)
            variants.append((pipeline, template, last, None))
            rows.append({"width": width, "variant": pipeline, "stage": "train", "seconds": trained["seconds"]})
        for name, template, weights, size in variants:
            for precision in ("fp32",) + (() if a.no_int8 else (int8_name,)):
                folder = os.path.join(a.work, "ir", f"{name}_{width}_{precision}")
                done = st.run(f"export {name} {width}x {precision}", lambda: export(
                    template, weights, folder, input_size=size, int8=precision != "fp32",
                    **(int8 if precision != "fp32" else {})) and None, os.path.join(folder, "model.xml"))
                xml = os.path.join(folder, "model.xml")
                m = st.run(f"eval {name} {width}x {precision}",
                           lambda: measure(template, xml, test_ann, a.threads, a.score_thr))
                rows.append(dict(width=width, variant=name, precision=precision, export_s=done["seconds"],
                                 **m["value"]))
    print(f"\nairport test half (5 frames, 25 faces), OpenVINO f32 hint, {a.threads} thread(s); CPU {cpu_name()}")
    print(f"fine-tuning: {a.epochs} epochs, lr {a.base_learning_rate}, batch {a.batch_size} on the training half "
          f"(5 frames); recall at score >= {a.score_thr}\n")
    print("| input | weights | precision | AP | AP50 | recall | AP vs imported | INT8 - FP32 | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    ap = {(r["width"], r["variant"], r["precision"]): r["ap"] for r in rows if "ap" in r}
    train_s = {(r["width"], r["variant"]): r["seconds"] for r in rows if r.get("stage") == "train"}
    for r in rows:
        if "ap" not in r:
            continue
        gain = r["ap"] - ap.get((r["width"], "imported", r["precision"]), float("nan"))
        int8 = r["ap"] - ap[(r["width"], r["variant"], "fp32")] if r["precision"] != "fp32" else None
        print(f"| {r['input']} | {r['variant']} | {r['precision'].upper()} | {r['ap']:.1f} | {r['ap50']:.1f} | "
              f"{r['recall']:.1f} | {gain:+.1f} | {'' if int8 is None else f'{int8:+.1f}'} | "
              f"{train_s.get((r['width'], r['variant']), '')} |")
    print("\nrun time (s): " + "; ".join(f"{k}: {v['seconds']}" for k, v in st.data.items()))
    if a.int8_settings:
        int8_settings(a, rows, train_ann, test_ann)


if __name__ == "__main__":
    main()
