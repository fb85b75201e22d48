"""Face datasets in any common format, read through Datumaro (OpenVINO's dataset library) into our COCO dict.

``--data-format NAME`` takes Datumaro's format names: ``voc`` / ``voc_detection`` (Pascal VOC), ``yolo``,
``cvat``, ``wider_face``, ``kitti``, ``datumaro``, ``coco_instances``, ... (``datumaro.Environment().importers``
lists them). ``coco`` (the default) is our own reader, ``data.coco.load_coco_files``, with no Datumaro import.

``load_dataset(ann_files, data_roots, data_format, subset, role)`` is the one call every entry point (train,
compress, evaluate, the size sweep, the anchor clustering) reads a dataset with, whatever its format: it
returns ``DatasetFiles``, the COCO json files and image roots ``data.coco`` reads (``CocoDataset``,
``load_coco_files``: ``DatasetFiles.load``). With a Datumaro format each ``--*-ann-files`` entry is a dataset
as Datumaro imports it (its folder, or for some formats the annotation file) and ``--*-data-roots`` is not
given: the images are where the dataset says. ``prepare_datasets`` (the one conversion, behind
``load_dataset``) converts each into our in-memory COCO dict (``datumaro_to_coco``): the category named
``face`` (found by name; a dataset without one is one line listing its categories), every object as its
bounding box with its attributes, image paths and sizes as Datumaro reports them, read as the format's authors
meant it (docs/data_formats.md): flags that mark an object not to be scored make an ignored region (iscrowd),
flags of objects not in the frame leave them out, other shapes become their bounding rectangles, the subset
read fits the dataset's role or the user's ``--*-subset``, symlinks are followed, and Datumaro's errors are
one line naming the user's file. The dict is written to a COCO json in a temporary folder (removed when the
process ends; messages name the dataset instead) and read back by ``load_coco_files``: the same checks (files
present, headers readable, sizes, boxes degenerate, outside, clipped, duplicated, other categories counted)
apply whatever the format.

WIDER FACE's txt (``wider_face``): Datumaro's importer gives the same boxes as ``formats.wider`` (all 39,708 of
wider_face_val_bbx_gt.txt, the 10 of zero size and the one of negative size included; a negative size is
dropped here, as OTE's converter did) but names three of the six attribute columns wrongly (it reads the
file's ``invalid occlusion pose`` as ``occluded pose invalid``): they are renamed back by column here.
It also accepts a file cut short without a word (a count of 2 boxes followed by 1 line gives 1 box);
``tools/wider_to_coco.py`` keeps our parser, which names the file and line of such damage.
"""

import atexit
import contextlib
import dataclasses
import glob
import json
import logging
import math
import os
import shutil
import tempfile

from ..utils.errors import OteError, show_as
from ..utils.fileio import atomic_dir, atomic_path, write_error
from ..data.coco import check_data_flags, flag_value, load_coco_files, split_paths

log = logging.getLogger(__name__)

COCO = "coco"
# Datumaro's wider_face column names, in file order, -> the file's own (WIDER FACE readme)
_WIDER_COLUMNS = {"occluded": "invalid", "pose": "occlusion", "invalid": "pose"}
_WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")

# attribute flags (lower case) that mark an object as not to be scored: read as COCO iscrowd = 1, an ignored
# region (pycocotools: neither a face to find nor a false positive; training: not a target, as mmdetection).
# VOC difficult, DOTA difficulty, COCO/Datumaro is_crowd, MOT ignored (confidence 0), WIDER FACE invalid, Open
# Images is_group_of
NOT_SCORED = ("difficult", "difficulty", "is_crowd", "iscrowd", "ignore", "ignored", "invalid", "is_group_of")
# flags that mark an object as not in the frame (CVAT's outside: a track after its object left): left out
NOT_PRESENT = ("outside",)
# flags that describe a present object: nothing changes (counted in the data line)
DESCRIBING = ("occluded", "truncated", "occlusion", "blur", "is_occluded", "is_truncated", "is_depiction")
# labels of regions not to be scored for any class (KITTI's DontCare): an ignored region of every class read
IGNORE_LABELS = ("dontcare", "dont_care", "ignore", "ignored")
# the subsets a role reads from a dataset of several subsets when none is chosen, first found wins
ROLE_SUBSETS = {"train": ("train", "training", "trainval"), "val": ("val", "valid", "validation", "test"),
                "test": ("test", "testing", "val", "valid", "validation")}
