"""Pre-flight checks of image files: found before any compute is spent, not after an epoch.

``check_images(paths)`` reads each file's header (Pillow, lazy: no pixel decoding), checks that
OpenCV has a reader for it, that a JPEG ends with its end-of-image marker and a PNG with its IEND
chunk (the usual ways a copy or download is cut short), and returns each image's size (width,
height) as OpenCV will decode it (EXIF orientation applied). ``decode=True`` decodes every image
fully instead (slower; finds corruption inside the data too). Large lists are checked in parallel
threads. All problems are collected; the error names the first file and counts the others.

Measured on the 20 airport frames (1920x1080 JPEG, page cache warm, 1 thread, best of 3): header +
end-marker check 1.7 ms in all (0.09 ms per image); full decode 1.53 s (77 ms per image, 2 cores shared
with other jobs).
"""

import os
from concurrent.futures import ThreadPoolExecutor

from ..utils.errors import OteError

__all__ = ["check_images", "image_header_size"]

_JPEG_EOI = b"\xff\xd9"
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"


def _tail(f, size, n=1024):
    f.seek(max(0, size - n))
    return f.read()


def image_header_size(path):
    """(width, height) from the file header as OpenCV decodes it; OteError naming the file if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
            if size == 0:
                raise OteError(f"{path}: empty file, not an image")
            if head[:2] == b"\xff\xd8" and _JPEG_EOI not in _tail(f, size):
                raise OteError(f"{path}: truncated JPEG (no end-of-image marker)")
            if head[:8] == _PNG_SIG and _PNG_IEND not in _tail(f, size, 64):
                raise OteError(f"{path}: truncated PNG (no IEND chunk)")
            f.seek(0)
            try:
                with Image.open(f) as img:
                    width, height = img.size
                    orientation = 1
                    if img.format in ("JPEG", "TIFF", "WEBP", "PNG"):
                        try:
                            orientation = int(img.getexif().get(0x0112, 1) or 1)
                        except Exception:  # noqa: BLE001 - a broken EXIF block is not our problem here
                            orientation = 1
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
                raise OteError(f"{path}: cannot decode image (corrupt or not an image file)") from exc
    except OSError as exc:
        raise OteError(f"{path}: cannot read image ({exc.strerror})") from None
    if width <= 0 or height <= 0:
        raise OteError(f"{path}: cannot decode image (size {width}x{height})")
    if orientation in (5, 6, 7, 8):  # OpenCV applies the EXIF rotation: width and height swap
        width, height = height, width
    return int(width), int(height)


def _check_one(path, decode):
    if decode:
        from .transforms import read_image
        h, w = read_image(path).shape[:2]
        return w, h
    return image_header_size(path)


def check_images(paths, decode=False, workers=None, what=None):
    """{path: (width, height)} of every image; one OteError for all problems (first named, others counted).

    ``what``: where the list comes from (an annotation file), added to the message."""
    paths = list(dict.fromkeys(paths))
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    sizes, errors = {}, []

    def run(path):
        try:
            return path, _check_one(path, decode), None
        except OteError as exc:
            return path, None, str(exc)

    if workers <= 1 or len(paths) < (16 if decode else 512):  # a header read is ~0.1 ms: threads cost more
        results = map(run, paths)
    else:
        pool = ThreadPoolExecutor(max_workers=workers)
        results = list(pool.map(run, paths, chunksize=16))
        pool.shutdown()
    for path, size, err in results:
        if err:
            errors.append(err)
        else:
            sizes[path] = size
    if errors:
        more = f" (and {len(errors) - 1} more unreadable image(s))" if len(errors) > 1 else ""
        src = f"; listed in {what}" if what else ""
        raise OteError(f"{errors[0]}{more}{src}")
    return sizes
