#!/usr/bin/env python3
"""Compression figures: AP and IR latency before and after INT8 (QAT and PTQ), filter pruning, large inputs.

Starting point per model: the Open Model Zoo FP16 IR's weights imported into the template's PyTorch
model (BatchNorm statistics calibrated on the airport frames, as tools/import_openvino_weights.py
--calibrate-bn does). face-detection-0205 has no such IR (and no ImageNet weights offline): its start
snapshot is fine-tuned here (``START``: train.py --load-backbone with the imported 0204 snapshot, whose
mobilenetv2_w1 backbone is 0205's, neck and head from their initialisation, on wider_train10; the schedule
is in ``START`` and docs/templates.md), or given with --start NAME=SNAPSHOT. Then, in --work (kept, so a rerun
skips finished stages):

* ``fp32``: export.py of the snapshot (FP32 IR);
* ``qat``: compress.py --nncf-quantization with the template's compression_config (issue 19: range init
  on un-augmented images, BatchNorm frozen, no BN adaptation; docs/templates.md) trained on --train
  (default wider_train10), exported to an INT8 IR (FakeQuantize);
* ``qat-ote``: the same with OTE's quantization settings (range init and BN adaptation on augmented
  training batches, BatchNorm in train mode: ``"init_images": "augmented", "freeze_bn": false``);
* ``ptq``: compress.py --nncf-quantization --ptq (NNCF accuracy control, max drop 1 AP point on the
  validation set --ptq-val, default airport);
* ``omz-int8`` / ``omz-fp16``: Open Model Zoo's own IRs of the same model (where there are).

AP (COCO AP@[.5:.95], %) of every IR on airport and wider_val5 (OpenVINO, f32 hint); latency: one
synchronous request, batch 1, a real airport frame, median of --runs (>= 50) interleaved runs, for 1
and 2 threads, at the f32 precision hint and at the CPU default (bf16 on AMX CPUs). Ratios are FP32 IR
/ INT8 IR at the same threads and precision setting (> 1: INT8 faster).

Pruning (0200): compress.py --nncf-pruning with the config's schedule shortened (--pruning-epochs,
pruning_steps = epochs - 1), params/GFLOPs of the pruned network vs the original, AP of its IR and its
latency. Large input (0200): FP32 and QAT INT8 IR exported at --large-input (default 960x544), AP on
airport and latency.

    python benchmarks/bench_compression.py [--models face-detection-0200,face-detection-0204,face-detection-0205]
                                           [--runs 50] [--start face-detection-0205=SNAPSHOT]
"""

import argparse
import json
import os
import sys

from common import DATA, ROOT, ap_of, checkpoint_complexity, latency_table, omz_ir, stage, template

from ote_detection.apis.compress import compress
from ote_detection.apis.export import export
from ote_detection.apis.import_weights import import_openvino_weights
from ote_detection.apis.instantiate import instantiate
from ote_detection.apis.train import train

# Templates without an Open Model Zoo IR: the start snapshot is fine-tuned here (train.py's train() in a work dir
# instantiated from the template, ``model_py`` appended to its model.py) with the backbone of the imported
# snapshot of ``donor`` (train.py --load-backbone; same backbone type), the neck and head from their
# initialisation, on ``data`` (wider_train10: airport and wider_val5 stay unseen), at the template's input size.
# 0205: the backbone frozen (its BatchNorm statistics are the donor's, calibrated on the airport frames), the
# warm-up shortened to 30 iterations; the template's step at epoch 40 is kept (lr / 10 after it): 45 epochs
# of 3 iterations (10 images x RepeatDataset 2 / batch 8). docs/templates.md gives the AP it reaches.
START = {
    "face-detection-0205": dict(
        donor="face-detection-0204", data="wider_train10", epochs=45, batch_size=8, base_learning_rate=0.02,
        amp=True, seed=0,
        model_py="model = dict(backbone=dict(frozen_stages=5, norm_eval=True))\nlr_config = dict(warmup_iters=30)\n"),
}


