#!/usr/bin/env python3
"""Convert the WIDER FACE text annotation (wider_face_*_bbx_gt.txt) to COCO json (category 'face').

Boxes with w >= 0 and h >= 0 are kept, as OTE did (also zero-size and 'invalid' ones); boxes with a
negative size are dropped. The result trains and evaluates as it is: training skips boxes with w or h
< 1 (counted, said once), COCO AP counts zero-size boxes as faces no detection matches (as OTE's
pycocotools evaluation of the converted file did). Each annotation keeps the WIDER attributes (blur, expression,
illumination, invalid, occlusion, pose). Image sizes are read from the image files.
"""

import json
import logging

from ote_detection.formats.wider import wider_to_coco
from ote_detection.utils.cli import ArgumentParser
from ote_detection.utils.errors import OteError, run_cli
from ote_detection.utils.fileio import atomic_write_text, check_writable_file

log = logging.getLogger("wider_to_coco")


def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("gt_txt", metavar="WIDER_bbx_gt.txt",
                        help="official annotation text, "
                             "e.g. wider_face_split/wider_face_val_bbx_gt.txt")
    parser.add_argument("images_dir", metavar="IMAGES_DIR",
                        help="image folder: WIDER layout (WIDER_val/images/<event>/<name>.jpg) "
                             "or a flat folder of <name>.jpg")
    parser.add_argument("out_json", metavar="OUT.json", help="COCO json to write")
    parser.add_argument("--skip-missing", action="store_true",
                        help="skip images listed in the text but absent from IMAGES_DIR (and "
                             "count them) instead of stopping with an error")
    parser.add_argument("--drop-invalid", action="store_true",
                        help="drop boxes flagged invalid=1 (default: keep them, as OTE did; the "
                             "official evaluation ignores them)")
    parser.add_argument("--relative-to", metavar="DIR", default=None,
                        help="write each image's file_name relative to DIR (default: IMAGES_DIR, "
                             "giving <event>/<name>.jpg)")
    args = parser.parse_args(argv)
    check_writable_file(args.out_json, "output json")  # before reading every image

    coco, stats = wider_to_coco(args.gt_txt, args.images_dir, skip_missing=args.skip_missing,
                                drop_invalid=args.drop_invalid, relative_to=args.relative_to)
    if not coco["images"]:
        raise OteError(f"{args.gt_txt}: none of its images is in {args.images_dir}")
    atomic_write_text(args.out_json, json.dumps(coco))  # one line on a full disk or a read-only folder
    log.info("%s: %d images, %d boxes (missing images skipped: %d, negative-size boxes dropped: "
             "%d, zero-size kept: %d, invalid kept: %d, invalid dropped: %d)", args.out_json,
             stats["images"], stats["annotations"], stats["missing"],
             stats["negative_size_dropped"], stats["zero_size_kept"], stats["invalid_kept"],
             stats["invalid_dropped"])
    return 0


if __name__ == "__main__":
    run_cli(main)
