"""Atomic writes, output-folder locks and checks: nothing the user already has is lost or left half-written.

* ``atomic_path`` / ``atomic_torch_save`` / ``atomic_write_text``: write a temporary file beside the
  target, then ``os.replace`` it in. The file gets the permissions of any file the user writes
  (0666 minus the umask; ``tempfile.mkstemp`` alone would give 0600). A full disk or a folder that
  says no becomes one line (OteError) naming the path; the old file stays intact.
* ``atomic_dir``: build a whole output folder (an IR export) in a temporary folder beside it and swap
  it in, so a reader sees the old set or the new set, never a mix (see its docstring).
* ``OutputLock``: one process at a time writes an output folder (train, export, compress); the lock
  of a process that died is taken over, with a message.
* ``check_writable_dir`` / ``check_writable_file``: fail before any compute when an output cannot be
  written.

Temporary names carry the writer's process id (``.<name>.<pid>.<random>.tmp``, ``.<name>.old-<pid>``),
so the next run removes what a killed one left behind, and never what a live one is writing.
"""

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil

from .errors import OteError

log = logging.getLogger(__name__)

__all__ = ["atomic_path", "atomic_torch_save", "atomic_write_text", "atomic_dir", "sha256sum", "OutputLock",
           "check_writable_dir", "check_writable_file", "clean_leftovers", "file_mode", "free_bytes",
           "is_write_failure", "write_error", "files_under"]


def files_under(folder, suffixes):
    """Paths of the files under ``folder`` (recursively, symlinked files and folders followed) whose names
    end with one of ``suffixes`` (lower-case), sorted; each real file once, however many links lead to it,
    and a link back into a folder already walked (``self -> .``) is not walked again."""
    seen_dirs, seen_files, found = set(), set(), []
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs.sort()
        dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(root, d)) not in seen_dirs]
        for name in sorted(names):
            path = os.path.join(root, name)
            if name.lower().endswith(tuple(suffixes)) and os.path.isfile(path):
                key = os.path.realpath(path)
                if key not in seen_files:
                    seen_files.add(key)
                    found.append(path)
    return sorted(found)


def _read_umask():
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # not thread-safe, hence only the fallback
    os.umask(mask)
    return mask


def file_mode(directory=False):
    """The mode a new file (0666) or folder (0777) of this user gets under the current umask."""
    return (0o777 if directory else 0o666) & ~_read_umask()


def _pid_alive(pid):
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_TMP_RE = r"\.(?P<pid>\d+)\.[0-9a-f]+\.tmp"


def clean_leftovers(directory, name):
    """Remove ``.<name>.<pid>.*.tmp`` and ``.<name>.old-<pid>`` left in ``directory`` by dead processes.

    Returns the removed paths. Leftovers of a live process (a writer running now) are kept."""
    removed = []
    pattern = re.compile(r"^\." + re.escape(name) + r"(?:" + _TMP_RE + r"|\.old-(?P<oldpid>\d+))$")
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry)
        if not m:
            continue
        pid = int(m.group("pid") or m.group("oldpid"))
        if pid != os.getpid() and _pid_alive(pid):
            continue
        path = os.path.join(directory, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)
        removed.append(path)
    return removed


def _tmp_name(directory, name):
    return os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


# what torch's zip writer and OpenVINO's C++ streams say when a write fails (they carry no errno)
_WRITER_ERRORS = ("PytorchStreamWriter", "unexpected pos", "failed writing", "No space left", "basic_ios",
                  "iostream error")
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
LOW_SPACE_BYTES = 1 << 20


def free_bytes(path):
    """Bytes this user may still write on the file system of ``path`` (its nearest existing folder)."""
    path = os.path.abspath(os.fspath(path))
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_frsize * (st.f_bfree if os.geteuid() == 0 else st.f_bavail)


