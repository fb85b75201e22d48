#!/usr/bin/env python3
"""Where INT8 loses AP before any QAT: NNCF's quantization settings at 0 fine-tuning iterations (issue 19).

Starting point as bench_qat_curve.py: the Open Model Zoo FP16 IR's weights imported into the template's
model (BatchNorm statistics calibrated on the airport frames). Every variant quantizes a copy with
``nncf.quantize`` on the un-augmented training images (--train, default wider_train10; the template's
``init_images: "plain"``) and measures COCO AP (%) of NNCF's fake-quantized torch model on airport and
wider_val5 (1 torch thread, f32 on the CPU; no OpenVINO here: the INT8 IR differs from this simulation by a
few tenths of a point).

Variants (name: what differs from ``base`` = NNCF's defaults, the template's setting):
  base                    NNCF's defaults (performance preset, its default range estimators, fast bias
                          correction)
  <RANGE ESTIMATOR>       activations_range_estimator_params = nncf RangeEstimatorParametersSet.<NAME>
                          (MINMAX, MEAN_MINMAX, MEDIAN_MINMAX, MEAN_NO_OUTLIERS_MINMAX, MEAN_QUANTILE, HISTOGRAM)
  mixed                   NNCF's mixed preset (asymmetric activations)
  ignore_first_conv       the first convolution (input normalisation folded in) left in float
  flip / flip_crop        range init on the images plus their mirror images (20) / plus centre crops (30)
  weights_only / activations_only   the base model with the activation / weight quantizers disabled
  float_weights_backbone / _neck / _bbox_head   the base model with that part's weight quantizers disabled
  kd                      base, then --kd-iters iterations of distillation from the float model (MSE
                          of the head's raw outputs, augmented training batches of 8, Adam --kd-lr,
                          BatchNorm frozen): AP after each of --kd-iters

    python benchmarks/bench_quant_settings.py [--model face-detection-0200] [--variants base,MINMAX,...]
        [--kd-iters 5,10,20] [--kd-lr 1e-4] [--seed 0]
"""

import argparse
import copy
import json
import os
import time

import torch

os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")

from common import DATA, ROOT, load_experiment  # noqa: E402

from ote_detection.compression.env import import_nncf  # noqa: E402
from ote_detection.compression.quantization import freeze_batchnorm, plain_images  # noqa: E402
from ote_detection.engine.trainer import build_train_loader  # noqa: E402

ESTIMATORS = ("MINMAX", "MEAN_MINMAX", "MEDIAN_MINMAX", "MEAN_NO_OUTLIERS_MINMAX", "MEAN_QUANTILE", "HISTOGRAM")
DEFAULT = ",".join(("base",) + ESTIMATORS + ("mixed", "ignore_first_conv", "flip", "flip_crop", "weights_only",
                                               "activations_only", "kd"))
PARTS = ("float_weights_backbone", "float_weights_neck", "float_weights_bbox_head")


