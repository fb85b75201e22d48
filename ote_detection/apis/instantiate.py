"""Instantiate a template in a work dir: its files, the thin scripts, and the pretrained snapshot."""

import ast
import logging
import os
import shutil
import tempfile

from ..config import load_template
from ..utils.download import download
from ..utils.errors import OteError
from ..utils.fileio import check_writable_dir, file_mode, sha256sum, write_error

log = logging.getLogger(__name__)

TEMPLATE_FILES = ("template.yaml",)


def _base_entries(path):
    """(text, [(ast node of a ``_base_ = ...`` value, [base paths as written])]) of one config file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise OteError(f"{path}: cannot be read as a Python config: {exc}") from exc
    entries = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_base_" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError as exc:
                raise OteError(f"{path}: _base_ must be a path or a list of paths") from exc
            entries.append((node.value, [value] if isinstance(value, str) else list(value)))
    return text, entries


def _base_files(path, found):
    """Every file ``path`` inherits from, recursively (absolute paths, into ``found``)."""
    for _, bases in _base_entries(path)[1]:
        for base in bases:
            base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
            if not os.path.isfile(base_path):
                raise OteError(f"{path}: _base_ file {base} not found at {base_path}")
            if base_path not in found:
                found.add(base_path)
                _base_files(base_path, found)
    return found


def _write_rewritten(src, dst, where):
    """Copy config ``src`` to ``dst`` with its ``_base_`` entries pointing at ``where[base file]``."""
    text, entries = _base_entries(src)
    for node, bases in reversed(entries):
        rel = [os.path.relpath(where[os.path.normpath(os.path.join(os.path.dirname(src), b))], os.path.dirname(dst))
               for b in bases]
        new = repr(rel[0]) if isinstance(ast.literal_eval(node), str) else "".join(
            ["[\n"] + [f"    {r!r},\n" for r in rel] + ["]"])
        lines = text.splitlines(keepends=True)

        def offset(lineno, col):  # ast columns count UTF-8 bytes
            return sum(map(len, lines[:lineno - 1])) + len(lines[lineno - 1].encode()[:col].decode())
        text = text[:offset(node.lineno, node.col_offset)] + new + text[offset(node.end_lineno, node.end_col_offset):]
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "w", encoding="utf-8") as f:
        f.write(text)


def copy_config(src, dst, base_dir):
    """Copy an mmdetection-style config to ``dst`` and the files it inherits (``_base_``, recursively) into
    ``base_dir``, keeping their layout relative to the folder that holds them all (the template tree's
    ``_base_/``: models/, datasets/, schedules/, default_runtime.py); the copied ``_base_`` entries point at
    the copies, so the work dir is self-contained. When that folder is named ``_base_`` its other config
    files come too, to switch a concern by editing one line."""
    src = os.path.abspath(src)
    files = _base_files(src, set())
    if files and os.path.basename(os.path.commonpath([os.path.dirname(f) for f in files])) == "_base_":
        tree = os.path.commonpath([os.path.dirname(f) for f in files])
        for folder, _, names in os.walk(tree):
            for name in names:
                if name.endswith(".py"):
                    files.add(os.path.join(folder, name))
                    _base_files(os.path.join(folder, name), files)
    root = os.path.commonpath([os.path.dirname(f) for f in files]) if files else ""
    where = {f: os.path.join(base_dir, os.path.relpath(f, root)) for f in files}
    for f in sorted(files):
        _write_rewritten(f, where[f], where)
    _write_rewritten(src, dst, where)


def instantiate(template_path, work_dir, load_snapshot=True, omz_weights=None):
    """Copy the template folder's config files and dependencies into ``work_dir``; returns the list of files.

    ``omz_weights``: a precision (FP32, FP16, FP16-INT8): when the OTE snapshot cannot be downloaded, the
    template's Open Model Zoo IR of that precision is fetched into ``work_dir/omz_ir`` and its weights
    imported into the snapshot instead (``apis/omz_weights.py``, ``apis/import_weights.py``); refused at
    once (one line naming the templates that have them) for a template without Open Model Zoo weights.

    The work dir is complete or not made: everything is built in a temporary folder beside it (downloads
    and the import included), then moved in (a new work dir: one rename). A failure (offline, a full disk)
    leaves no new work dir, and an existing one as it was."""
    template_path = os.path.abspath(template_path)
    template = load_template(template_path)
    if omz_weights and not template.get("omz_weights"):
        from .omz_weights import omz_templates
        raise OteError(f"--omz-weights: {template['name']} has no Open Model Zoo weights; the templates that have "
                       f"them: {', '.join(sorted(omz_templates()))}")
    src_dir = os.path.dirname(template_path)
    work_dir = os.path.abspath(os.fspath(work_dir))
    existed = os.path.isdir(work_dir)
    check_writable_dir(work_dir, "work dir")  # creates it: removed again below while it holds nothing of ours
    try:
        build = tempfile.mkdtemp(prefix=f".{os.path.basename(work_dir)}.instantiate.", dir=os.path.dirname(work_dir))
    except OSError as exc:
        if not existed:
            os.rmdir(work_dir)
        raise write_error(work_dir, exc) from None
    try:
        written = _instantiate(template_path, template, src_dir, build, load_snapshot, omz_weights, work_dir)
        _move_into(build, work_dir, existed)
    except OSError as exc:  # a full disk or a folder inside the work dir that cannot be written
        raise write_error(work_dir, exc) from None
    finally:
        shutil.rmtree(build, ignore_errors=True)
        if not existed and os.path.isdir(work_dir) and not os.listdir(work_dir):
            os.rmdir(work_dir)
    return written


def _move_into(build, work_dir, existed):
    """Move the built files into ``work_dir``: a new (empty) work dir is replaced by the build folder in one
    rename; into an existing one each entry is moved (a folder of ours, such as ``_base_``, replaced)."""
    if not existed and not os.listdir(work_dir):
        os.rmdir(work_dir)
        os.rename(build, work_dir)
        os.chmod(work_dir, file_mode(directory=True))
        return
    for name in sorted(os.listdir(build)):
        src, dst = os.path.join(build, name), os.path.join(work_dir, name)
        if os.path.isdir(src) and os.path.isdir(dst) and not os.path.islink(dst):
            shutil.rmtree(dst)
        os.replace(src, dst)


def _instantiate(template_path, template, src_dir, work_dir, load_snapshot, omz_weights=None, final_dir=None):
    """Write the work dir's files into ``work_dir`` (the build folder); a snapshot already in ``final_dir``
    with the right checksum is kept there, not fetched again."""
    written = []
    for name in sorted(os.listdir(src_dir)):
        path = os.path.join(src_dir, name)
        if os.path.isfile(path) and name.endswith(".py"):
            copy_config(path, os.path.join(work_dir, name), os.path.join(work_dir, "_base_"))
            written.append(name)
        elif os.path.isfile(path) and name.endswith((".yaml", ".json")):
            shutil.copyfile(path, os.path.join(work_dir, name))
            written.append(name)
    for dep in template["dependencies"]:
        if "source" not in dep or "destination" not in dep:
            raise OteError(f"{template_path}: a dependency has no 'source' or 'destination'")
        source, destination = dep["source"], os.path.join(work_dir, dep["destination"])
        if "://" in source:
            if not load_snapshot:
                log.info("skipping %s (--do-not-load-snapshot)", source)
                continue
            if "sha256" not in dep:
                raise OteError(f"{template_path}: dependency {source} has no 'sha256'")
            present = os.path.join(final_dir or work_dir, dep["destination"])
            if os.path.isfile(present) and sha256sum(present) == dep["sha256"]:
                written.append(dep["destination"])
                continue
            try:
                download(source, dep["sha256"], dep.get("size"), destination,
                         offline_hint="continue with --do-not-load-snapshot or --omz-weights")
            except OteError as exc:
                if not omz_weights or not template.get("omz_weights") or dep["destination"] != \
                        template.get("initial_weights", "snapshot.pth"):
                    raise
                log.warning("%s; importing Open Model Zoo's %s IR instead", exc, omz_weights)
                from .import_weights import import_openvino_weights
                from .omz_weights import download_omz_ir
                ir = download_omz_ir(template_path, omz_weights, os.path.join(work_dir, "omz_ir"))
                import_openvino_weights(template_path, ir, destination)
        else:
            path = os.path.normpath(os.path.join(src_dir, source))
            if not os.path.isfile(path):
                raise OteError(f"{template_path}: dependency {source} not found at {path}")
            shutil.copyfile(path, destination)
            if destination.endswith(".py"):
                os.chmod(destination, 0o755)
        written.append(dep["destination"])
    return written