def is_write_failure(exc):
    """Whether ``exc`` is a failed write: an OSError of a full or read-only file system, or a writer's
    RuntimeError without an errno (torch.save's zip writer, OpenVINO's ``basic_ios::clear``)."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS + (errno.EROFS,)
    return isinstance(exc, RuntimeError) and any(t in str(exc) for t in _WRITER_ERRORS)


def write_error(path, exc):
    """OteError for an OSError (or a writer's RuntimeError, see ``is_write_failure``) met while writing
    ``path``: disk full (ENOSPC, EDQUOT, or a writer error with under 1 MiB left), read-only, or the
    system's own words."""
    err = getattr(exc, "errno", None)
    text = str(exc)
    writer = isinstance(exc, RuntimeError) and any(t in text for t in _WRITER_ERRORS)
    free = free_bytes(path) if writer else None
    if err in _FULL_ERRNOS or "No space left" in text or (free is not None and free < LOW_SPACE_BYTES):
        return OteError(f"{path}: disk full while writing (free some space; the previous file, if any, is intact)")
    if err in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OteError(f"{path}: cannot write ({os.strerror(err)})")
    if err is not None:
        return OteError(f"{path}: cannot write ({getattr(exc, 'strerror', None) or os.strerror(err)})")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return OteError(f"{path}: cannot write ({first})")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds.

    The file gets the user's normal permissions (0666 & ~umask). OSError while creating or moving
    the file becomes one OteError line naming ``path``; errors of the block itself pass unchanged
    unless they are OSError/torch writer errors (then also one line)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    try:
        os.makedirs(directory, exist_ok=True)
        if os.path.isdir(path):
            raise OteError(f"{path}: is a folder; give a file name")
        clean_leftovers(directory, name)
        tmp = _tmp_name(directory, name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any file
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    except RuntimeError as exc:
        if is_write_failure(exc):
            raise write_error(path, exc) from None
        raise
    finally:
        if os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)


def atomic_torch_save(obj, path):
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over it (and the
    folder flushed): a kill or a machine crash at any point leaves either the old file or the new one
    whole (training checkpoints: the previous one stays usable)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
        _fsync(tmp)
    _fsync(os.path.dirname(os.path.abspath(path)))


def atomic_write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def sha256sum(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# --- whole folders ---------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a, b):
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE). False where not supported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


COMPLETE_MARK = ".complete"


def _fsync(path):
    """Flush a file or folder to disk (so a power cut after the swap cannot leave empty files)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def recover_dir(out_dir):
    """Finish or undo a swap that a killed ``atomic_dir`` left half done (only the 2-rename fallback can).

    If ``out_dir`` is missing but a dead writer's complete new folder or its moved-away old folder is
    beside it, that folder is put back at ``out_dir``; other leftovers of dead writers are removed."""
    out_dir = os.path.abspath(out_dir)
    parent, name = os.path.dirname(out_dir), os.path.basename(out_dir)
    if not os.path.lexists(out_dir) and os.path.isdir(parent):
        tmp_re = re.compile(r"^\." + re.escape(name) + _TMP_RE + r"$")
        old_re = re.compile(r"^\." + re.escape(name) + r"\.old-(?P<pid>\d+)$")
        done_new, old = None, None
        for entry in sorted(os.listdir(parent)):
            path = os.path.join(parent, entry)
            m = tmp_re.match(entry) or old_re.match(entry)
            if not m or _pid_alive(int(m.group("pid"))) or not os.path.isdir(path):
                continue
            if tmp_re.match(entry) and os.path.isfile(os.path.join(path, COMPLETE_MARK)):
                done_new = path
            elif old_re.match(entry):
                old = path
        chosen = done_new or old
        if chosen:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(chosen, COMPLETE_MARK))
            os.rename(chosen, out_dir)
            log.warning("%s: restored from %s, left by a run that was stopped while swapping folders", out_dir,
                        os.path.basename(chosen))
    clean_leftovers(parent, name)


@contextlib.contextmanager
def atomic_dir(out_dir, owned=None):
    """Yield a new temporary folder beside ``out_dir``; when the block succeeds it replaces ``out_dir``.

    The swap is one ``renameat2(RENAME_EXCHANGE)`` where the kernel and file system allow it (Linux
    >= 3.15 on ext4, xfs, btrfs, tmpfs...): at every instant ``out_dir`` is the complete old folder or
    the complete new one. Elsewhere two renames are used (old -> ``.<name>.old-<pid>``, new ->
    ``out_dir``); a kill between them leaves ``out_dir`` missing for a moment, and the next
    ``atomic_dir`` or ``recover_dir`` puts the complete folder back (the new one carries a completion
    mark). Leftovers of killed runs are removed by the next run.

    A full or read-only disk met by the block's writers (``is_write_failure``) is one OteError line
    naming ``out_dir``; the old folder stays as it was.

    The swap alone does not protect a reader that opens ``model.xml`` before the swap and
    ``model.bin`` after it: readers should check the manifest (see ``artefacts.formats``).

    ``owned``: the names this writer produces. Other entries of the old folder (the user's own
    files) are copied into the new one before the swap, so nothing the user put there is lost; a
    name in ``owned`` that the new set lacks (e.g. a ``model.onnx`` of an earlier export) is not
    carried over. ``None``: the new folder replaces the old one as it is."""
    out_dir = os.path.abspath(os.fspath(out_dir))
    parent, name = os.path.dirname(out_dir), os.path.basename(out_dir)
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise OteError(f"{out_dir}: exists and is not a folder")
    try:
        os.makedirs(parent, exist_ok=True)
        recover_dir(out_dir)
        tmp = _tmp_name(parent, name)
        os.mkdir(tmp, 0o777)  # the umask applies
    except OSError as exc:
        raise write_error(out_dir, exc) from None
    try:
        try:
            yield tmp
        except (OSError, RuntimeError) as exc:  # a writer of the block met a full or read-only disk
            if is_write_failure(exc):
                raise write_error(out_dir, exc) from None
            raise
        try:
            if owned is not None and os.path.isdir(out_dir):
                for entry in os.listdir(out_dir):
                    if entry in owned or entry == COMPLETE_MARK or os.path.lexists(os.path.join(tmp, entry)):
                        continue
                    src, dst = os.path.join(out_dir, entry), os.path.join(tmp, entry)
                    if os.path.isdir(src) and not os.path.islink(src):
                        shutil.copytree(src, dst, symlinks=True)
                    else:
                        shutil.copy2(src, dst, follow_symlinks=False)
            for root, dirs, files in os.walk(tmp):
                for f in files:  # files written through mkstemp would otherwise stay 0600
                    p = os.path.join(root, f)
                    if os.stat(p).st_mode & 0o777 == 0o600:
                        os.chmod(p, file_mode())
                    _fsync(p)
            with open(os.path.join(tmp, COMPLETE_MARK), "w"):
                pass
            _fsync(tmp)
            if os.path.isdir(out_dir) and _exchange(tmp, out_dir):
                os.remove(os.path.join(out_dir, COMPLETE_MARK))
                shutil.rmtree(tmp, ignore_errors=True)  # now the old folder
            else:
                old = os.path.join(parent, f".{name}.old-{os.getpid()}")
                if os.path.isdir(out_dir):
                    os.rename(out_dir, old)
                os.rename(tmp, out_dir)
                os.remove(os.path.join(out_dir, COMPLETE_MARK))
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            raise write_error(out_dir, exc) from None
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


# --- locks -----------------------------------------------------------------------------------------

class OutputLock:
    """An exclusive lock on an output path, held by one process (``flock`` on ``.<name>.lock`` beside it, or
    ``.ote.lock`` inside it with ``inside=True``).

    A second process gets one line: 'is being written by process N (...)'. The kernel releases the
    lock when its process dies (also on kill -9); the lock file such a process leaves is taken over
    with a message naming the dead process. Use as a context manager, or ``acquire()``/``release()``."""

    def __init__(self, path, what="this folder", inside=False):
        self.path = os.path.abspath(os.fspath(path))
        self.what = what
        parent, name = os.path.dirname(self.path), os.path.basename(self.path)
        # inside: for a folder that stays in place (checkpoints), whose parent may not be ours;
        # beside: for a folder that is swapped as a whole (exports: atomic_dir)
        self.lock_path = os.path.join(self.path, ".ote.lock") if inside else os.path.join(parent, f".{name}.lock")
        self.fd = None

    def acquire(self):
        try:
            os.makedirs(os.path.dirname(self.lock_path), exist_ok=True)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        for _ in range(10):
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise write_error(self.path, exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = self._read_holder(fd)
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise OteError(f"{self.path}: is being written by {holder or 'another process'}; wait for it "
                                   f"to finish or choose another folder") from None
                raise write_error(self.path, exc) from None
            try:  # the file may have been removed (released) between open and flock: then retry
                if os.fstat(fd).st_ino != os.stat(self.lock_path).st_ino:
                    os.close(fd)
                    continue
            except FileNotFoundError:
                os.close(fd)
                continue
            stale = self._read_holder(fd)
            if stale:
                log.warning("%s: taking over the lock left by %s, which ended without releasing it", self.path,
                            stale)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {self.what}\n".encode(), 0)
            self.fd = fd
            return self
        raise OteError(f"{self.path}: cannot take the lock {self.lock_path}")

    @staticmethod
    def _read_holder(fd):
        try:
            text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        except OSError:
            return ""
        if not text:
            return ""
        pid, _, what = text.partition(" ")
        return f"process {pid}" + (f" ({what})" if what else "")

    def release(self):
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.remove(self.lock_path)  # while still holding it: a waiting opener re-checks the inode
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# --- early checks ----------------------------------------------------------------------------------

def check_writable_dir(path, what="output folder"):
    """Create ``path`` if needed and prove a file can be written there; one line otherwise."""
    path = os.fspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OteError(f"{path}: exists and is not a folder (give a folder as {what})")
    try:
        os.makedirs(path, exist_ok=True)
        probe = _tmp_name(path, "write-test")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            raise OteError(f"{path}: cannot be created as {what} (a part of the path is a file)") from None
        reason = exc.strerror
        if exc.errno == errno.ENOENT and os.path.isdir(path):  # the folder exists but refuses new files
            reason = "the folder exists, but its file system allows no new files: a virtual one, such as /proc " \
                     "or /sys"
        raise OteError(f"{path}: {what} is not writable ({reason})") from None
    return path


def check_writable_file(path, what="output file"):
    """The file ``path`` can be (re)written: its folder is writable and it is not a folder."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OteError(f"{path}: is a folder (give a file name as {what})")
    check_writable_dir(os.path.dirname(os.path.abspath(path)), f"folder of the {what}")
    if os.path.exists(path) and not os.access(path, os.W_OK) and os.geteuid() != 0:
        raise OteError(f"{path}: {what} is not writable")
    return path
