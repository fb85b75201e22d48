#!/usr/bin/env python3
"""Convert a face dataset between formats with Datumaro, e.g. Pascal VOC to the COCO json train.py reads:

  python tools/convert_dataset.py my_voc_dataset --from voc --to coco out/annotations.json --subset train

With ``--to coco`` the result is our COCO json (the category named 'face' and the others, every box with its
attributes, ignored regions as iscrowd 1), its image paths relative to the json's folder: give that folder as
--*-data-roots. A dataset of several subsets (VOC's ImageSets/Main/train.txt, val.txt...) needs --subset: they
are never merged unasked. Any other --to is a Datumaro export format (voc_detection, yolo, cvat, datumaro, ...)
and OUT is a new (or empty) folder (images copied with --save-media); each image keeps its subset, and ignored
regions keep their format's flag (docs/data_formats.md). The data checks of train.py / eval.py run before
anything is written; a write that fails (read-only folder, full disk) is one line and leaves nothing behind.
"""

import logging
import os

from ote_detection.utils.cli import ArgumentParser
from ote_detection.utils.errors import OteError, run_cli

log = logging.getLogger("convert_dataset")


def _check_writable(out):
    """One line, before any work, when OUT's nearest existing folder cannot be written (read-only)."""
    folder = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise OteError(f"{out}: cannot be created, {folder} is a file")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OteError(f"{out}: cannot write ({folder} is not writable); nothing was read or written")


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("src", help="the dataset: a folder (or file) as Datumaro imports it for --from; a COCO json for "
                   "--from coco")
    p.add_argument("--from", dest="src_format", required=True, metavar="FORMAT",
                   help="format of SRC: coco (a COCO json, images found relative to --data-root) or a Datumaro format "
                   "name (voc, yolo, cvat, wider_face, kitti, datumaro, ...)")
    p.add_argument("--data-root", help="with --from coco: the image folder of SRC (default: SRC's folder)")
    p.add_argument("--to", dest="dst_format", default="coco", metavar="FORMAT",
                   help="coco (default: a COCO json at OUT) or a Datumaro export format (OUT is then a folder)")
    p.add_argument("--subset", metavar="NAME", help="with a Datumaro --from: the subset(s) of SRC to convert, e.g. "
                   "train (several, comma-separated, are merged). Default: its only subset; with several, --to coco "
                   "needs --subset and any other --to keeps every subset apart")
    p.add_argument("--classes", default="face", help="categories that must be present, comma-separated "
                   "(default: face)")
    p.add_argument("--save-media", action="store_true", help="with a Datumaro --to: copy the images into OUT")
    p.add_argument("out", help="output: the .json for --to coco, a new or empty folder otherwise")
    a = p.parse_args(argv)
    classes = tuple(c for c in a.classes.split(",") if c)
    from ote_detection.data.coco import load_coco_files
    from ote_detection.formats.convert import ALL_SUBSETS, datumaro_to_coco, is_coco, temporary_json, write_coco
    if is_coco(a.dst_format) and os.path.isdir(a.out):
        raise OteError(f"{a.out}: is a folder; --to coco writes a .json file")
    _check_writable(a.out)
    if is_coco(a.src_format):
        if a.subset:
            raise OteError(f"--subset {a.subset}: a COCO json has no subsets (--subset is for a Datumaro --from)")
        root = a.data_root or os.path.dirname(os.path.abspath(a.src))
        coco = load_coco_files([a.src], [root], classes)
        coco = dict(coco, images=[dict(img, file_name=img["path"]) for img in coco["images"]])
    else:
        subset = a.subset or (None if is_coco(a.dst_format) else ALL_SUBSETS)
        coco = datumaro_to_coco(a.src, a.src_format, classes, subset=subset)
        # the same checks as train.py / eval.py (files present and readable, sizes, boxes), subset by subset
        for name in coco["info"]["subsets"] if subset == ALL_SUBSETS else [None]:
            part = coco if name is None else _subset_of(coco, name)
            load_coco_files([temporary_json(part, a.src, a.src_format, [name] if name else None)],
                            [os.path.abspath(os.sep)], classes)
    if is_coco(a.dst_format):
        write_coco(coco, a.out)
        log.info("wrote %s: %d image(s), %d box(es); give %s as the data root", a.out, len(coco["images"]),
                 len(coco["annotations"]), os.path.dirname(os.path.abspath(a.out)))
        return 0
    from ote_detection.formats.convert import export_with_datumaro
    export_with_datumaro(coco, a.out, a.dst_format, save_media=a.save_media)
    log.info("wrote %s (%s): %d image(s)", a.out, a.dst_format, len(coco["images"]))
    return 0


def _subset_of(coco, name):
    images = [img for img in coco["images"] if img.get("subset") == name]
    ids = {img["id"] for img in images}
    return dict(coco, images=images, annotations=[a for a in coco["annotations"] if a["image_id"] in ids])


if __name__ == "__main__":
    run_cli(main)
