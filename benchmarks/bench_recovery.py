#!/usr/bin/env python3
"""Filter pruning and magnitude sparsity of face-detection-0200 with a recovery you can see (issue 19.2).

Start: the Open Model Zoo 0200 FP16 IR's weights imported (BatchNorm statistics calibrated on the airport
frames; bench_compression.py's ``snapshot.pth``, reused when --work is bench_compression's). For (a) filter
pruning to 30 % and (b) magnitude sparsity at 50 %, three states, each exported to an FP32 IR:

* ``before``: the imported snapshot;
* ``at once``: the template's compression part applied at its final level with no fine-tuning
  (``apis.compress.compress_without_training``: the plugin's ``apply_final_levels``, the functions
  compress.py's hooks call);
* ``recovered``: compress.py's training (``apis.compress.compress``) with the template's
  ``compression_config.json`` shortened to fit this CPU (written to --work, the keys changed are printed):
  the level is reached after --level-epochs N epochs (pruning: OTE's exponential 0.1 -> 0.3 over N
  ``pruning_steps``; sparsity: OTE's multistep 0.2 / 0.4 / 0.5 at epochs N/2 and N), then --recovery-epochs
  M more epochs, SGD (model.py's momentum and weight decay) at the fixed learning rate --lr, batch
  --batch-size, on --train (default wider_train10 + the airport frames, the set the project's benchmarks call
  the airport crops: data/airport, 10 frames);
* a control, ``fine-tuned``: the uncompressed snapshot trained the same N + M epochs at the same lr
  (train.py's ``train``), to tell the recovery from what fine-tuning alone does on these images.

AP: COCO AP@[.5:.95] (%) of each IR with OpenVINO at the f32 hint on airport (its 10 frames are also training
images here: not held out) and wider_val5 (5 WIDER val images, held out). Size: parameters (M) and GFLOPs at
the template's input (``utils.complexity``; sparse weights count as dense, the share of zeros is printed).
Latency: bench_compression.py's ``latency_table`` (one request, batch 1, a real airport frame, medians of
--runs interleaved runs, 1 and 2 threads, f32 hint and the CPU default), the FP32 IR of the snapshot as the
baseline in the same process. Seconds per training iteration (the trainer's mean ``iter_time_s``) are printed
as the basis for the estimate of a full run.

    python benchmarks/bench_recovery.py [--level-epochs 2] [--recovery-epochs 10] [--lr 0.005]
        [--batch-size 10] [--runs 50] [--work outputs/bench_recovery]
"""

import argparse
import json
import logging
import os

from common import DATA, ROOT, ap_of, checkpoint_complexity, latency_table, omz_ir, stage, template

from ote_detection.apis.compress import compress, compress_without_training
from ote_detection.apis.export import export
from ote_detection.apis.import_weights import import_openvino_weights
from ote_detection.apis.train import train

NAME = "face-detection-0200"


