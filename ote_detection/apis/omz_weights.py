"""Open Model Zoo's published IRs of a template (face-detection-0200/0202/0204), fetched by name.

Each such template.yaml has an ``omz_weights`` section: per precision (FP32, FP16, FP16-INT8) the URL,
size and sha384 of the .xml and the .bin, as Open Model Zoo's ``models/intel/<name>/model.yml`` lists
them. ``download_omz_ir`` fetches both files with ``utils.download.download`` (cached under
``$OTE_FACE_CACHE``, resumed, checked; one line when offline). ``OTE_FACE_OMZ_URL`` replaces the
storage's base URL (everything before ``<name>/<precision>/<file>``), e.g. for a mirror.
"""

import glob
import os

from ..config import load_template
from ..utils.download import cache_dir, download, file_digest
from ..utils.errors import OteError

PRECISIONS = ("FP32", "FP16", "FP16-INT8")
TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "model_templates")


def omz_templates():
    """{model name: template.yaml path} of the templates with an ``omz_weights`` section."""
    found = {}
    for path in sorted(glob.glob(os.path.join(TEMPLATES_DIR, "*", "*", "template.yaml"))):
        template = load_template(path)
        if template.get("omz_weights"):
            found[template["omz_weights"].get("model", template["name"])] = path
    return found


def template_for(name):
    """template.yaml of the Open Model Zoo model ``name`` (e.g. face-detection-0204)."""
    known = omz_templates()
    if name not in known:
        raise OteError(f"no template with Open Model Zoo weights named {name!r} (known: {', '.join(sorted(known))})")
    return known[name]


def omz_files(template_path, precision="FP16"):
    """[(url, size, sha384, file name)] of the IR's .xml and .bin at ``precision``."""
    template = load_template(template_path)
    section = template.get("omz_weights")
    if not section:
        raise OteError(f"{template_path}: template {template['name']} has no Open Model Zoo weights (omz_weights)")
    files = (section.get("files") or {}).get(precision)
    if not files:
        raise OteError(f"{template_path}: no Open Model Zoo IR at precision {precision} "
                       f"(has: {', '.join(section.get('files') or {})})")
    base = os.environ.get("OTE_FACE_OMZ_URL")
    out = []
    for ext in ("xml", "bin"):
        entry = files.get(ext) or {}
        if not all(k in entry for k in ("source", "size", "sha384")):
            raise OteError(f"{template_path}: omz_weights.files.{precision}.{ext} needs source, size and sha384")
        url = entry["source"]
        if base:
            url = "/".join([base.rstrip("/")] + url.split("/")[-3:])
        out.append((url, int(entry["size"]), str(entry["sha384"]), url.rsplit("/", 1)[-1]))
    return out


def download_omz_ir(template_path, precision="FP16", out_dir=None):
    """Fetch the IR (.xml and .bin) into ``out_dir`` (default: ``<download cache>/omz/<name>/<precision>``);
    returns the .xml path. Files already there with the right checksum are not fetched again."""
    if precision not in PRECISIONS:
        raise OteError(f"--precision {precision}: one of {', '.join(PRECISIONS)}")
    files = omz_files(template_path, precision)
    if out_dir is None:
        out_dir = os.path.join(cache_dir(), "omz", os.path.splitext(files[0][3])[0], precision)
    paths = []
    for url, size, digest, name in files:
        dest = os.path.join(out_dir, name)
        if not (os.path.isfile(dest) and os.path.getsize(dest) == size and file_digest(dest, "sha384") == digest):
            download(url, digest, size, dest, offline_hint="check the connection, or set OTE_FACE_OMZ_URL to a mirror")
        paths.append(dest)
    return paths[0]