_ROLES = {"--train": "train", "--val": "val", "--test": "test"}
ALL_SUBSETS = "*"  # pick_subsets: every subset, each image keeping its subset (convert_dataset.py to a Datumaro format)
# shapes read as their bounding rectangle; any other shape of a class read (points, polylines...) is counted
_SHAPES = ("bbox", "rotated_bbox", "polygon", "mask", "ellipse")


def is_coco(data_format):
    return data_format in (None, "", COCO)


def _datumaro():
    try:
        import datumaro as dm
    except ImportError as exc:
        raise OteError(f"--data-format other than coco needs Datumaro: pip install datumaro ({exc})") from exc
    return dm


def _first_line(exc):
    text = str(exc).strip()
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        text = f"{text} {str(cause).strip()}"
    return text.splitlines()[0] if text else type(exc).__name__


def _number(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value


@contextlib.contextmanager
def _symlinks_followed():
    """While reading: Datumaro (1.13) refuses an image whose *real* path lies outside the dataset's image
    folder ("Resulting path ... escapes base directory", datumaro PR #1255): a guard against item names
    holding '..' that also refuses the user's own symlinked files and folders. The guard is kept lexical
    here (no '..', nothing absolute: the names still cannot leave the folder), and links are followed, as
    our COCO reader follows them."""
    try:
        from datumaro.util import os_util
    except ImportError:
        os_util = None
    original = getattr(os_util, "_is_within_base", None)
    if original is None:
        yield
        return

    def lexical(path, base_dir):
        base, full = os.path.abspath(base_dir), os.path.abspath(path)
        try:
            return os.path.commonpath([base, full]) == base
        except ValueError:
            return False

    os_util._is_within_base = lexical
    try:
        yield
    finally:
        os_util._is_within_base = original


def _counts_text(counts):
    return ", ".join(f"{name} {n}" for name, n in counts.items())


def pick_subsets(counts, role=None, chosen=None, where="", flag="--subset"):
    """The subsets to read of a dataset whose subsets hold ``counts`` {name: images}, and why (for the data
    line). ``chosen`` (the user's ``flag``, comma-separated names, any case) wins; a dataset of one subset
    is read whole; else the first of ``ROLE_SUBSETS[role]`` present. Several subsets and none fitting are
    one OteError line listing them (never merged unasked)."""
    by_lower = {name.lower(): name for name in counts}
    if chosen == ALL_SUBSETS:
        return list(counts), "all subsets, kept apart"
    if chosen:
        names = [n.strip() for n in str(chosen).split(",") if n.strip()]
        unknown = [n for n in names if n.lower() not in by_lower]
        if unknown:
            raise OteError(f"{where}: no subset named {unknown[0]!r} ({flag}); its subsets (images): "
                           f"{_counts_text(counts)}")
        return [by_lower[n.lower()] for n in names], f"chosen with {flag}"
    if len(counts) <= 1:
        return list(counts), "its only subset"
    for name in ROLE_SUBSETS.get(role, ()):
        if name in by_lower:
            return [by_lower[name]], f"picked for {flag[:-len('-subset')] or '--subset'}-ann-files; choose others " \
                                     f"with {flag}"
    fits = f"none is a {role} subset ({', '.join(ROLE_SUBSETS[role])})" if role in ROLE_SUBSETS else \
        "they are not merged unasked"
    raise OteError(f"{where}: {len(counts)} subsets (images: {_counts_text(counts)}) and {fits}: choose with "
                   f"{flag} NAME (several, comma-separated, are merged)")


def _voc_root(path):
    return path if os.path.isdir(path) else os.path.dirname(os.path.dirname(os.path.dirname(path)))


def _voc_labelmap_missing(path, data_format):
    """For a VOC dataset without labelmap.txt (and dataset_meta.json): the note that Datumaro then assumes
    the 20 Pascal VOC classes; '' otherwise."""
    if not data_format.startswith("voc"):
        return ""
    root = _voc_root(path)
    if any(os.path.isfile(os.path.join(root, f)) for f in ("labelmap.txt", "dataset_meta.json")):
        return ""
    return (f"no labelmap.txt in {root}, so the 20 Pascal VOC classes are assumed (Datumaro's fallback); "
            "add a labelmap.txt listing your classes, e.g. the lines 'background:0,0,0::' and 'face:255,0,0::'")


def _item_of(exc):
    """The (item id, subset) a Datumaro error (or one of its causes) is about, or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(getattr(exc, "item_id", None), tuple):
            return exc.item_id
        exc = exc.__cause__ or exc.__context__
    return None


def _read_error(exc, path, data_format):
    """One line for an error Datumaro raised while reading ``path``: the user's file where it can be told
    (a VOC item's Annotations/<id>.xml), the item, and every message of the error's chain."""
    where = f"{path} ({data_format} dataset)"
    item_id = _item_of(exc)
    if isinstance(item_id, tuple) and item_id:
        where = f"{path} ({data_format} dataset, item {item_id[0]} of subset {item_id[1]})"
        if data_format.startswith("voc"):
            xml = os.path.join(_voc_root(path), "Annotations", f"{item_id[0]}.xml")
            if os.path.isfile(xml):
                where = xml
        elif os.path.isdir(path):  # a format of one annotation file per image (YOLO, KITTI...): name it if found
            found = [f for ext in (".txt", ".xml", ".json")
                     for f in glob.glob(os.path.join(glob.escape(path), "**", glob.escape(item_id[0]) + ext),
                                        recursive=True)]
            if len(found) == 1:
                where = f"{found[0]} ({data_format} dataset {path})"
    texts, seen = [], set()
    link = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        text = str(link).strip().splitlines()[0] if str(link).strip() else ""
        if text.startswith("Failed to import item"):  # Datumaro's wrapper: the item is named above
            text = text.split(": ", 1)[1] if ": " in text else ""
        if text and not any(text in t for t in texts):
            texts.append(text)
        link = link.__cause__ or link.__context__
    problem = ": ".join(texts) or type(exc).__name__
    if "Undeclared label" in problem:
        note = _voc_labelmap_missing(path, data_format)
        problem += f"; {note}" if note else " (not in the dataset's label list)"
    return OteError(f"{where}: {problem}")


def _cvat_ellipses(path, skipped):
    """CVAT's <ellipse> shapes, which Datumaro 1.13's CVAT reader skips without a word:
    {(item id, frame): [(label name, x, y, w, h, attributes)]}, (x, y, w, h) the bounding rectangle
    (rotation in degrees about the centre, as CVAT writes it); an ellipse of a track frame whose
    ``outside`` is 1 gets ``outside: True``. The <cuboid> and <skeleton> shapes Datumaro skips too are
    counted into ``skipped`` {tag: n}."""
    import xml.etree.ElementTree as ET
    if os.path.isfile(path):
        files = [path]
    else:
        from datumaro.plugins.data_formats.cvat.base import CvatImporter
        files = [s["url"] for s in CvatImporter.find_sources(path)]
    found = {}
    for xml in files:
        image = track = None
        for event, el in ET.iterparse(xml, events=("start", "end")):
            if event == "start":
                if el.tag == "image":
                    image = el.attrib
                elif el.tag == "track":
                    track = el.attrib
                continue
            if el.tag == "ellipse" and (image is not None or track is not None):
                a = el.attrib
                cx, cy, rx, ry = (float(a[k]) for k in ("cx", "cy", "rx", "ry"))
                t = math.radians(float(a.get("rotation", 0) or 0))
                hw, hh = math.hypot(rx * math.cos(t), ry * math.sin(t)), math.hypot(rx * math.sin(t), ry * math.cos(t))
                attrs = {c.attrib.get("name"): c.text or "" for c in el if c.tag == "attribute"}
                attrs["occluded"] = a.get("occluded") == "1"
                if image is not None:
                    key = (os.path.splitext(image.get("name", ""))[0], int(image["id"]))
                    label = a.get("label")
                else:
                    key = ("frame_%06d" % int(a["frame"]), int(a["frame"]))
                    label = track.get("label")
                    attrs["outside"] = a.get("outside") == "1"
                found.setdefault(key, []).append((label, cx - hw, cy - hh, 2 * hw, 2 * hh, attrs))
            elif el.tag in ("cuboid", "skeleton") and (image is not None or track is not None):
                skipped[el.tag] = skipped.get(el.tag, 0) + 1
            elif el.tag == "image":
                image = None
            elif el.tag == "track":
                track = None
            if el.tag in ("image", "track"):
                el.clear()
    return found


def _objects(item, extra, names):
    """The objects of a Datumaro item as (kind, label index, [x, y, w, h], attributes): one per annotation,
    except that annotations of one ``group`` and label are one object (COCO: an instance's polygons,
    mask and box), read as its box if it has one, else as the rectangle around all of its shapes."""
    shapes = []
    for ann in item.annotations:
        label = getattr(ann, "label", None)
        if label is None:
            continue
        kind = ann.type.name
        box = [float(v) for v in ann.get_bbox()] if kind in _SHAPES else None
        shapes.append((kind, int(label), box, dict(ann.attributes), int(getattr(ann, "group", 0) or 0)))
    for label_name, x, y, w, h, attrs in extra:
        index = names.index(label_name) if label_name in names else None
        if index is not None:
            shapes.append(("ellipse", index, [x, y, w, h], attrs, 0))
    objects, groups = [], {}
    for shape in shapes:
        kind, label, box, attrs, group = shape
        if not group:
            objects.append([kind, label, box, attrs])
            continue
        key = (group, label)
        if key not in groups:
            groups[key] = [kind, label, box, attrs]
            objects.append(groups[key])
            continue
        obj = groups[key]
        if obj[0] == "bbox" or box is None:
            continue
        if kind == "bbox" or obj[2] is None:
            obj[:] = [kind, label, box, attrs]
        else:
            x1, y1 = min(obj[2][0], box[0]), min(obj[2][1], box[1])
            x2, y2 = max(obj[2][0] + obj[2][2], box[0] + box[2]), max(obj[2][1] + obj[2][3], box[1] + box[3])
            obj[2] = [x1, y1, x2 - x1, y2 - y1]
    return objects


def datumaro_to_coco(path, data_format, classes=("face",), subset=None, role=None, flag="--subset"):
    """The dataset at ``path`` in Datumaro format ``data_format`` as a COCO dict (``file_name`` absolute
    image paths; categories: all of the dataset's labels, ids 1..n; boxes as [x, y, w, h] with their
    attributes; ``subset`` of each image; ``info``: where it was read from and which subsets), read as its
    format's authors meant it (docs/data_formats.md):

    * flags: an object flagged ``NOT_SCORED`` (VOC difficult, is_crowd, MOT ignored, WIDER invalid...) or
      labelled as in ``IGNORE_LABELS`` (KITTI DontCare: then one for each of ``classes``) gets iscrowd 1,
      an ignored region; one flagged ``NOT_PRESENT`` (CVAT outside) is left out; ``DESCRIBING`` flags
      (occluded, truncated...) change nothing. Values are read by meaning (``flag_value``).
    * shapes: polygons, masks, ellipses (also CVAT's, which Datumaro skips) and rotated boxes become their
      bounding rectangles; other shapes of ``classes`` are left out; all counted.
    * subsets: ``subset`` (the user's ``flag``), or the one fitting ``role`` ('train', 'val', 'test';
      ``pick_subsets``); never several merged unasked.
    * links: symlinked images and folders are read (``_symlinks_followed``).

    The data line (logged) names the subsets read with their image counts and counts each of the above.
    Any error Datumaro raises, importing or iterating, is one OteError line naming the user's file."""
    dm = _datumaro()
    where = f"{path} ({data_format})"
    if not os.path.exists(path):
        raise OteError(f"{path}: dataset not found (--data-format {data_format})")
    logging.getLogger("datumaro").setLevel(logging.ERROR)
    with _symlinks_followed():
        try:
            dataset = dm.Dataset.import_from(path, data_format)
        except KeyError as exc:
            known = sorted(dm.Environment().importers)
            raise OteError(f"--data-format {data_format}: not a Datumaro format (e.g. {', '.join(known[:12])}, "
                           "...)") from exc
        except Exception as exc:  # Datumaro raises many kinds of errors for a dataset it cannot read
            if _item_of(exc):
                raise _read_error(exc, path, data_format) from exc
            raise OteError(f"{path}: cannot be read as a {data_format} dataset ({_first_line(exc)})") from exc
        try:
            counts = {name: len(dataset.get_subset(name)) for name in dataset.subsets()}  # reads every item
        except Exception as exc:  # noqa: BLE001 - Datumaro reads lazily: its errors about items come here
            raise _read_error(exc, path, data_format) from exc
        label_cat = dataset.categories().get(dm.AnnotationType.label)
        names = [c.name for c in label_cat.items] if label_cat is not None else []
        if not any(c in names for c in classes):
            note = _voc_labelmap_missing(path, data_format)
            raise OteError(f"{path}: no category named {' or '.join(repr(c) for c in classes)} ({data_format} dataset"
                           + (f"); {note}" if note else f"; categories: {sorted(names)})"))
        chosen, why = pick_subsets(counts, role, subset, where, flag)
        stats = {"ignored": {}, "left out": {}, "kept": {}, "shapes": {}, "other shapes": {}}
        ellipses = _cvat_ellipses(path, stats["other shapes"]) if data_format.startswith("cvat") else {}
        coco = {"images": [], "annotations": [],
                "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
                "info": {"description": f"{path} read as {data_format}", "subsets": chosen}}
        try:
            items = [item for name in chosen for item in dataset.get_subset(name)] if len(counts) > 1 else dataset
            for item in items:
                _add_item(coco, item, ellipses, names, classes, data_format, path, stats)
        except OteError:
            raise
        except Exception as exc:  # noqa: BLE001 - Datumaro reads lazily: its errors come while iterating
            raise _read_error(exc, path, data_format) from exc
    if not coco["images"]:
        raise OteError(f"{path}: no images in this {data_format} dataset")
    log.info("%s", _data_line(where, coco, counts, chosen, why, stats, _voc_labelmap_missing(path, data_format)))
    return coco


def _count(table, key, n=1):
    table[key] = table.get(key, 0) + n


def _add_item(coco, item, ellipses, names, classes, data_format, path, stats):
    image_path = getattr(item.media, "path", None)
    if not image_path:
        raise OteError(f"{path}: item {item.id} has no image ({data_format} dataset)")
    image = {"id": len(coco["images"]) + 1, "file_name": os.path.abspath(image_path),
             "datumaro_id": str(item.id), "subset": str(item.subset)}
    try:
        size = item.media.size if getattr(item.media, "has_size", False) else None
    except Exception:  # noqa: BLE001 - a size Datumaro cannot tell is read from the header later
        size = None
    if size:
        image.update(height=int(size[0]), width=int(size[1]))
    coco["images"].append(image)
    wider = data_format == "wider_face"
    extra = ellipses.get((str(item.id), item.attributes.get("frame")), [])
    for kind, label, box, attrs in _objects(item, extra, names):
        name = names[label] if 0 <= label < len(names) else None
        if box is None:
            if name in classes:
                _count(stats["other shapes"], kind)
            continue
        x, y, w, h = box
        if wider and (w < 0 or h < 0):
            continue  # as OTE's WIDER converter (formats.wider): a negative size is dropped
        attrs = {(_WIDER_COLUMNS.get(k, k) if wider else k): v for k, v in attrs.items()}
        flags = {}
        for key in (*NOT_SCORED, *NOT_PRESENT, *DESCRIBING):
            if key in attrs:
                value = flag_value(attrs[key])
                if value is None:
                    if key in DESCRIBING:
                        continue
                    raise OteError(f"{path} ({data_format} dataset, item {item.id}): attribute {key} = "
                                   f"{attrs[key]!r} is not a yes/no value (1/0, true/false, yes/no)")
                flags[key] = value
                if key not in DESCRIBING:  # e.g. WIDER's occlusion 0/1/2 and blur 0/1/2 keep their levels
                    attrs[key] = int(value)
        if any(flags.get(k) for k in NOT_PRESENT):
            _count(stats["left out"], next(k for k in NOT_PRESENT if flags.get(k)))
            continue
        if kind != "bbox":
            _count(stats["shapes"], kind)
        for k in DESCRIBING:
            if flags.get(k):
                _count(stats["kept"], k)
        crowd = [k for k in NOT_SCORED if flags.get(k)]
        if crowd:
            _count(stats["ignored"], crowd[0])
        labels = [label]
        if name is not None and name.lower() in IGNORE_LABELS:
            labels = [names.index(c) for c in classes if c in names]
            crowd = ["label " + name]
            _count(stats["ignored"], crowd[0])
        for k in ("is_crowd", "iscrowd"):
            attrs.pop(k, None)
        for index in labels:
            entry = {"id": len(coco["annotations"]) + 1, "image_id": image["id"], "category_id": index + 1,
                     "bbox": [x, y, w, h], "area": max(w, 0.0) * max(h, 0.0), "iscrowd": int(bool(crowd))}
            entry.update({k: _number(v) for k, v in attrs.items() if k not in entry})
            coco["annotations"].append(entry)


def _data_line(where, coco, counts, chosen, why, stats, labelmap_note):
    n_images = len(coco["images"])
    line = f"{where}: {n_images} image(s), {len(coco['annotations'])} box(es) read"
    if len(counts) > 1 or (chosen and chosen[0] != "default"):
        line += (f"; subset {'+'.join(chosen)} ({why}; the dataset's subsets, images: {_counts_text(counts)})"
                 if len(counts) > 1 else f"; subset {chosen[0]}")
    parts = []
    if stats["ignored"]:
        parts.append("ignored regions (iscrowd, not scored nor trained on): " + _counts_text(stats["ignored"]))
    if stats["left out"]:
        parts.append("left out, not in the frame: " + _counts_text(stats["left out"]))
    if stats["shapes"]:
        parts.append("read as their bounding rectangles: " + _counts_text(stats["shapes"]))
    if stats["other shapes"]:
        parts.append("left out, shapes that are not regions: " + _counts_text(stats["other shapes"]))
    if stats["kept"]:
        parts.append("flags of present faces, kept as faces: " + _counts_text(stats["kept"]))
    if labelmap_note:
        parts.append(labelmap_note.split(";")[0])
    return line + "".join(f"; {p}" for p in parts)


_TMP = []
_READ_AS = {}  # (dataset's real path, subsets read) -> the flag prefix that read it first in this process
#               (a dataset read for training and for validation: said)


def _tmp_dir():
    if not _TMP:
        folder = tempfile.mkdtemp(prefix="ote_face_datasets_")
        _TMP.append(folder)
        atexit.register(shutil.rmtree, folder, True)
    return _TMP[0]


def prepare_datasets(ann_files, data_roots, data_format=COCO, classes=("face",), prefix="--train", subset=None,
                     need_roots=True):
    """``(ann_files, data_roots)`` that ``load_coco_files`` reads: unchanged for ``coco`` (no Datumaro
    import); for another format each dataset in ``ann_files`` converted into a COCO json (temporary
    folder), with ``/`` as its data root (the image paths are absolute). ``prefix``: of the flags, for
    the messages (``--train``, ``--val``, ``--test``); it also names the role that picks the subset read
    (``pick_subsets``) unless ``subset`` (the value of ``{prefix}-subset``) names it. Messages that would
    name the temporary json name the dataset as given (``utils.errors.show_as``). ``need_roots``: as
    ``load_dataset``. Callers read a dataset with ``load_dataset``."""
    if is_coco(data_format):
        if subset and split_paths(ann_files):
            raise OteError(f"{prefix}-subset {subset}: a COCO json has no subsets; {prefix}-subset is for a "
                           "dataset of a Datumaro --data-format (e.g. voc)")
        if need_roots or split_paths(data_roots):
            check_data_flags(ann_files, data_roots, prefix)  # a half-given pair is one line naming the flag
        return ann_files, data_roots
    if not ann_files:
        return ann_files, data_roots
    if data_roots:
        raise OteError(f"--data-format {data_format}: give each dataset (its folder, or file) with {prefix}-ann-files; "
                       f"{prefix}-data-roots is for COCO files only")
    out_files = []
    for path in split_paths(ann_files):
        coco = datumaro_to_coco(path, data_format, classes, subset=subset, role=_ROLES.get(prefix),
                                flag=f"{prefix}-subset")
        key = (os.path.realpath(path), tuple(coco["info"]["subsets"]))
        other = _READ_AS.setdefault(key, prefix)
        if other != prefix and "--train" in (other, prefix):
            log.warning("%s (%s): %s-ann-files reads the images %s-ann-files reads (subset %s): its AP is measured "
                        "on the same images; give a dataset with train and val subsets, or choose them with "
                        "%s-subset", path, data_format, prefix, other, "+".join(key[1]), prefix)
        out_files.append(temporary_json(coco, path, data_format))
    return out_files, [os.path.abspath(os.sep)] * len(out_files)


@dataclasses.dataclass(frozen=True)
class DatasetFiles:
    """A dataset as ``data.coco`` reads it (``load_dataset``): ``ann_files`` (COCO json paths; of a Datumaro
    format, its conversion in a temporary folder, whose messages name the user's dataset:
    ``utils.errors.show_as``) and ``data_roots`` (their image folders; ``/`` for a conversion, whose image
    paths are absolute), as ``CocoDataset`` and ``load_coco_files`` take them; ``classes`` read; ``flags``:
    the prefix of the user's flags (``--train``, ``--val``, ``--test``) that messages name. False when no
    file is given."""

    ann_files: object
    data_roots: object
    classes: tuple = ("face",)
    flags: str = "--train"

    def __bool__(self):
        return bool(split_paths(self.ann_files))

    def load(self, **kwargs):
        """The merged COCO dict (``data.coco.load_coco_files``: its checks and ``kwargs``)."""
        return load_coco_files(self.ann_files, self.data_roots, self.classes, flags=self.flags, **kwargs)


def load_dataset(ann_files, data_roots=None, data_format=COCO, subset=None, role="train", classes=("face",),
                 need_roots=True):
    """The one call that reads a dataset of any supported format: ``DatasetFiles`` of ``ann_files`` (with
    ``data_roots`` for COCO json; for a Datumaro ``data_format``, the datasets converted by
    ``prepare_datasets``). ``role``: 'train', 'val' or 'test': the flags messages name (``--{role}-...``)
    and the subset read of a dataset of several (``pick_subsets``) unless ``subset`` names it.
    ``need_roots``: False where a COCO json's image sizes alone are read (the anchor clustering): then
    ``data_roots`` may be left out. Errors: one OteError line naming the user's file or flag."""
    flags = f"--{role}"
    ann_files, data_roots = prepare_datasets(ann_files, data_roots, data_format, classes, flags, subset, need_roots)
    return DatasetFiles(ann_files, data_roots, tuple(classes), flags)


def temporary_json(coco, path, data_format, subsets=None):
    """``coco`` (of the dataset ``path``, read as ``data_format``) written as a COCO json in a temporary
    folder removed when the process ends (its images have absolute paths: ``/`` is its data root). Messages
    that would name this json name ``path`` with its format and subsets (``subsets``, default: those read)."""
    json_path = os.path.join(_tmp_dir(), f"{len(os.listdir(_tmp_dir())):03d}_{data_format}.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(coco, f)
    subsets = subsets or coco.get("info", {}).get("subsets") or ["default"]
    show_as(json_path, f"{path} ({data_format}" + (f", subset {'+'.join(subsets)}" if subsets != ["default"] else "")
            + ")")
    return json_path


def write_coco(coco, out_json):
    """Write ``coco`` (from ``datumaro_to_coco``) as a COCO json whose ``file_name`` is relative to the
    json's folder (give that folder as --*-data-roots). Written atomically (``utils.fileio.atomic_path``):
    a failed write (read-only folder, full disk) is one OteError line and leaves nothing behind."""
    folder = os.path.dirname(os.path.abspath(out_json))
    images = [dict(img, file_name=os.path.relpath(img["file_name"], folder).replace(os.sep, "/"))
              for img in coco["images"]]
    with atomic_path(out_json) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(dict(coco, images=images), f)
    return out_json


# how a format writes an ignored region (iscrowd 1): an attribute set true, or a label (KITTI); formats not
# listed have no such flag (YOLO...): their ignored regions are left out, counted
CROWD_FLAG = {"voc": ("attribute", "difficult"), "coco": ("attribute", "is_crowd"),
              "datumaro": ("attribute", "is_crowd"), "cvat": ("attribute", "is_crowd"),
              "kitti": ("label", "DontCare"), "wider_face": ("attribute", "invalid"), "mot": ("attribute", "ignored")}


def crowd_flag(data_format):
    """``CROWD_FLAG``'s entry of a Datumaro export format (``voc_detection`` -> voc's), or None."""
    for prefix, flag in CROWD_FLAG.items():
        if data_format == prefix or data_format.startswith(prefix + "_"):
            return flag
    return None


def coco_to_datumaro(coco, data_format=None):
    """A ``datumaro.Dataset`` of a COCO dict (``file_name`` or ``path`` absolute image paths; each image in
    its ``subset``, else 'default'): bounding boxes with their labels (the dict's category names) and
    attributes; used to write any Datumaro format. ``data_format``: the format to be written: an ignored
    region (iscrowd 1) carries that format's flag (``CROWD_FLAG``), or is left out where it has none;
    WIDER FACE's attributes get Datumaro's column names. Returns (dataset, ignored regions left out)."""
    dm = _datumaro()
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    names = [c["name"] for c in cats]
    flag = crowd_flag(data_format or "datumaro")
    if flag and flag[0] == "label" and flag[1] not in names:
        names.append(flag[1])
    wider = data_format == "wider_face"
    to_datumaro = {v: k for k, v in _WIDER_COLUMNS.items()}
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    skip = {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
    items, left_out = [], 0
    for img in coco["images"]:
        path = img.get("path") or img["file_name"]
        boxes = []
        for ann in by_image.get(img["id"], []):
            attrs = {k: v for k, v in ann.items() if k not in skip and isinstance(v, (int, float, str, bool))}
            label = index[ann["category_id"]]
            if ann.get("iscrowd"):
                if flag is None:
                    left_out += 1
                    continue
                if flag[0] == "label":
                    label = names.index(flag[1])
                else:
                    attrs[flag[1]] = True
            if wider:
                attrs = {to_datumaro.get(k, k): v for k, v in attrs.items()}
            boxes.append(dm.Bbox(*[float(v) for v in ann["bbox"]], label=label, attributes=attrs))
        name = os.path.splitext(os.path.basename(path))[0]
        items.append(dm.DatasetItem(id=name, subset=img.get("subset") or "default",
                                    media=dm.Image.from_file(path=path), annotations=boxes))
    return dm.Dataset.from_iterable(items, categories=names), left_out


def export_with_datumaro(coco, out_dir, data_format, save_media=True):
    """Write ``coco`` (a COCO dict with absolute image paths) as a ``data_format`` dataset in ``out_dir``,
    which must not exist or be empty. It is written into a temporary folder beside it that becomes
    ``out_dir`` when complete (``utils.fileio.atomic_dir``): a failed write (read-only folder, full disk)
    is one OteError line and leaves nothing behind."""
    dataset, left_out = coco_to_datumaro(coco, data_format)
    if left_out:
        log.warning("%d ignored region(s) (iscrowd) left out: %s has no flag for boxes not to be scored",
                    left_out, data_format)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise OteError(f"{out_dir}: exists and is not empty; give a new or empty folder")
    options = {"allow_undeclared_attrs": True} if data_format.startswith("cvat") else {}
    with atomic_dir(out_dir) as tmp:
        try:
            dataset.export(tmp, data_format, save_media=save_media, **options)
        except KeyError as exc:
            raise OteError(f"--to {data_format}: not a Datumaro export format") from exc
        except Exception as exc:  # Datumaro wraps the OSError of a full disk or read-only folder: raise that
            cause = exc
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise write_error(out_dir, cause) from exc
    return out_dir


def convert_dataset(src, src_format, out, dst_format="coco", data_root=None, subset=None, classes=("face",),
                    save_media=False):
    """``tools/convert_dataset.py``: the dataset ``src`` in ``src_format`` (coco, or a Datumaro format) written
    to ``out`` in ``dst_format``: our COCO json (``coco``; image paths relative to the json's folder; a dataset
    of several subsets needs ``subset``) or a Datumaro export format (``out`` a new or empty folder, each image
    keeping its subset, ignored regions with the format's own flag; images copied with ``save_media``).
    The data checks of train.py / eval.py run before anything is written; OUT is checked writable before any
    work; a failed write is one line and leaves nothing. Returns the COCO dict written. Errors: OteError."""
    if is_coco(dst_format) and os.path.isdir(out):
        raise OteError(f"{out}: is a folder; --to coco writes a .json file")
    _check_convert_output(out)
    if is_coco(src_format):
        if subset:
            raise OteError(f"--subset {subset}: a COCO json has no subsets (--subset is for a Datumaro --from)")
        root = data_root or os.path.dirname(os.path.abspath(src))
        coco = load_coco_files([src], [root], classes)
        coco = dict(coco, images=[dict(img, file_name=img["path"]) for img in coco["images"]])
    else:
        subset = subset or (None if is_coco(dst_format) else ALL_SUBSETS)
        coco = datumaro_to_coco(src, src_format, classes, subset=subset)
        # the same checks as train.py / eval.py (files present and readable, sizes, boxes), subset by subset
        for name in coco["info"]["subsets"] if subset == ALL_SUBSETS else [None]:
            part = coco if name is None else _subset_of(coco, name)
            load_coco_files([temporary_json(part, src, src_format, [name] if name else None)],
                            [os.path.abspath(os.sep)], classes)
    if is_coco(dst_format):
        write_coco(coco, out)
        log.info("wrote %s: %d image(s), %d box(es); give %s as the data root", out, len(coco["images"]),
                 len(coco["annotations"]), os.path.dirname(os.path.abspath(out)))
        return coco
    export_with_datumaro(coco, out, dst_format, save_media=save_media)
    log.info("wrote %s (%s): %d image(s)", out, dst_format, len(coco["images"]))
    return coco


def _subset_of(coco, name):
    images = [img for img in coco["images"] if img.get("subset") == name]
    ids = {img["id"] for img in images}
    return dict(coco, images=images, annotations=[a for a in coco["annotations"] if a["image_id"] in ids])


def _check_convert_output(out):
    """One line, before any work, when OUT's nearest existing folder cannot be written (read-only); nothing is
    created here (utils.fileio.check_writable_dir makes the folder it checks)."""
    folder = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise OteError(f"{out}: cannot be created, {folder} is a file")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OteError(f"{out}: cannot write ({folder} is not writable); nothing was read or written")