def short_config(work, level_epochs, recovery_epochs, lr):
    """The template's compression_config.json with the sparsity and pruning parts shortened (see the module
    docstring); returns (path, {key: (OTE's value, ours)})."""
    with open(os.path.join(ROOT, "model_templates", "face-detection", NAME, "compression_config.json"),
              encoding="utf-8") as f:
        cfg = json.load(f)
    total = level_epochs + recovery_epochs
    changes = {}

    def put(obj, key, value, label):
        changes[label] = (obj.get(key), value)
        obj[key] = value

    for part in ("nncf_sparsity", "nncf_pruning"):
        put(cfg[part], "total_epochs", total, f"{part}.total_epochs")
        put(cfg[part]["optimizer"], "lr", lr, f"{part}.optimizer.lr")
        old = cfg[part].get("lr_config")
        cfg[part]["lr_config"] = {"_delete_": True, "policy": "fixed"}
        changes[f"{part}.lr_config"] = (old or "model.py's", "fixed")
    sparsity = cfg["nncf_sparsity"]["nncf_config"]["compression"][0]["params"]
    put(sparsity, "multistep_steps", [max(1, level_epochs // 2), level_epochs] if level_epochs >= 2 else [level_epochs],
        "magnitude_sparsity.multistep_steps")
    if level_epochs < 2:
        put(sparsity, "multistep_sparsity_levels", [0.2, 0.5], "magnitude_sparsity.multistep_sparsity_levels")
    pruning = cfg["nncf_pruning"]["nncf_config"]["compression"][0]["params"]
    put(pruning, "pruning_steps", level_epochs, "filter_pruning.pruning_steps")
    path = os.path.join(work, "compression_config_recovery.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)
    return path, changes


def mean_iter_s(history):
    vals = [h["iter_time_s"] for h in history or [] if "iter_time_s" in h]
    return sum(vals) / len(vals) if vals else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--level-epochs", type=int, default=2, help="epochs N until the target level is reached")
    p.add_argument("--recovery-epochs", type=int, default=10, help="epochs M of fine-tuning at the target level")
    p.add_argument("--lr", type=float, default=0.005, help="fixed learning rate of the recovery (and the control)")
    p.add_argument("--batch-size", type=int, default=10, help="training batch size")
    p.add_argument("--train", default="wider_train10,airport",
                   help=f"comma-separated training sets (of {', '.join(sorted(DATA))})")
    p.add_argument("--runs", type=int, default=50, help="interleaved latency runs per IR (>= 50)")
    p.add_argument("--skip-control", action="store_true", help="leave out the uncompressed fine-tuning control")
    p.add_argument("--work", default=os.path.join(ROOT, "outputs", "bench_recovery"),
                   help="folder for snapshots, checkpoints, IRs and results.json (finished stages are reused)")
    a = p.parse_args()
    if a.runs < 50:
        p.error("--runs must be at least 50")
    if a.level_epochs < 1 or a.recovery_epochs < 0:
        p.error("--level-epochs must be >= 1 and --recovery-epochs >= 0")
    sets = a.train.split(",")
    unknown = [s for s in sets if s not in DATA]
    if unknown:
        p.error(f"--train: unknown set {unknown[0]} (known: {', '.join(sorted(DATA))})")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("ote_detection").setLevel(logging.INFO)  # the epoch lines and the levels reached
    import openvino as ov
    import torch
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    print(f"OpenVINO {ov.get_version()}, torch {torch.__version__}, CPU: "
          f"{ov.Core().get_property('CPU', 'FULL_DEVICE_NAME')}, {os.cpu_count()} logical CPUs", flush=True)
    work = os.path.join(a.work, NAME)
    os.makedirs(work, exist_ok=True)
    train_ann = [DATA[s][0] for s in sets]
    train_root = [DATA[s][1] for s in sets]
    secs, iter_s = {}, {}
    snap = os.path.join(work, "snapshot.pth")
    stage(snap, lambda: import_openvino_weights(template(NAME), omz_ir(NAME, "FP16"), snap, verify=False,
                                                calibration_images=DATA["airport"][1]), secs)
    config, changes = short_config(work, a.level_epochs, a.recovery_epochs, a.lr)
    total = a.level_epochs + a.recovery_epochs
    tag = f"n{a.level_epochs}_m{a.recovery_epochs}_lr{a.lr:g}_b{a.batch_size}_{'+'.join(sets)}"
    ckpts = {"before": snap}
    common = dict(progress=False, workers=0, overwrite=True, batch_size=a.batch_size, gpu_num=0)
    histories = {}
    for algo, flag in (("pruned", "nncf_pruning"), ("sparse", "nncf_sparsity")):
        once = os.path.join(work, f"{algo}_at_once", "latest.pth")
        os.makedirs(os.path.dirname(once), exist_ok=True)
        stage(once, lambda: compress_without_training(template(NAME), snap, once, compression_config=config,
                                                      **{flag: True}), secs)
        ckpts[f"{algo} at once"] = once
        rec = os.path.join(work, f"{algo}_{tag}", "latest.pth")
        stage(rec, lambda: histories.__setitem__(algo, compress(
            template(NAME), train_ann, train_root, os.path.dirname(rec), load_weights=snap,
            compression_config=config, **{flag: True}, **common)), secs)
        ckpts[f"{algo} recovered"] = rec
    if not a.skip_control:
        ft = os.path.join(work, f"finetuned_{tag}", "latest.pth")
        stage(ft, lambda: histories.__setitem__("finetuned", train(
            template(NAME), train_ann, train_root, os.path.dirname(ft), load_weights=snap, epochs=total,
            base_learning_rate=a.lr, **common)), secs)
        ckpts["fine-tuned (control)"] = ft
    for key, hist in histories.items():
        iter_s[key] = mean_iter_s(hist)
    irs = {}
    for key, ckpt in ckpts.items():
        ir = os.path.join(work, "ir_" + key.split(" (")[0].replace(" ", "_") + ("" if key == "before" else "_" + tag),
                          "model.xml")
        stage(ir, lambda: export(template(NAME), ckpt, os.path.dirname(ir)), secs)
        irs[key] = ir
    rows = {}
    for key, ckpt in ckpts.items():
        gflops, mparams, zeros = checkpoint_complexity(NAME, ckpt)
        rows[key] = dict(ap=ap_of(NAME, irs[key], ("airport", "wider_val5")), gflops=gflops, mparams=mparams,
                         zero_share=zeros)
    print(f"\n{NAME}, trained on {' + '.join(sets)}: level reached after N = {a.level_epochs} epoch(s), then "
          f"M = {a.recovery_epochs} recovery epoch(s), SGD fixed lr {a.lr:g}, batch {a.batch_size}, "
          f"{torch.get_num_threads()} torch threads, fp32")
    print("changes to the template's compression_config.json (OTE's value -> ours):")
    for k, (old, new) in changes.items():
        print(f"  {k}: {json.dumps(old)} -> {json.dumps(new)}")
    print("\nCOCO AP (%) of the FP32 IR, OpenVINO f32 hint (airport frames are training images here; wider_val5 "
          "is held out)")
    print(f"{'state':>22s} {'airport':>8s} {'wider5':>8s} {'Mparams':>8s} {'GFLOPs':>7s} {'zeros':>6s}")
    for key, r in rows.items():
        zeros = "" if r["zero_share"] is None else f"{100 * r['zero_share']:5.1f}%"
        print(f"{key:>22s} {r['ap']['airport']:8.2f} {r['ap']['wider_val5']:8.2f} {r['mparams']:8.3f} "
              f"{r['gflops']:7.3f} {zeros:>6s}", flush=True)
    print("seconds per training iteration (mean over the epochs; this run's stages only): "
          + ", ".join(f"{k} {v:.2f}" for k, v in iter_s.items() if v is not None))
    print(f"stage seconds: {secs}")
    results = {"settings": vars(a), "changes": {k: list(v) for k, v in changes.items()}, "rows": rows,
               "iter_s": iter_s, "seconds": secs}
    latency_table(f"{NAME} compressed, recovered", ["fp32", "pruned", "sparse"],
                  [irs["before"], irs["pruned recovered"], irs["sparse recovered"]], a.runs, results)
    with open(os.path.join(a.work, f"results_{tag}.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print(f"\nresults: {os.path.join(a.work, f'results_{tag}.json')}")


if __name__ == "__main__":
    main()