def ote_quantization_config(work, name):
    """The template's compression config with OTE's quantization settings (before issue 19)."""
    with open(os.path.join(ROOT, "model_templates", "face-detection", name, "compression_config.json"),
              encoding="utf-8") as f:
        cfg = json.load(f)
    algo = cfg["nncf_quantization"]["nncf_config"]["compression"][0]
    algo.update(init_images="augmented", freeze_bn=False)
    algo["initializer"]["batchnorm_adaptation"] = {"num_bn_adaptation_samples": 30}
    cfg["nncf_quantization"]["total_epochs"] = 2
    path = os.path.join(work, "compression_config_ote_qat.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    return path


def start_snapshot(name, work, root, given, secs):
    """The snapshot that compression starts from: ``given`` (--start), the Open Model Zoo IR imported, or for
    a template of ``START`` one fine-tuned here from the imported donor's backbone (train.py --load-backbone)."""
    if given:
        return given
    os.makedirs(work, exist_ok=True)
    snap = os.path.join(work, "snapshot.pth")
    if name not in START:
        stage(snap, lambda: import_openvino_weights(template(name), omz_ir(name, "FP16"), snap, verify=False,
                                                    calibration_images=DATA["airport"][1]), secs)
        return snap
    recipe = dict(START[name])
    donor, data, model_py = recipe.pop("donor"), recipe.pop("data"), recipe.pop("model_py", "")
    donor_snap = start_snapshot(donor, os.path.join(root, donor), root, None, secs)
    wd = os.path.join(work, "start_work_dir")
    if not os.path.exists(os.path.join(wd, "template.yaml")):
        instantiate(template(name), wd, load_snapshot=False)
        with open(os.path.join(wd, "model.py"), "a", encoding="utf-8") as f:
            f.write("\n# bench_compression.py START recipe\n" + model_py)
    start_dir = os.path.join(work, "start")
    last = os.path.join(start_dir, f"epoch_{recipe['epochs']}.pth")  # not latest.pth: written after every epoch
    stage(last, lambda: train(os.path.join(wd, "template.yaml"), *DATA[data], start_dir, load_backbone=donor_snap,
                              gpu_num=0, workers=0, progress=False, overwrite=True, **recipe), secs)
    return last


def short_pruning_config(work, epochs):
    with open(os.path.join(ROOT, "model_templates", "face-detection", "face-detection-0200",
                           "compression_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    params = cfg["nncf_pruning"]["nncf_config"]["compression"][0]["params"]
    params["pruning_steps"] = max(1, epochs - 1)
    cfg["nncf_pruning"]["lr_config"]["warmup_iters"] = 5
    path = os.path.join(work, "compression_config_pruning.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="face-detection-0200,face-detection-0204,face-detection-0205",
                   help="comma-separated template names (0200, 0204: their Open Model Zoo IR imported; 0205: --start)")
    p.add_argument("--start", action="append", default=[], metavar="NAME=SNAPSHOT",
                   help="start snapshot of model NAME (instead of the Open Model Zoo import or START's fine-tuning)")
    p.add_argument("--work", default=os.path.join(ROOT, "outputs", "bench_compression"),
                   help="folder for snapshots, checkpoints and IRs (finished stages are reused)")
    p.add_argument("--runs", type=int, default=50, help="interleaved latency runs per IR (>= 50)")
    p.add_argument("--train", default="wider_train10", choices=sorted(DATA), help="training set of QAT/pruning")
    p.add_argument("--ptq-val", default="airport", choices=sorted(DATA), help="accuracy-control set of PTQ")
    p.add_argument("--pruning-epochs", type=int, default=4, help="epochs of the shortened pruning run (0: skip)")
    p.add_argument("--large-input", default="960x544", help="input size of the large-input comparison ('' to skip)")
    a = p.parse_args()
    if a.runs < 50:
        sys.exit("--runs must be at least 50")
    if any("=" not in x for x in a.start):
        sys.exit("--start takes NAME=SNAPSHOT")
    starts = dict(x.split("=", 1) for x in a.start)
    import openvino as ov
    import torch
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    print(f"OpenVINO {ov.get_version()}, CPU: {ov.Core().get_property('CPU', 'FULL_DEVICE_NAME')}, "
          f"{os.cpu_count()} logical CPUs", flush=True)
    results = {"seconds": {}}
    train_ann, train_root = DATA[a.train]
    for name in a.models.split(","):
        work = os.path.join(a.work, name)
        os.makedirs(work, exist_ok=True)
        secs = results["seconds"].setdefault(name, {})
        snap = start_snapshot(name, work, a.work, starts.get(name), secs)
        fp32 = os.path.join(work, "fp32", "model.xml")
        stage(fp32, lambda: export(template(name), snap, os.path.dirname(fp32)), secs)
        qat_ckpt = os.path.join(work, "qat", "latest.pth")
        stage(qat_ckpt, lambda: compress(template(name), train_ann, train_root, os.path.dirname(qat_ckpt),
                                         nncf_quantization=True, load_weights=snap, progress=False, workers=0,
                                         overwrite=True), secs)
        qat = os.path.join(work, "qat_ir", "model.xml")
        stage(qat, lambda: export(template(name), qat_ckpt, os.path.dirname(qat)), secs)
        ote_ckpt = os.path.join(work, "qat_ote", "latest.pth")
        stage(ote_ckpt, lambda: compress(template(name), train_ann, train_root, os.path.dirname(ote_ckpt),
                                         nncf_quantization=True, load_weights=snap, progress=False, workers=0,
                                         overwrite=True, compression_config=ote_quantization_config(work, name)),
              secs)
        qat_ote = os.path.join(work, "qat_ote_ir", "model.xml")
        stage(qat_ote, lambda: export(template(name), ote_ckpt, os.path.dirname(qat_ote)), secs)
        ptq = os.path.join(work, "ptq", "model.xml")
        val_ann, val_root = DATA[a.ptq_val]
        stage(ptq, lambda: compress(template(name), train_ann, train_root, os.path.dirname(ptq),
                                    nncf_quantization=True, load_weights=snap, ptq=True, max_drop=1.0,
                                    val_ann_files=val_ann, val_data_roots=val_root), secs)
        irs = {"fp32": fp32, "qat-int8": qat, "qat-ote": qat_ote, "ptq-int8": ptq}
        irs.update({k: omz_ir(name, p) for k, p in (("omz-int8", "FP16-INT8"), ("omz-fp16", "FP16"))
                    if os.path.exists(omz_ir(name, p))})
        aps = {k: ap_of(name, v, ("airport", "wider_val5")) for k, v in irs.items()}
        results.setdefault("ap", {})[name] = aps
        print(f"\n{name}: COCO AP (%), OpenVINO f32 hint; stage seconds {secs}")
        print(f"{'IR':>10s} {'airport':>8s} {'wider5':>8s}   goal: QAT within 1.0 AP of FP32")
        for k, v in aps.items():
            gap = "" if k == "fp32" else "  ({:+.2f} / {:+.2f} vs fp32)".format(
                v["airport"] - aps["fp32"]["airport"], v["wider_val5"] - aps["fp32"]["wider_val5"])
            print(f"{k:>10s} {v['airport']:8.2f} {v['wider_val5']:8.2f}{gap}", flush=True)
        print("see benchmarks/bench_qat_curve.py for AP against QAT iterations on a set this small", flush=True)
        labels = [k for k in ("fp32", "qat-int8", "ptq-int8", "omz-int8") if k in irs]
        latency_table(name, labels, [irs[k] for k in labels], a.runs, results)

        if name.endswith("0200") and a.large_input:
            size = tuple(int(v) for v in a.large_input.split("x"))
            big_fp32 = os.path.join(work, f"fp32_{a.large_input}", "model.xml")
            big_qat = os.path.join(work, f"qat_{a.large_input}", "model.xml")
            stage(big_fp32, lambda: export(template(name), snap, os.path.dirname(big_fp32), input_size=size), secs)
            stage(big_qat, lambda: export(template(name), qat_ckpt, os.path.dirname(big_qat), input_size=size), secs)
            big = {k: ap_of(name, v, ("airport",))["airport"] for k, v in (("fp32", big_fp32), ("qat-int8", big_qat))}
            results["ap"][f"{name}@{a.large_input}"] = big
            print(f"\n{name} at {a.large_input}: AP airport fp32 {big['fp32']:.2f}, qat-int8 {big['qat-int8']:.2f}")
            latency_table(f"{name}@{a.large_input}", ["fp32", "qat-int8"], [big_fp32, big_qat], a.runs, results)

        if name.endswith("0200") and a.pruning_epochs > 0:
            pr_ckpt = os.path.join(work, "pruned", "latest.pth")
            config = short_pruning_config(work, a.pruning_epochs)
            stage(pr_ckpt, lambda: compress(template(name), train_ann, train_root, os.path.dirname(pr_ckpt),
                                            nncf_pruning=True, load_weights=snap, epochs=a.pruning_epochs,
                                            compression_config=config, progress=False, workers=0,
                                            overwrite=True), secs)
            pr_ir = os.path.join(work, "pruned_ir", "model.xml")
            stage(pr_ir, lambda: export(template(name), pr_ckpt, os.path.dirname(pr_ir)), secs)
            g0, p0, _ = checkpoint_complexity(name, snap)
            g1, p1, _ = checkpoint_complexity(name, pr_ckpt)
            pr_ap = ap_of(name, pr_ir, ("airport", "wider_val5"))
            results["pruning"] = {"original": {"gflops": g0, "mparams": p0},
                                  "pruned": {"gflops": g1, "mparams": p1, "ap": pr_ap},
                                  "epochs": a.pruning_epochs}
            print(f"\npruning ({a.pruning_epochs} epochs on {a.train}, target 30% of the filters): "
                  f"{p0:.3f} -> {p1:.3f} Mp, {g0:.3f} -> {g1:.3f} GFLOPs; AP airport {pr_ap['airport']:.2f}, "
                  f"wider5 {pr_ap['wider_val5']:.2f} (FP32 {aps['fp32']['airport']:.2f} / "
                  f"{aps['fp32']['wider_val5']:.2f})")
            latency_table(f"{name} pruned", ["fp32", "pruned"], [fp32, pr_ir], a.runs, results)
    with open(os.path.join(a.work, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print(f"\nresults: {os.path.join(a.work, 'results.json')}")


if __name__ == "__main__":
    main()
