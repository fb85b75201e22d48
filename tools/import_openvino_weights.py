#!/usr/bin/env python3
"""Import the weights of an OpenVINO IR (e.g. Open Model Zoo's face-detection-0200) into a snapshot of a template.

The IR's convolutions (BatchNorm folded in, FP16 or dequantised INT8) are matched one to one to the
template's model; the snapshot loads with train.py --load-weights, eval.py and export.py.

With --download NAME the IR is fetched from Open Model Zoo's public storage first (URLs, sizes and
sha384 in the template's omz_weights section; cached and resumable):

  python tools/import_openvino_weights.py --download face-detection-0204 --precision FP16 snapshot.pth
"""

import logging

from ote_detection.apis.import_weights import import_openvino_weights
from ote_detection.apis.omz_weights import PRECISIONS, download_omz_ir, template_for
from ote_detection.utils.cli import ArgumentParser
from ote_detection.utils.errors import OteError, run_cli

log = logging.getLogger("import_openvino_weights")


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("args", nargs="+", metavar="ARG", help="TEMPLATE IR OUTPUT: template.yaml of the model the IR "
                   "was made from (e.g. model_templates/face-detection/face-detection-0200/template.yaml), the IR's "
                   ".xml (its .bin beside it) and the snapshot to write (.pth, atomically); with --download only OUTPUT")
    p.add_argument("--download", metavar="NAME", help="fetch Open Model Zoo's IR of NAME (face-detection-0200, "
                   "-0202 or -0204) and import it; the template is the one of that name")
    p.add_argument("--precision", default="FP16", choices=PRECISIONS, help="precision of the IR to fetch with "
                   "--download (default FP16; the weights are read as FP32 either way)")
    p.add_argument("--ir-dir", metavar="DIR", help="with --download: keep the fetched .xml/.bin in DIR "
                   "(default: the download cache, $OTE_FACE_CACHE or ~/.cache/ote-face)")
    p.add_argument("--calibrate-bn", metavar="IMAGES", help="folder(s) or image file(s), comma-separated: measure "
                   "BatchNorm statistics on them (recommended before fine-tuning with train.py; without it BatchNorm "
                   "layers are identities plus bias, exact for inference but not for train-mode batch statistics)")
    p.add_argument("--no-verify", action="store_true", help="skip the comparison of the head outputs of the IR "
                   "and the imported model on a test image")
    a = p.parse_args(argv)
    if a.download:
        if len(a.args) != 1:
            raise OteError("with --download give only the snapshot to write (OUTPUT)")
        template = template_for(a.download)
        ir = download_omz_ir(template, a.precision, a.ir_dir)
        log.info("Open Model Zoo IR %s (%s): %s", a.download, a.precision, ir)
        output = a.args[0]
    else:
        if len(a.args) != 3:
            raise OteError("give TEMPLATE IR OUTPUT (or --download NAME OUTPUT)")
        template, ir, output = a.args
    import_openvino_weights(template, ir, output, verify=not a.no_verify, calibration_images=a.calibrate_bn)


if __name__ == "__main__":
    run_cli(main)
