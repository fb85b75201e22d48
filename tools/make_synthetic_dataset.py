#!/usr/bin/env python3
"""Generate a small SYNTHETIC face dataset (cartoon faces on cluttered backgrounds; not real data) in COCO
format: OUT_DIR/images/*.jpg and OUT_DIR/annotations.json (file names relative to OUT_DIR)."""

from ote_detection.data.synthetic import make_synthetic_dataset
from ote_detection.utils.cli import ArgumentParser
from ote_detection.utils.errors import run_cli


def main(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("out_dir", help="folder to write images/ and annotations.json into")
    p.add_argument("--num-images", type=int, default=24, help="number of images (default 24)")
    p.add_argument("--width", type=int, default=320, help="image width (default 320)")
    p.add_argument("--height", type=int, default=240, help="image height (default 240)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    a = p.parse_args(argv)
    print(make_synthetic_dataset(a.out_dir, a.num_images, (a.width, a.height), seed=a.seed))


if __name__ == "__main__":
    run_cli(main)
