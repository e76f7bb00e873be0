"""Writing files so that nothing is lost or half-written: the one home of Kiln's atomic
writes (artifacts, checkpoints, metrics, predictions, IR dumps).

* :func:`atomic_write` — a temp file in the same directory, flush + fsync, ``os.replace``,
  fsync of the directory: readers see the old file or the whole new one, never a mix.
* :func:`append_line` — one line appended and fsynced (append-only logs such as
  ``metrics.jsonl``; a crash can at worst leave a partial last line, which readers skip).
* :func:`apply_umask` — ``mkstemp``/``mkdtemp`` create private files (0600/0700); what
  Kiln ships must be readable as the user's umask says, like any file ``open()`` creates.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time

__all__ = ["append_line", "apply_umask", "atomic_write", "current_umask", "fsync_dir"]

_PAUSE_ENV = "KILN_CHECKPOINT_TEST_PAUSE"  # seconds; test hook only (lets a test kill mid-write)
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting and restoring it, under a lock)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def apply_umask(path, is_dir: bool = False) -> None:
    """Give ``path`` the mode a plain ``open()``/``mkdir()`` would have: 0666 (0777 for a
    directory) less the umask."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~current_umask())


def fsync_dir(directory) -> None:
    """Make a rename in ``directory`` durable (best effort where directories cannot be opened)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _test_pause() -> None:
    delay = os.environ.get(_PAUSE_ENV)
    if delay:
        time.sleep(float(delay))


def atomic_write(path, data, durable: bool = True) -> None:
    """Write ``data`` (bytes, or str as UTF-8) to ``path`` so that readers see the old file
    or the whole new one; missing parent folders are made.  ``durable=False`` skips the
    fsyncs (for files that can be regenerated, such as IR dumps)."""
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            _test_pause()
            f.write(data[half:])
            f.flush()
            if durable:
                os.fsync(f.fileno())
        apply_umask(tmp)
        _test_pause()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(directory)


def append_line(path, line: str) -> None:
    """Append ``line`` (a newline is added) to ``path`` in one write, then fsync.  A partial
    last line left by a crash is ended first, so it cannot swallow the new one."""
    path = os.fspath(path)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        lead = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
        os.write(fd, lead + (line.rstrip("\n") + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
