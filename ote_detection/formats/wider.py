"""WIDER FACE text annotation (``wider_face_*_bbx_gt.txt``) -> COCO.

The text format, per image::

    0--Parade/0_Parade_marchingband_1_465.jpg      relative image path
    126                                            number of boxes
    345 211 4 4 2 0 0 0 2 0                        x1 y1 w h blur expression illumination
    ...                                            invalid occlusion pose (one line per box)

An image with 0 boxes is followed by one placeholder line (``0 0 0 0 0 0 0 0 0 0``).

Box handling, as OTE did (openvinotoolkit/training_extensions
``ote/datasets/face_detection/wider_face/convert_annotation.py``, which the face-detection
``datasets.md`` runs as ``wider_to_coco.py``): every box with ``w >= 0`` and ``h >= 0`` is kept
(also zero-size boxes and boxes flagged ``invalid``), ``area = w * h``, ``iscrowd = 0``; a box
with a negative size is dropped (OTE printed "Ignored because of invalid size").  Zero-size boxes
(WIDER FACE's val text has 10) train and evaluate: ``data.coco.load_coco_files`` keeps and counts
them, training skips boxes with ``w < 1`` or ``h < 1`` (as mmdetection), COCO AP counts them as
faces no detection can match (pycocotools on the file as it is, as OTE evaluated).  The official
evaluation never reads this file: it uses the .mat files, where ``invalid`` boxes are in no
setting's ``gt_list`` (they are ignored).  ``drop_invalid=True`` drops them here too.

Kept from the text: the six attributes on each annotation, and ``wider_event`` / ``wider_path``
on each image.  Image ids and annotation ids start at 1 (pycocotools treats id 0 specially).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..utils.errors import OteError

__all__ = ["WiderFormatError", "WiderImage", "parse_wider_bbx_gt", "wider_to_coco", "find_wider_gt_dir",
           "find_wider_images_dir", "WIDER_GT_FILES",
           "ATTRIBUTES"]

ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


class WiderFormatError(OteError):
    """Malformed WIDER annotation text; the message is 'file:line: what is wrong'."""


@dataclass
class WiderImage:
    path: str  # as written in the file, e.g. '0--Parade/0_Parade_marchingband_1_465.jpg'
    line: int  # 1-based line number of the path line
    boxes: list = field(default_factory=list)  # [x, y, w, h] floats
    attrs: list = field(default_factory=list)  # 6 ints per box
    negative_size: int = 0  # boxes dropped for w < 0 or h < 0


def _numbers(text, path, line_no, what):
    parts = text.split()
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise WiderFormatError(f"{path}:{line_no}: expected {what}, got {text.strip()!r}") from None


def parse_wider_bbx_gt(path: str) -> list:
    """Parse a ``wider_face_*_bbx_gt.txt`` file; raises WiderFormatError on malformed input."""
    if not os.path.isfile(path):
        raise OteError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise WiderFormatError(f"{path}: not a text file ({exc})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise WiderFormatError(f"{path}:1: empty annotation file")
    box_fields = "10 numbers (x1 y1 w h blur expression illumination invalid occlusion pose)"
    images = []
    i = 0
    n = len(lines)
    while i < n:
        name = lines[i].strip()
        line_no = i + 1
        if not name:
            raise WiderFormatError(f"{path}:{line_no}: expected an image path, got an empty line")
        try:
            float(name.split()[0])
            is_number = True
        except ValueError:
            is_number = False
        if is_number or not name.lower().endswith((".jpg", ".jpeg", ".png")):
            raise WiderFormatError(f"{path}:{line_no}: expected an image path "
                                   f"(e.g. 0--Parade/0_Parade_Parade_0_904.jpg), got {name!r}")
        img = WiderImage(path=name, line=line_no)
        i += 1
        if i >= n:
            raise WiderFormatError(f"{path}:{i + 1}: unexpected end of file: missing the box "
                                   f"count of {name} (line {line_no})")
        count_text = lines[i].strip()
        if not count_text.isdigit():
            raise WiderFormatError(f"{path}:{i + 1}: expected the number of boxes of {name}, "
                                   f"got {count_text!r}")
        count = int(count_text)
        i += 1
        n_lines = max(count, 1)  # 0 boxes: one placeholder line
        if i + n_lines > n:
            raise WiderFormatError(f"{path}:{n + 1}: unexpected end of file: {name} (line "
                                   f"{line_no}) announces {count} box(es), "
                                   f"{n - i} line(s) follow")
        for k in range(n_lines):
            text = lines[i + k]
            values = _numbers(text, path, i + k + 1, box_fields)
            if len(values) != 10:
                raise WiderFormatError(f"{path}:{i + k + 1}: expected {box_fields}, got "
                                       f"{len(values)} value(s)")
            if count == 0:
                continue  # placeholder line
            x, y, w, h = values[:4]
            attrs = values[4:]
            if any(a != int(a) for a in attrs):
                raise WiderFormatError(f"{path}:{i + k + 1}: attributes must be integers, "
                                       f"got {text.strip()!r}")
            if w < 0 or h < 0:
                img.negative_size += 1
                continue
            img.boxes.append([x, y, w, h])
            img.attrs.append([int(a) for a in attrs])
        i += n_lines
        images.append(img)
    return images


def _find_image(images_dir: str, rel_path: str):
    """images_dir/<event>/<name> (WIDER layout) or images_dir/<name> (flat folder)."""
    candidate = os.path.join(images_dir, rel_path)
    if os.path.isfile(candidate):
        return candidate
    flat = os.path.join(images_dir, os.path.basename(rel_path))
    if os.path.isfile(flat):
        return flat
    return None


def _image_size(path: str):
    """(width, height) as every tool reads the image (header only; EXIF orientation applied)."""
    from ..data.images import probe_image

    return probe_image(path).size


def wider_to_coco(gt_txt: str, images_dir: str, skip_missing: bool = False,
                  drop_invalid: bool = False, relative_to: str | None = None):
    """Convert; returns ``(coco_dict, stats)``.

    ``file_name`` of each image is its path relative to ``relative_to`` (default: images_dir),
    so with the WIDER layout it is ``<event>/<name>.jpg``.  Image sizes are read with cv2.
    A missing image raises OteError naming it unless ``skip_missing`` (then it is counted in
    ``stats['missing']``).
    """
    if not os.path.isdir(images_dir):
        raise OteError(f"{images_dir}: images folder not found")
    parsed = parse_wider_bbx_gt(gt_txt)
    base = relative_to if relative_to is not None else images_dir
    images, annotations = [], []
    stats = {"images": 0, "annotations": 0, "missing": 0, "negative_size_dropped": 0,
             "invalid_dropped": 0, "zero_size_kept": 0, "invalid_kept": 0}
    for entry in parsed:
        found = _find_image(images_dir, entry.path)
        if found is None:
            if skip_missing:
                stats["missing"] += 1
                continue
            raise OteError(f"{gt_txt}:{entry.line}: image {entry.path} not found in {images_dir} "
                           "(use --skip-missing to skip absent images)")
        width, height = _image_size(found)
        image_id = len(images) + 1
        event = entry.path.replace("\\", "/").split("/")[0] if "/" in entry.path else ""
        images.append({"id": image_id,
                       "file_name": os.path.relpath(found, base).replace(os.sep, "/"),
                       "width": width, "height": height,
                       "wider_event": event, "wider_path": entry.path})
        stats["negative_size_dropped"] += entry.negative_size
        for box, attrs in zip(entry.boxes, entry.attrs):
            attr = dict(zip(ATTRIBUTES, attrs))
            if attr["invalid"] and drop_invalid:
                stats["invalid_dropped"] += 1
                continue
            x, y, w, h = box
            if w == 0 or h == 0:
                stats["zero_size_kept"] += 1
            if attr["invalid"]:
                stats["invalid_kept"] += 1
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                   "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
            ann.update(attr)
            annotations.append(ann)
    stats["images"] = len(images)
    stats["annotations"] = len(annotations)
    coco = {
        "info": {"description": f"WIDER FACE converted from {os.path.basename(gt_txt)}"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "face", "supercategory": "face"}],
    }
    return coco, stats


# --- WIDER FACE folders -------------------------------------------------------------------------------

WIDER_GT_FILES = ("wider_face_val.mat", "wider_easy_val.mat", "wider_medium_val.mat", "wider_hard_val.mat")
_GT_SUBDIRS = ((), ("wider_face_split",), ("eval_tools", "ground_truth"), ("ground_truth",))
_IMAGE_SUBDIRS = (("WIDER_val", "images"), ("images",), ())


def _has_images(folder):
    """True if ``folder`` holds .jpg files directly or one level down (<event>/<name>.jpg)."""
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return False
    if any(e.is_file() and e.name.lower().endswith(".jpg") for e in entries):
        return True
    for e in entries:
        if e.is_dir():
            try:
                with os.scandir(e.path) as sub:
                    if any(s.is_file() and s.name.lower().endswith(".jpg") for s in sub):
                        return True
            except OSError:
                continue
    return False


def find_wider_images_dir(wider_dir):
    """The WIDER FACE val image folder for ``--wider-dir``: the WIDER root (holding WIDER_val/images),
    WIDER_val (holding images/), or the image folder itself (<event>/<name>.jpg, or flat)."""
    if not wider_dir or not os.path.isdir(wider_dir):
        raise OteError(f"{wider_dir}: WIDER FACE folder not found")
    for rel in _IMAGE_SUBDIRS:
        folder = os.path.join(wider_dir, *rel)
        if os.path.isdir(folder) and _has_images(folder):
            return os.path.normpath(folder)
    raise OteError(f"{wider_dir}: no WIDER FACE val image found (give the WIDER root, WIDER_val or "
                   f"WIDER_val/images: <event>/<name>.jpg or <name>.jpg)")


def find_wider_gt_dir(wider_dir, wider_gt_dir=None):
    """The folder with the official .mat files (``WIDER_GT_FILES``).

    Given (``--wider-gt-dir``), or looked for, in this order, in ``wider_dir`` itself, in the image
    folder found in it, and in each folder above the image folder (up to the WIDER root), each as
    the folder itself or its ``wider_face_split/``, ``eval_tools/ground_truth/`` or ``ground_truth/``
    (the places WIDER FACE's archives put them)."""
    if wider_gt_dir:
        candidates = [wider_gt_dir]
    else:
        bases = [wider_dir]
        try:
            images = find_wider_images_dir(wider_dir)
        except OteError:
            images = None
        if images:
            bases += [images, os.path.dirname(images), os.path.dirname(os.path.dirname(images))]
        bases.append(os.path.dirname(os.path.abspath(wider_dir)))
        candidates = []
        for base in bases:
            for rel in _GT_SUBDIRS:
                folder = os.path.normpath(os.path.join(os.path.abspath(base), *rel))
                if folder not in candidates:
                    candidates.append(folder)
    for folder in candidates:
        if all(os.path.isfile(os.path.join(folder, f)) for f in WIDER_GT_FILES):
            return os.path.normpath(folder)
    where = wider_gt_dir or (f"{wider_dir}, its image folder or the wider_face_split / eval_tools/ground_truth "
                             f"folders in or beside them")
    raise OteError(f"WIDER FACE ground truth ({', '.join(WIDER_GT_FILES)}) not found in {where}; give --wider-gt-dir")
