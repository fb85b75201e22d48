"""Downloads with a checksum, a cache and resume; one clear error line when offline."""

import os
import shutil
import urllib.error
import urllib.request

from tqdm import tqdm

from .errors import OteError
from .fileio import sha256sum

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "ote-face")


def cache_dir():
    return os.environ.get("OTE_FACE_CACHE", DEFAULT_CACHE)


def download(url, sha256, size=None, destination=None, timeout=30):
    """Fetch ``url`` into the cache (resuming a partial file), check size and sha256, copy to ``destination``."""
    cached = os.path.join(cache_dir(), "downloads", sha256, os.path.basename(url))
    if not (os.path.isfile(cached) and sha256sum(cached) == sha256):
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        partial = cached + ".part"
        have = os.path.getsize(partial) if os.path.isfile(partial) else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if have and response.status != 206:  # the server ignored the range: start again
                    have = 0
                total = size or (int(response.headers.get("Content-Length", 0)) + have) or None
                with open(partial, "ab" if have else "wb") as f, \
                        tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=os.path.basename(url)) as bar:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        f.write(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or exc
            where = destination or cached
            raise OteError(f"cannot download {url} ({reason}); continue with --do-not-load-snapshot, or put the file "
                           f"(sha256 {sha256}) at {where}") from exc
        if size and os.path.getsize(partial) != size:
            got = os.path.getsize(partial)
            if got > size:
                os.remove(partial)
            raise OteError(f"download of {url} is incomplete ({got} of {size} bytes); run the command again to resume")
        digest = sha256sum(partial)
        if digest != sha256:
            os.remove(partial)
            raise OteError(f"download of {url} has sha256 {digest}, expected {sha256}; the file was removed")
        os.replace(partial, cached)
    if destination:
        os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
        shutil.copyfile(cached, destination + ".tmp")
        os.replace(destination + ".tmp", destination)
    return destination or cached
