"""Pre-flight checks of an output path, before anything is computed, and OS errors while writing.

:func:`check_writable` refuses, with a one-line :class:`~emu_backend.errors.InputError`, an output that
cannot be written: a file name that is a folder, a folder that is a file, a path under a regular file,
a folder that cannot be created or written (it creates and removes a probe file in the nearest existing
folder, so permissions, read-only file systems and quotas are tried for real). :func:`check_free_space`
compares the bytes a writer is about to write with the free space of the file system
(:class:`~emu_backend.errors.ResourceError`). :func:`os_errors_as_package_errors` turns the ``OSError``
of a write that fails anyway (a disk filling up meanwhile) into the package's error.

Examples
--------
>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> check_writable(os.path.join(d, "sub", "out.h5")).name
'out.h5'
>>> check_writable(d)
Traceback (most recent call last):
...
emu_backend.errors.InputError: output '...' is a folder; give a file name
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError, ResourceError, from_system_error

__all__ = ["check_writable", "check_free_space", "os_errors_as_package_errors"]

logger = logging.getLogger(__name__)


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (as any kind of file)."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_writable(path, *, folder: bool = False) -> Path:
    """Check that output ``path`` can be written (creating nothing); returns ``path`` as a Path.

    Parameters
    ----------
    path : str or Path
        The output: a file name or, with ``folder``, a folder.
    folder : bool
        ``path`` is a folder output.

    Returns
    -------
    Path

    Raises
    ------
    InputError
        A file name that is a folder, a folder that is a file, a path under a regular file, a folder that
        cannot be created or written (permissions, read-only file system).
    ResourceError
        No space or quota left to create the probe file.
    """
    path = Path(path)
    if not folder and path.is_dir():
        raise InputError(f"output {str(path)!r} is a folder; give a file name")
    if folder and os.path.lexists(path) and not path.is_dir():
        raise InputError(f"output folder {str(path)!r} is a file; give a folder")
    existing = _first_existing((path if folder else path.parent).absolute())
    if not existing.is_dir():
        raise InputError(f"cannot write {str(path)!r}: {str(existing)!r} is a file, not a folder")
    try:  # where the output or its first missing folder would be created
        fd, probe = tempfile.mkstemp(prefix=f".{path.name or 'output'}.", suffix=".probe", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise from_system_error(exc, existing) from exc
    return path


def check_free_space(folder, n_bytes: int, what: str) -> None:
    """Refuse to start writing ``n_bytes`` into ``folder`` when its file system has less free space.

    Parameters
    ----------
    folder : str or Path
        An existing folder on the file system that will hold the output.
    n_bytes : int
        Bytes about to be written (the data; headers are small).
    what : str
        The output, for the message.

    Raises
    ------
    ResourceError
        Less free space than ``n_bytes``; the message names both, in GB.
    """
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise from_system_error(exc, folder) from exc
    if n_bytes > free:
        raise ResourceError(f"not enough disk space for {what}: needs {n_bytes / 1e9:.3g} GB in {str(folder)!r}, "
                            f"{free / 1e9:.3g} GB free; free space or write elsewhere")
    logger.debug("%s: %d bytes to write, %d free in %s", what, n_bytes, free, folder)


@contextlib.contextmanager
def os_errors_as_package_errors(path) -> Iterator[None]:
    """Re-raise an ``OSError`` of the block (or h5py's error carrying an errno) as the package's error
    naming ``path`` (a full disk: :class:`ResourceError`; a path that cannot be written:
    :class:`InputError`), ``from`` the original; other exceptions pass unchanged."""
    try:
        yield
    except (OSError, RuntimeError, ValueError) as exc:
        error = from_system_error(exc, path)
        if error is None:
            raise
        raise error from exc