def flat(out):
    """The tensors of a nested list/tuple of head outputs, in order."""
    if isinstance(out, (list, tuple)):
        for x in out:
            yield from flat(x)
    else:
        yield out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="face-detection-0200", help="template name (its Open Model Zoo FP16 IR is imported)")
    p.add_argument("--snapshot", help="start from this snapshot of --model instead of its Open Model Zoo import "
                   "(e.g. bench_compression.py's fine-tuned 0205 start)")
    p.add_argument("--sets", default="airport,wider_val5", help="comma-separated AP sets (of common.DATA)")
    p.add_argument("--variants", default=DEFAULT, help="comma-separated variant names (see above)")
    p.add_argument("--train", default="wider_train10", choices=sorted(DATA), help="range-init / distillation set")
    p.add_argument("--kd-iters", default="5,10,20", help="distillation iteration counts at which AP is measured")
    p.add_argument("--kd-lr", type=float, default=1e-4, help="Adam learning rate of the distillation")
    p.add_argument("--seed", type=int, default=0, help="torch seed (augmentation order of the distillation)")
    p.add_argument("--work", default=os.path.join(ROOT, "outputs", "bench_quant_settings"),
                   help="folder of the imported snapshot (reused) and results_<model>.json")
    a = p.parse_args()
    unknown = sorted(set(a.variants.split(",")) - set(DEFAULT.split(",")) - set(PARTS))
    if unknown:
        p.error(f"--variants: unknown {', '.join(unknown)} (known: {DEFAULT})")
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    nncf = import_nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    task, dataset, paths, det, ap = load_experiment(a.model, a.work, a.train, a.snapshot, a.sets.split(","))

    init = plain_images(paths, task.input_size, task.keep_ratio, task.img_norm_cfg, len(paths))
    h, w = init[0].shape[-2:]
    crops = [torch.nn.functional.interpolate(i[..., h // 8:h - h // 8, w // 8:w - w // 8], size=(h, w),
                                             mode="bilinear", align_corners=False) for i in init]
    flips = [i.flip(-1) for i in init]

    def quantize(images=init, **kwargs):
        return nncf.quantize(copy.deepcopy(det), nncf.Dataset(images), subset_size=len(images), **kwargs)

    def first_conv_scope():
        probe = quantize()
        names = [n for n, m in probe.named_modules() if "pre_hooks" in n and type(m).__name__.endswith("Quantizer")]
        # "__nncf_hooks.pre_hooks.<node name>__<port>"; the first weight quantizer is the first convolution's
        return nncf.IgnoredScope(names=[names[0].split("pre_hooks.", 1)[1].rsplit("__", 1)[0]])

    def with_disabled(kind, part=""):
        q, off = quantize(), 0
        for n, m in q.named_modules():
            if type(m).__name__.endswith("Quantizer") and kind in n and part in n.split(kind, 1)[1]:
                m.disable_quantization()
                off += 1
        print(f"  {off} quantizer(s) of {kind} {part} disabled", flush=True)
        return q

    results = {"fp32": ap(det), "settings": vars(a)}
    print("fp32", results["fp32"], flush=True)
    for name in a.variants.split(","):
        t0 = time.time()
        if name == "base":
            q = quantize()
        elif name in ESTIMATORS:
            q = quantize(advanced_parameters=AdvancedQuantizationParameters(
                activations_range_estimator_params=getattr(RangeEstimatorParametersSet, name)))
        elif name == "mixed":
            q = quantize(preset=nncf.QuantizationPreset.MIXED)
        elif name == "ignore_first_conv":
            q = quantize(ignored_scope=first_conv_scope())
        elif name == "flip":
            q = quantize(init + flips)
        elif name == "flip_crop":
            q = quantize(init + flips + crops)
        elif name == "weights_only":
            q = with_disabled("post_hooks")  # activation quantizers sit after ops, weight quantizers before
        elif name == "activations_only":
            q = with_disabled("pre_hooks")
        elif name.startswith("float_weights_"):  # the weight quantizers of one part off
            q = with_disabled("pre_hooks", name[len("float_weights_"):])
        elif name == "kd":
            q = quantize()
            teacher = copy.deepcopy(det).eval()
            opt = torch.optim.Adam([x for x in q.parameters() if x.requires_grad], lr=a.kd_lr)
            loader = build_train_loader(dataset, 8, 0, 0)
            curve, it, batches = {}, 0, iter(())
            for target in sorted(int(x) for x in a.kd_iters.split(",")):
                while it < target:
                    try:
                        imgs = next(batches)[0]
                    except StopIteration:
                        batches = iter(loader)
                        imgs = next(batches)[0]
                    q.train()
                    freeze_batchnorm(q)
                    with torch.no_grad():
                        want = list(flat(teacher(imgs)))
                    loss = sum(torch.nn.functional.mse_loss(s, t) for s, t in zip(flat(q(imgs)), want))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    it += 1
                curve[target] = ap(q)
                print(f"kd iter {target}: {curve[target]} ({time.time() - t0:.0f} s)", flush=True)
            results[name] = curve
            continue
        else:  # checked after parse_args
            raise AssertionError(name)
        results[name] = ap(q)
        print(f"{name}: {results[name]} ({time.time() - t0:.0f} s)", flush=True)
        with open(os.path.join(a.work, f"results_{a.model}.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    with open(os.path.join(a.work, f"results_{a.model}.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
