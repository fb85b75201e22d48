#!/usr/bin/env python3
"""IR latency of our exported face-detection-0200/0204 (OMZ weights imported) next to the OMZ IR of the same model.

For each model: the OMZ FP16 IR's weights are imported into the template's PyTorch model, which is
exported to our FP32 IR (tools/import_openvino_weights.py + export.py, in a temporary folder). Both
IRs then run on this CPU with OpenVINO, one synchronous request on one real image, for 1 and 2
threads and two precisions: f32 (INFERENCE_PRECISION_HINT f32) and the CPU default (bf16 where the
CPU has AMX/AVX512-BF16; the precision used is printed). Runs of the two IRs are interleaved so that
load from other processes affects both alike; the median of --runs (>= 50) is reported.

    python benchmarks/bench_ir_latency.py [--models face-detection-0200,face-detection-0204] [--runs 100]

The last line is the geometric mean of the ratios ours / OMZ over all rows.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

from common import SHARED, interleaved_ms, precision_used, template, test_image

from ote_detection.apis.export import export
from ote_detection.apis.import_weights import import_openvino_weights
from ote_detection.inference.openvino_predictor import OpenVINOPredictor


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="face-detection-0200,face-detection-0204",
                   help="comma-separated template names (their Open Model Zoo FP16 IRs are imported)")
    p.add_argument("--runs", type=int, default=100, help="interleaved latency runs per IR (>= 50)")
    p.add_argument("--omz-dir", default=os.path.join(SHARED, "models", "omz"),
                   help="Open Model Zoo folder: <dir>/<model>/FP16/<model>.xml")
    a = p.parse_args()
    if a.runs < 50:
        sys.exit("--runs must be at least 50")
    import openvino as ov
    print(f"OpenVINO {ov.get_version()}, CPU: {ov.Core().get_property('CPU', 'FULL_DEVICE_NAME')}, "
          f"{os.cpu_count()} logical CPUs; median of {a.runs} runs, one synchronous request")
    print(f"{'model':20s} {'threads':>7s} {'precision':>12s} {'ours ms':>9s} {'OMZ ms':>9s} {'ours/OMZ':>9s}")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            omz = os.path.join(a.omz_dir, name, "FP16", name + ".xml")
            if not os.path.isfile(omz):
                sys.exit(f"{omz}: OMZ IR not found (--omz-dir)")
            snap = os.path.join(tmp, name + ".pth")
            import_openvino_weights(template(name), omz, snap, verify=False)
            ours = export(template(name), snap, os.path.join(tmp, name))
            for threads in (1, 2):
                for precision in ("f32", "default"):
                    preds = [OpenVINOPredictor(ours, precision=precision, threads=threads),
                             OpenVINOPredictor(omz, precision=precision, threads=threads)]
                    used = precision_used(preds[0])
                    t_ours, t_omz = interleaved_ms(preds, test_image(preds[0].input_size), a.runs)
                    ratios.append(t_ours / t_omz)
                    label = precision if precision != "default" else f"default={used}"
                    print(f"{name:20s} {threads:7d} {label:>12s} {t_ours:9.2f} {t_omz:9.2f} {t_ours / t_omz:9.3f}",
                          flush=True)
    geo = float(np.exp(np.mean(np.log(ratios))))
    print(f"latency ratio ours/OMZ (geometric mean of {len(ratios)} rows): {geo:.3f}")


if __name__ == "__main__":
    main()
