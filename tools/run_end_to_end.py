#!/usr/bin/env python3
"""The main job, end to end: instantiate a template, train, evaluate the snapshot, export to OpenVINO IR
and evaluate the IR. On your COCO data (--train-ann-files ...) or, by default, on a small SYNTHETIC
sample (cartoon faces) that this script generates, so that a fresh machine can run it with no dataset."""

import logging
import os

from ote_detection.apis.evaluate import evaluate
from ote_detection.apis.export import export
from ote_detection.apis.instantiate import instantiate
from ote_detection.apis.train import train
from ote_detection.data.synthetic import make_synthetic_dataset
from ote_detection.utils.cli import ArgumentParser
from ote_detection.utils.errors import OteError, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TEMPLATE = os.path.join(ROOT, "model_templates", "face-detection", "face-detection-0200", "template.yaml")
log = logging.getLogger("end-to-end")


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="template.yaml (default: face-detection-0200)")
    p.add_argument("--work-dir", default=os.path.join(ROOT, "outputs", "end_to_end"),
                   help="work dir to instantiate into (default: outputs/end_to_end)")
    p.add_argument("--train-ann-files", help="your COCO annotation file(s), comma-separated (default: synthetic sample)")
    p.add_argument("--train-data-roots", help="image folder(s), one per annotation file")
    p.add_argument("--val-ann-files", help="validation/test annotation file(s) (default: the training ones)")
    p.add_argument("--val-data-roots", help="image folder(s) of the validation annotation file(s)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--base-learning-rate", type=float, help="learning rate (default: the template's)")
    p.add_argument("--input-size", type=int, help="square input size override (default: the template's)")
    p.add_argument("--gpu-num", type=int, help="GPUs to train on (default: the template's, limited to those present)")
    p.add_argument("--do-not-load-snapshot", action="store_true",
                   help="train from scratch instead of fine-tuning the template's pretrained snapshot")
    a = p.parse_args(argv)
    work = os.path.abspath(a.work_dir)
    if a.train_ann_files:
        if not a.train_data_roots:
            raise OteError("--train-ann-files needs --train-data-roots")
        train_ann, train_root = a.train_ann_files, a.train_data_roots
    else:
        sample = os.path.join(work, "synthetic_sample")
        train_ann, train_root = make_synthetic_dataset(sample), sample
        log.info("no data given: generated a SYNTHETIC sample (cartoon faces, not real data) in %s", sample)
    val_ann, val_root = a.val_ann_files or train_ann, a.val_data_roots or train_root

    snapshot = None
    try:
        instantiate(a.template, work, load_snapshot=not a.do_not_load_snapshot)
        if not a.do_not_load_snapshot:
            snapshot = os.path.join(work, "snapshot.pth")
    except OteError as exc:
        log.warning("%s\n-> training from scratch instead", exc)
        instantiate(a.template, work, load_snapshot=False)
    template = os.path.join(work, "template.yaml")
    size = (a.input_size, a.input_size) if a.input_size else None
    train(template, train_ann, train_root, os.path.join(work, "outputs"), val_ann_files=val_ann, val_data_roots=val_root,
          load_weights=snapshot, epochs=a.epochs, batch_size=a.batch_size, base_learning_rate=a.base_learning_rate,
          gpu_num=a.gpu_num, tensorboard_dir=os.path.join(work, "tensorboard"), input_size=size,
          overwrite=True)  # the job redoes its whole run in its own work dir
    latest = os.path.join(work, "outputs", "latest.pth")
    pth = evaluate(template, latest, val_ann, val_root, os.path.join(work, "metrics.yaml"), cache_dir=None)
    export(template, latest, os.path.join(work, "export"))
    ir = evaluate(template, os.path.join(work, "export", "model.xml"), val_ann, val_root,
                  os.path.join(work, "metrics_ir.yaml"), cache_dir=None)
    print(f"\nsnapshot AP {pth.get('ap', float('nan')):.2f}  |  OpenVINO IR (f32) AP {ir.get('ap', float('nan')):.2f}"
          f"\nwork dir: {work} (outputs/latest.pth, export/model.xml, metrics.yaml, metrics_ir.yaml, tensorboard/)")


if __name__ == "__main__":
    run_cli(main)
