#!/usr/bin/env python3
"""Convert a face dataset between formats with Datumaro, e.g. Pascal VOC to the COCO json train.py reads:

  python tools/convert_dataset.py my_voc_dataset --from voc --to coco out/annotations.json

With ``--to coco`` the result is our COCO json (the category named 'face' and the others, every box with its
attributes), its image paths relative to the json's folder: give that folder as --*-data-roots. The data
checks of train.py / eval.py run on it before it is written. Any other --to is a Datumaro export format
(voc_detection, yolo, cvat, datumaro, ...) and OUT is a folder (images copied with --save-media).
"""

import logging
import os

from ote_detection.utils.cli import ArgumentParser
from ote_detection.utils.errors import OteError, run_cli

log = logging.getLogger("convert_dataset")


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
    p.add_argument("--classes", default="face", help="categories that must be present, comma-separated "
                   "(default: face)")
    p.add_argument("--save-media", action="store_true", help="with a Datumaro --to: copy the images into OUT")
    p.add_argument("out", help="output: the .json for --to coco, a folder otherwise")
    a = p.parse_args(argv)
    classes = tuple(c for c in a.classes.split(",") if c)
    from ote_detection.data.coco import load_coco_files
    from ote_detection.data.formats import datumaro_to_coco, is_coco, write_coco
    if is_coco(a.src_format):
        root = a.data_root or os.path.dirname(os.path.abspath(a.src))
        coco = load_coco_files([a.src], [root], classes)
        coco = dict(coco, images=[dict(img, file_name=img["path"]) for img in coco["images"]])
    else:
        coco = datumaro_to_coco(a.src, a.src_format, classes)
        # the same checks as train.py / eval.py (files present and readable, sizes, boxes)
        import json
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "coco.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(coco, f)
            load_coco_files([path], [os.path.abspath(os.sep)], classes)
    if is_coco(a.dst_format):
        if os.path.isdir(a.out):
            raise OteError(f"{a.out}: is a folder; --to coco writes a .json file")
        write_coco(coco, a.out)
        log.info("wrote %s: %d image(s), %d box(es); give %s as the data root", a.out, len(coco["images"]),
                 len(coco["annotations"]), os.path.dirname(os.path.abspath(a.out)))
        return 0
    from ote_detection.data.formats import export_with_datumaro
    export_with_datumaro(coco, a.out, a.dst_format, save_media=a.save_media)
    log.info("wrote %s (%s): %d image(s)", a.out, a.dst_format, len(coco["images"]))
    return 0


if __name__ == "__main__":
    run_cli(main)
