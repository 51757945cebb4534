"""Atomic file writes: a crash never leaves a file that looks complete.

Write to a temporary name in the destination folder, flush and fsync, then ``os.replace``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..errors import InputError

__all__ = ["atomic_path", "check_overwrite"]


def check_overwrite(path, overwrite: bool) -> Path:
    """Refuse to replace an existing file unless ``overwrite`` is true.

    Parameters
    ----------
    path : str or Path
        Destination.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    Path
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{str(path)!r} already exists; pass overwrite=True (--overwrite) to replace it")
    return path


@contextlib.contextmanager
def atomic_path(path, overwrite: bool = True):
    """Context manager yielding a temporary path that is renamed onto ``path`` on success.

    The temporary file lives beside the destination (same file system, so the rename is atomic),
    is fsynced before the rename, and is removed if the block raises.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with atomic_path(os.path.join(d, "x.npy")) as tmp:
    ...     np.save(tmp, np.zeros(3))
    >>> sorted(os.listdir(d))
    ['x.npy']
    """
    path = check_overwrite(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
