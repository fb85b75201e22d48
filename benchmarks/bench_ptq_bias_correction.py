#!/usr/bin/env python3
"""PTQ with NNCF's fast and full bias correction on the compression benchmark's set-up (bench_compression.py's
``ptq`` row): the Open Model Zoo IR imported (BatchNorm statistics calibrated on the airport frames),
compress.py --nncf-quantization --ptq calibrated on wider_train10 (10 images) with accuracy control on the
airport frames (max drop 1 AP point), then COCO AP (%) of each INT8 IR on airport and wider_val5 (OpenVINO,
f32 hint). compress.py picks the bias correction by the number of calibration images
(``compression/ptq.py`` FULL_BIAS_CORRECTION_MAX_IMAGES: full up to 50); here both are forced in turn.

    python benchmarks/bench_ptq_bias_correction.py [--models face-detection-0200,face-detection-0204]
"""

import argparse
import os

os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")

from common import DATA, ROOT, ap_of, omz_ir, template  # noqa: E402
from machine import cpu_model  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="face-detection-0200", help="templates, comma-separated")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--work", default=os.path.join(ROOT, "outputs", "bench_ptq_bias_correction"),
                   help="folder of the imported snapshots and the INT8 IRs")
    a = p.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    import ote_detection.compression.ptq as ptq
    from ote_detection.apis.compress import compress
    from ote_detection.apis.import_weights import import_openvino_weights
    print(f"CPU: {cpu_model()}; COCO AP (%), OpenVINO f32 hint", flush=True)
    train_ann, train_root = DATA["wider_train10"]
    val_ann, val_root = DATA["airport"]
    for name in a.models.split(","):
        work = os.path.join(a.work, name)
        os.makedirs(work, exist_ok=True)
        snap = os.path.join(work, "snapshot.pth")
        if not os.path.exists(snap):
            import_openvino_weights(template(name), omz_ir(name, "FP16"), snap, verify=False,
                                    calibration_images=DATA["airport"][1])
        for mode, limit in (("fast", 0), ("full", 10 ** 9)):
            ptq.FULL_BIAS_CORRECTION_MAX_IMAGES = limit  # forces the choice compress.py makes by image count
            out = os.path.join(work, f"ptq_{mode}")
            compress(template(name), train_ann, train_root, out, nncf_quantization=True, load_weights=snap, ptq=True,
                     max_drop=1.0, val_ann_files=val_ann, val_data_roots=val_root)
            aps = ap_of(name, os.path.join(out, "model.xml"), ("airport", "wider_val5"))
            print(f"{name} PTQ, {mode} bias correction: airport {aps['airport']:.2f}, wider_val5 "
                  f"{aps['wider_val5']:.2f}", flush=True)


if __name__ == "__main__":
    main()
