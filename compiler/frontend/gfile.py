"""``tf.gfile`` (TF1 names) and ``tf.io.gfile`` (TF2 lowercase names) over local files.

TF programs read data and write checkpoints through gfile so the same code works on GCS or
HDFS; Kiln only has the local file system, so each call is the matching ``os`` /
``shutil`` / ``glob`` call. Failures raise TF's ``tf.errors`` classes (``NotFoundError``
for a missing file, ``AlreadyExistsError`` for a rename or copy onto an existing file
without ``overwrite=True``), as TF does, so ``except tf.errors.NotFoundError`` works.
"""
from __future__ import annotations

import contextlib
import glob as _glob
import os
import shutil

from . import errors

_ERRORS = [(FileNotFoundError, errors.NotFoundError), (FileExistsError, errors.AlreadyExistsError),
           (PermissionError, errors.PermissionDeniedError), (OSError, errors.UnknownError)]


@contextlib.contextmanager
def _tf_errors(path):
    """Re-raise an ``OSError`` as the ``tf.errors`` class TF raises for it."""
    try:
        yield
    except OSError as err:
        cls = next(tf_cls for os_cls, tf_cls in _ERRORS if isinstance(err, os_cls))
        raise cls(None, None, f"{path}; {err.strerror or err}") from None


class GFile:
    """A file: ``read/readline/readlines/write/seek/tell/size/flush/close``, iterable, a context manager.

    Opened lazily on first use, as in TF, so ``GFile(missing)`` fails only when read (with
    ``NotFoundError``). Mode ``"r"``/``"w"``/``"a"`` gives text, ``"rb"``/``"wb"`` bytes.
    """

    def __init__(self, name, mode="r"):
        self.name, self.mode, self._file = os.fspath(name), mode, None

    def _f(self):
        if self._file is None:
            with _tf_errors(self.name):
                self._file = open(self.name, self.mode, **({} if "b" in self.mode else {"newline": ""}))
        return self._file

    def read(self, n=-1):
        return self._f().read(n)

    def readline(self):
        return self._f().readline()

    def readlines(self):
        return self._f().readlines()

    def write(self, data):
        self._f().write(data)

    def seek(self, offset=None, whence=0, position=None):
        return self._f().seek(position if offset is None else offset, whence)

    def tell(self):
        return self._f().tell()

    def size(self):
        return Stat(self.name).length

    def flush(self):
        if self._file is not None:
            self._file.flush()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def __iter__(self):
        return iter(self._f())

    def __next__(self):
        return next(self._f())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FileStatistics:
    """What ``Stat`` returns: ``length`` (bytes), ``mtime_nsec``, ``is_directory``."""

    def __init__(self, length, mtime_nsec, is_directory):
        self.length, self.mtime_nsec, self.is_directory = length, mtime_nsec, is_directory


def Exists(filename) -> bool:
    """True when the path exists (file or directory)."""
    return os.path.exists(filename)


def IsDirectory(dirname) -> bool:
    """True when the path is a directory."""
    return os.path.isdir(dirname)


def MakeDirs(dirname):
    """Create a directory and its parents; an existing directory is fine."""
    with _tf_errors(dirname):
        os.makedirs(dirname, exist_ok=True)


def MkDir(dirname):
    """Create one directory (``AlreadyExistsError`` if it exists, ``NotFoundError`` without a parent)."""
    with _tf_errors(dirname):
        os.mkdir(dirname)


def Remove(filename):
    """Delete a file (``NotFoundError`` if missing)."""
    with _tf_errors(filename):
        os.remove(filename)


def _check_target(newname, overwrite):
    if not overwrite and os.path.exists(newname):
        raise errors.AlreadyExistsError(None, None, f"file already exists: {newname}")


def Rename(oldname, newname, overwrite=False):
    """Move a file; the target must not exist unless ``overwrite``."""
    _check_target(newname, overwrite)
    with _tf_errors(oldname):
        os.replace(oldname, newname)


def Copy(oldpath, newpath, overwrite=False):
    """Copy a file; the target must not exist unless ``overwrite``."""
    _check_target(newpath, overwrite)
    with _tf_errors(oldpath):
        shutil.copyfile(oldpath, newpath)


def Glob(filename) -> list:
    """The paths matching a glob pattern (sorted)."""
    return sorted(_glob.glob(os.fspath(filename)))


def ListDirectory(dirname) -> list:
    """The names (not paths) in a directory (``NotFoundError`` if it is missing)."""
    if not os.path.isdir(dirname):
        raise errors.NotFoundError(None, None, f"Could not find directory {dirname}")
    return sorted(os.listdir(dirname))


def DeleteRecursively(dirname):
    """Delete a directory and everything under it (or a single file)."""
    if not os.path.exists(dirname):
        raise errors.NotFoundError(None, None, f"{dirname}; No such file or directory")
    with _tf_errors(dirname):
        if os.path.isdir(dirname):
            shutil.rmtree(dirname)
        else:
            os.remove(dirname)


def Walk(top, in_order=True):
    """Yield ``(dirname, subdirectory names, file names)``, parents first when ``in_order``."""
    for dirname, subdirs, files in os.walk(top, topdown=in_order):
        yield dirname, sorted(subdirs), sorted(files)


def Stat(filename) -> FileStatistics:
    """Size, modification time and kind of a path (``NotFoundError`` if missing)."""
    with _tf_errors(filename):
        st = os.stat(filename)
    return FileStatistics(st.st_size, st.st_mtime_ns, os.path.isdir(filename))


TF_API = {
    "tf.gfile": {
        "GFile": GFile, "Open": GFile, "FastGFile": GFile, "Exists": Exists, "IsDirectory": IsDirectory,
        "MakeDirs": MakeDirs, "MkDir": MkDir, "Remove": Remove, "Rename": Rename, "Copy": Copy,
        "Glob": Glob, "ListDirectory": ListDirectory, "DeleteRecursively": DeleteRecursively,
        "Walk": Walk, "Stat": Stat,
    },
    "tf.io.gfile": {
        "GFile": GFile, "exists": Exists, "isdir": IsDirectory, "makedirs": MakeDirs, "mkdir": MkDir,
        "remove": Remove, "rename": Rename, "copy": Copy, "glob": Glob, "listdir": ListDirectory,
        "rmtree": DeleteRecursively, "walk": Walk, "stat": Stat,
    },
}
