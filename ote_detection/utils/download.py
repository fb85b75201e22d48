"""Downloads with a checksum, a cache and resume; one clear error line when offline."""

import hashlib
import os
import shutil
import urllib.error
import urllib.request

from tqdm import tqdm

from .errors import OteError

_ALGORITHMS = {64: "sha256", 96: "sha384"}  # hex digest length -> algorithm


def checksum_algorithm(digest):
    """'sha256' or 'sha384' for a hex digest of 64 or 96 characters (Open Model Zoo's model.yml lists
    sha384 'checksum's; OTE's templates sha256)."""
    algorithm = _ALGORITHMS.get(len(str(digest)))
    if algorithm is None or any(c not in "0123456789abcdef" for c in str(digest).lower()):
        raise OteError(f"checksum {digest!r} is neither a sha256 (64 hex digits) nor a sha384 (96) digest")
    return algorithm


def file_digest(path, algorithm="sha256", chunk=1 << 20):
    """Hex digest of the file at ``path`` with ``algorithm`` (a hashlib name)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "ote-face")


def cache_dir():
    return os.environ.get("OTE_FACE_CACHE", DEFAULT_CACHE)


def download(url, sha256, size=None, destination=None, timeout=30, offline_hint="continue with --do-not-load-snapshot"):
    """Fetch ``url`` into the cache (resuming a partial file), check size and checksum, copy to ``destination``.

    ``sha256``: the expected hex digest, sha256 (64 hex digits) or sha384 (96, as Open Model Zoo publishes).
    ``offline_hint``: what the one-line error proposes when the server cannot be reached."""
    sha256 = str(sha256).lower()
    algorithm = checksum_algorithm(sha256)
    cached = os.path.join(cache_dir(), "downloads", sha256, os.path.basename(url))
    if not (os.path.isfile(cached) and file_digest(cached, algorithm) == sha256):
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
            raise OteError(f"cannot download {url} ({reason}); {offline_hint}, or put the file "
                           f"({algorithm} {sha256}) at {where}") from exc
        if size and os.path.getsize(partial) != size:
            got = os.path.getsize(partial)
            if got > size:  # another file than the published one: resuming cannot help
                os.remove(partial)
                raise OteError(f"download of {url} has {got} bytes, more than the published {size}: the server gives "
                               f"another file than the one recorded (a mirror of another release?); the file was removed")
            raise OteError(f"download of {url} is incomplete ({got} of {size} bytes); run the command again to resume")
        digest = file_digest(partial, algorithm)
        if digest != sha256:
            os.remove(partial)
            raise OteError(f"download of {url} has {algorithm} {digest}, expected {sha256}; the file was removed")
        os.replace(partial, cached)
    if destination:
        os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
        shutil.copyfile(cached, destination + ".tmp")
        os.replace(destination + ".tmp", destination)
    return destination or cached
