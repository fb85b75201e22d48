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

from ote_detection.utils.cli import ArgumentParser
from ote_detection.utils.errors import run_cli


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
    from ote_detection.formats.convert import convert_dataset
    convert_dataset(a.src, a.src_format, a.out, dst_format=a.dst_format, data_root=a.data_root, subset=a.subset,
                    classes=tuple(c for c in a.classes.split(",") if c), save_media=a.save_media)
    return 0


if __name__ == "__main__":
    run_cli(main)
