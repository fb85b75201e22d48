"""The one way every tool reads an image file: training, evaluation, the demo, the anchor tool, calibration.

``probe_image(path)`` reads the header only (Pillow, lazy, ~0.1 ms) and returns an ``ImageInfo``: the size
as the image is read (EXIF orientation applied), the stored size, the orientation, and notes on what an
8-bit BGR network input cannot hold. ``read_image(path)`` decodes the file with OpenCV
(``IMREAD_UNCHANGED``: all channels, the full bit depth) and turns it into the network's BGR uint8 frame
itself, so that every tool reads every file the same way:

* **orientation**: the EXIF orientation tag (JPEG APP1, PNG eXIf, WebP EXIF; the TIFF tag, which libtiff
  applies while decoding) is applied: the frame is the one image viewers and ``cv2.imread`` show, and
  boxes are read in that frame. An orientation only in XMP is ignored, as OpenCV and browsers do
  (Pillow's ``exif_transpose`` would apply it).
* **channels**: gray and palette images are expanded to BGR (exact); an alpha channel is dropped, as
  ``cv2.imread`` does (said when some pixel is transparent: the network sees the colour stored under it);
  CMYK is converted by OpenCV without its colour profile (said); more than 4 channels: the first 3 (said).
* **depth**: 16-bit samples become 8-bit as ``cv2.imread`` does (value >> 8); said when that loses
  information (more distinct values than 8 bits hold), with the value range (a 12-bit image in a 16-bit
  file reads nearly black); floating-point images are taken as 0..1 (said).
* **several frames** (animated GIF, multi-page TIFF): the first is read (said). MPO (a phone's JPEG with a
  second, depth or preview picture) is read as its main picture, without a word.
* **size**: any size OpenCV decodes, up to its limits (``CV_IO_MAX_IMAGE_PIXELS``, default 2^30 pixels,
  and 2^20 per side); larger is one line naming the file and the limit, before decoding. Pillow's
  decompression-bomb limit (179 Mpx) does not apply: Pillow only reads headers here.
* **damage**: the libjpeg/libpng/libtiff messages printed while decoding ("Corrupt JPEG data: premature
  end of data segment" of a file cut short and closed with an end-of-image marker) are caught: damaged
  data is an ``OteError`` naming the file; harmless decoder notes go to the debug log with the file name.

Each note is logged once per kind and process, naming the first file (``report=True``);
``data.checks.check_images`` says them for a whole annotation file before any compute, with counts.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import warnings

import cv2
import numpy as np

from ..utils.errors import OteError

log = logging.getLogger(__name__)

__all__ = ["ImageInfo", "probe_image", "read_image", "decode_image", "report_notes", "opencv_limits",
           "ORIENTATIONS", "apply_orientation", "IMAGE_EXTS", "WRITABLE_EXTS"]

#: file suffixes of the image formats OpenCV reads (where a folder is listed: the demo, calibration); a
#: format this OpenCV build lacks (e.g. .exr, .jxl) is named when such a file is read
IMAGE_EXTS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".gif", ".pbm", ".pgm",
              ".ppm", ".pnm", ".pfm", ".sr", ".ras", ".hdr", ".pic", ".jp2", ".avif", ".exr", ".jxl")
#: the 8-bit formats annotated frames are written in under their own suffix (others are written as .png)
WRITABLE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

#: EXIF orientation tag values (TIFF 6.0 / EXIF 2.3, tag 0x0112): what the stored pixels need to be displayed.
ORIENTATIONS = {
    1: "normal",
    2: "mirrored left-right",
    3: "rotated 180 degrees",
    4: "mirrored top-bottom",
    5: "mirrored along the main diagonal",
    6: "rotate 90 degrees clockwise to display",
    7: "mirrored along the anti-diagonal",
    8: "rotate 90 degrees counter-clockwise to display",
}
_SWAPS = (5, 6, 7, 8)

_JPEG_EOI = b"\xff\xd9"
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"
_PIL_LOCK = threading.Lock()
_STDERR_LOCK = threading.Lock()
_XMP_ORIENTATION = re.compile(rb"tiff:Orientation(?:=\"|>)([1-8])")
# decoder messages that mean the pixel data is damaged (libjpeg's warnings are printed and decoding goes on
# with grey or repeated blocks; libpng's and libtiff's errors end the decode)
_DAMAGE = re.compile(r"Corrupt JPEG data|Premature end of JPEG|Invalid JPEG|JPEG datastream|Bogus|"
                     r"Huffman|Unsupported marker|libpng error|CRC error|IDAT|Read error|TIFFFillStrip|"
                     r"TIFFFillTile|TIFFReadEncoded|Unexpected end", re.I)
_DECODER_LINE = re.compile(r"^(\[ ?(WARN|ERROR|INFO|DEBUG)|libpng|Corrupt JPEG|Premature end of JPEG|Invalid |"
                           r"Warning|JPEG|TIFF|OpenCV|Bogus|Huffman|Unsupported|Not a JPEG|Empty input)")


def opencv_limits():
    """(max pixels, max width, max height) OpenCV decodes: its ``CV_IO_MAX_IMAGE_*`` environment
    variables, default 2^30 pixels and 2^20 pixels per side."""
    def env(name, default):
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default
    return env("CV_IO_MAX_IMAGE_PIXELS", 1 << 30), env("CV_IO_MAX_IMAGE_WIDTH", 1 << 20), \
        env("CV_IO_MAX_IMAGE_HEIGHT", 1 << 20)


class ImageInfo:
    """What the header says. ``width``/``height``: the frame as read (orientation applied), in pixels;
    ``stored``: (width, height) of the pixels as stored; ``orientation``: the EXIF value 1..8 (1: none);
    ``notes``: {kind: text} of what the 8-bit BGR frame cannot hold (refined by decoding)."""

    __slots__ = ("path", "width", "height", "stored", "orientation", "format", "mode", "frames", "notes",
                 "maybe_alpha", "maybe_deep", "decoded")

    def __init__(self, path, stored, orientation=1, fmt=None, mode=None, frames=1):
        self.path, self.stored, self.orientation = path, tuple(int(v) for v in stored), int(orientation)
        self.width, self.height = self.stored[::-1] if self.orientation in _SWAPS else self.stored
        self.format, self.mode, self.frames = fmt, mode, int(frames or 1)
        self.notes, self.maybe_alpha, self.maybe_deep, self.decoded = {}, False, False, False

    @property
    def size(self):
        """(width, height) of the frame as read."""
        return self.width, self.height

    def describe_orientation(self):
        """'EXIF orientation 6 (rotate 90 degrees clockwise to display)'."""
        return f"EXIF orientation {self.orientation} ({ORIENTATIONS.get(self.orientation, 'unknown')})"


def _tail(f, size, n=1024):
    f.seek(max(0, size - n))
    return f.read()


def _exif_orientation(img):
    """The orientation of the EXIF block (not of XMP) and whether XMP holds another one."""
    from PIL import Image

    orientation = 1
    if img.format == "TIFF":
        orientation = img.tag_v2.get(0x0112, 1)
    else:
        raw = img.info.get("exif")
        if raw:
            exif = Image.Exif()
            try:
                exif.load(raw)
                orientation = exif.get(0x0112, 1)
            except Exception:  # noqa: BLE001 - a broken EXIF block: no orientation, as OpenCV
                orientation = 1
    try:
        orientation = int(orientation) if int(orientation) in ORIENTATIONS else 1
    except (TypeError, ValueError):
        orientation = 1
    xmp = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp") or b""
    xmp = xmp.encode("utf-8", "replace") if isinstance(xmp, str) else xmp
    m = _XMP_ORIENTATION.search(xmp) if xmp else None
    xmp_orientation = int(m.group(1)) if m else 1
    return orientation, xmp_orientation


def _header_depth_and_alpha(img, head):
    """(maybe more than 8 bits per sample, maybe transparent) from the header."""
    mode = img.mode
    deep = mode in ("I", "F", "I;16", "I;16B", "I;16L", "I;16N", "I;16S") or mode.startswith("I;")
    if img.format == "PNG" and head[:8] == _PNG_SIG and len(head) > 24:
        deep = deep or head[24] == 16  # IHDR bit depth: Pillow reads 16-bit RGB(A) PNGs as 8-bit modes
    if img.format == "TIFF":
        bits = img.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        deep = deep or max(bits) > 8 or 3 in tuple(img.tag_v2.get(339, (1,)) or (1,))
    alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
    if img.format == "TIFF" and img.tag_v2.get(338):  # ExtraSamples: an alpha channel
        alpha = True
    return deep, alpha


def _check_limits(path, width, height):
    max_pixels, max_w, max_h = opencv_limits()
    if width * height > max_pixels or width > max_w or height > max_h:
        raise OteError(f"{path}: {width}x{height} ({width * height / 1e6:.0f} Mpx) is over OpenCV's decoding limit "
                       f"({max_pixels / 1e6:.0f} Mpx, {max_w}x{max_h} at most: CV_IO_MAX_IMAGE_PIXELS/_WIDTH/_HEIGHT); "
                       "downscale or split the image, or raise the limit with those environment variables")


def probe_image(path):
    """``ImageInfo`` of ``path`` from its header (no pixel decoding); OteError naming the file when it
    is empty, cut short (JPEG without end-of-image marker, PNG without IEND), not an image OpenCV can
    decode, or over OpenCV's size limit. Formats Pillow cannot parse (float TIFF, PFM, HDR...) are
    decoded once with OpenCV instead."""
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(32)
            if size == 0:
                raise OteError(f"{path}: empty file, not an image")
            if head[:2] == b"\xff\xd8" and _JPEG_EOI not in _tail(f, size):
                raise OteError(f"{path}: truncated JPEG (no end-of-image marker)")
            if head[:8] == _PNG_SIG and _PNG_IEND not in _tail(f, size, 64):
                raise OteError(f"{path}: truncated PNG (no IEND chunk)")
            f.seek(0)
            info = None
            with _PIL_LOCK, warnings.catch_warnings():
                # Pillow only parses the header here: its decompression-bomb limit (and warning) is for
                # its own decoder; OpenCV's limit is checked below
                warnings.simplefilter("ignore")
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    with Image.open(f) as img:
                        stored = (img.tag_v2[256], img.tag_v2[257]) if img.format == "TIFF" else img.size
                        orientation, xmp_orientation = _exif_orientation(img)
                        frames = getattr(img, "n_frames", 1) if img.format != "MPO" else 1
                        info = ImageInfo(path, stored, orientation, img.format, img.mode, frames)
                        info.maybe_deep, info.maybe_alpha = _header_depth_and_alpha(img, head)
                except (UnidentifiedImageError, OSError, ValueError, SyntaxError, KeyError, TypeError,
                        EOFError):
                    info = None
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
    except OSError as exc:
        raise OteError(f"{path}: cannot read image ({exc.strerror})") from None
    if info is None:
        return _probe_by_decoding(path)
    if info.width <= 0 or info.height <= 0:
        raise OteError(f"{path}: cannot decode image (size {info.width}x{info.height})")
    with _quiet_stderr():
        readable = cv2.haveImageReader(path)
    if not readable:
        raise OteError(f"{path}: a {info.format} image, a format this OpenCV build cannot decode; convert it to "
                       "JPEG or PNG")
    _check_limits(path, info.width, info.height)
    if info.orientation == 1 and xmp_orientation != 1:
        info.notes["xmp-orientation"] = (f"orientation {xmp_orientation} is given in XMP only and is not applied "
                                         "(as OpenCV and browsers do): the frame is read as stored")
    if info.frames > 1:
        info.notes["frames"] = (f"holds {info.frames} frames (an animation or a multi-page file): only the first "
                                "is read")
    if info.mode == "CMYK":
        info.notes["cmyk"] = "a CMYK image: converted to BGR by OpenCV without its colour profile (colours approximate)"
    return info


def _probe_by_decoding(path):
    with _quiet_stderr():
        readable = cv2.haveImageReader(path)
    if not readable:
        raise OteError(f"{path}: cannot decode image (corrupt or not an image file)")
    img, info = decode_image(path, ImageInfo(path, (0, 0), fmt="other"))
    return info


# ---------------------------------------------------------------------------------------------- decoding

class _Captured:
    text = ""


_CAPTURE = {"pid": None, "file": None}


def _after_fork_in_child():
    """A forked data-loader worker starts with free locks and its own capture file (a lock held by another
    thread of the parent at the fork would otherwise never be released in the child). The parent's capture
    file is closed in the child (its copy of the descriptor: the parent's stays open), not left to the
    garbage collector, which would say "ResourceWarning: unclosed file" under ``-W default``."""
    global _STDERR_LOCK, _PIL_LOCK
    _STDERR_LOCK, _PIL_LOCK = threading.Lock(), threading.Lock()
    inherited = _CAPTURE["file"]
    _CAPTURE.update(pid=None, file=None)
    if inherited is not None:
        with contextlib.suppress(OSError):
            inherited.close()


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def _captured_stderr():
    """Redirect file descriptor 2 (where libjpeg, libpng, libtiff and OpenCV's logger print) into a
    temporary file while decoding; yields an object whose ``text`` is what was printed. One decode at a
    time per process holds the redirection."""
    out = _Captured()
    with _STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:  # no file descriptor 2
            yield out
            return
        if _CAPTURE["pid"] != os.getpid():  # a forked worker gets its own file
            _CAPTURE.update(pid=os.getpid(), file=tempfile.TemporaryFile())
        tmp = _CAPTURE["file"]
        tmp.seek(0)
        tmp.truncate()
        try:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(tmp.fileno(), 2)
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.text = tmp.read().decode("utf-8", "replace")
            other = [line for line in out.text.splitlines(True) if line.strip() and not _DECODER_LINE.match(line)]
            if other:  # printed by someone else meanwhile (another thread): passed on unchanged
                with contextlib.suppress(OSError):
                    os.write(2, "".join(other).encode())


@contextlib.contextmanager
def _quiet_stderr():
    with _captured_stderr() as out:
        yield out
    if out.text.strip():
        log.debug("OpenCV: %s", out.text.strip())


def _decoder_message(text):
    lines = [re.sub(r"^\[ ?\w+:[^\]]*\]\s*(global\s+\S+\s+)?", "", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    return "; ".join(dict.fromkeys(lines))[:300]


def apply_orientation(img, orientation):
    """The pixels ``img`` [H, W, ...] as displayed for an EXIF ``orientation`` (1..8), as ``cv2.imread``
    and Pillow's ``exif_transpose`` turn them."""
    if orientation == 2:
        img = img[:, ::-1]
    elif orientation == 3:
        img = img[::-1, ::-1]
    elif orientation == 4:
        img = img[::-1]
    elif orientation == 5:
        img = img.swapaxes(0, 1)
    elif orientation == 6:
        img = img.swapaxes(0, 1)[:, ::-1]
    elif orientation == 7:
        img = img.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:
        img = img.swapaxes(0, 1)[::-1]
    return np.ascontiguousarray(img)


def _to_bgr8(img, notes):
    """OpenCV's decoded array (any depth, 1..N channels) -> BGR uint8 [H, W, 3], with notes on losses."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    alpha = None
    if img.ndim == 3:
        channels = img.shape[2]
        if channels == 2:
            img, alpha = img[:, :, 0], img[:, :, 1]
        elif channels == 4:
            img, alpha = img[:, :, :3], img[:, :, 3]
        elif channels > 4:
            notes["channels"] = f"has {channels} channels: the first 3 are read as BGR, the others are not used"
            img = img[:, :, :3]
    if alpha is not None:
        opaque = np.iinfo(alpha.dtype).max if alpha.dtype.kind in "ui" else 1.0
        transparent = int(np.count_nonzero(alpha < opaque))
        if transparent:
            notes["alpha"] = (f"has transparent pixels ({100.0 * transparent / alpha.size:.1f}% of the image): the "
                              "alpha channel is dropped, as cv2.imread does, and the network sees the colour stored "
                              "under them")
    if img.dtype == np.uint16:
        values = np.bincount(img.ravel(), minlength=65536)
        present = values > 0
        distinct16 = int(np.count_nonzero(present))
        distinct8 = int(np.count_nonzero(present.reshape(256, 256).any(axis=1)))
        nonzero = np.flatnonzero(present)
        lo, hi = int(nonzero[0]), int(nonzero[-1])
        if distinct16 > distinct8:
            text = (f"16-bit image (values {lo}..{hi} of 0..65535): reduced to the network's 8-bit input as "
                    "cv2.imread does (value / 256); finer steps are lost")
            if hi < 4096:
                text += f", and it reads nearly black (at most {hi >> 8} of 255): rescale the files to the full range"
            notes["depth"] = text
        img = (img >> 8).astype(np.uint8)
    elif img.dtype.kind == "f":
        finite = np.isfinite(img)
        lo = float(img[finite].min()) if finite.any() else 0.0
        hi = float(img[finite].max()) if finite.any() else 0.0
        notes["depth"] = (f"floating-point image (values {lo:g}..{hi:g}): read as 0..1 -> 0..255 for the network's "
                          "8-bit input" + (", values outside clipped" if lo < 0 or hi > 1 else ""))
        img = np.clip(np.nan_to_num(img.astype(np.float32), nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        info = np.iinfo(img.dtype)
        notes["depth"] = (f"{img.dtype} samples ({info.bits}-bit): scaled to the network's 8-bit input "
                          "(negative values clipped)")
        img = np.clip(img.astype(np.float64) * (255.0 / info.max) + 0.5, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img)


def decode_image(path, info=None):
    """(BGR uint8 [H, W, 3], ``ImageInfo`` with the notes of this decode); see the module docstring."""
    path = os.fspath(path)
    info = info if info is not None else probe_image(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise OteError(f"{path}: cannot read image ({exc.strerror})") from None
    raised = ""
    with _captured_stderr() as out:
        try:
            img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        except cv2.error as exc:  # e.g. a decoder's own size or memory check
            img, raised = None, (str(exc).strip().splitlines() or ["cv2.error"])[-1]
    said = _decoder_message(out.text + "\n" + raised)
    if img is None:
        raise OteError(f"{path}: cannot decode image (corrupt or not an image file{': ' + said if said else ''})")
    if said and _DAMAGE.search(out.text):
        raise OteError(f"{path}: damaged image data ({said}): part of the picture is missing or garbled (a file "
                       "cut short, e.g. by an interrupted copy, and closed with an end marker?); replace or remove it")
    if said:
        log.debug("%s: decoder said: %s", path, said)
    if info.format == "other":  # probed by decoding: the decoder's frame is the truth
        info.stored = (img.shape[1], img.shape[0])
        info.width, info.height = info.stored
    if info.orientation != 1 and info.format != "TIFF":  # libtiff orients TIFF pixels itself
        img = apply_orientation(img, info.orientation)
    notes = dict(info.notes)
    img = _to_bgr8(img, notes)
    info.notes, info.decoded = notes, True
    if (img.shape[1], img.shape[0]) != info.size:
        raise OteError(f"{path}: decodes to {img.shape[1]}x{img.shape[0]} but its header says "
                       f"{info.width}x{info.height} ({info.describe_orientation()}); the file is inconsistent: "
                       "re-save it")
    return img, info


_SAID = set()


def report_notes(info, kinds_said=_SAID):
    """Log each note of ``info`` once per kind and process (naming this, the first, file)."""
    for kind, text in info.notes.items():
        if kind in kinds_said:
            continue
        kinds_said.add(kind)
        log.warning("%s: %s (said once; other such images are read the same way)", info.path, text)


def read_image(path, report=True):
    """Decode an image file to the network's BGR uint8 frame [H, W, 3] (see the module docstring);
    OteError naming the file when it cannot be read faithfully enough to use. ``report``: log what
    the frame cannot hold (once per kind)."""
    img, info = decode_image(path)
    if report and info.notes:
        report_notes(info)
    return img
