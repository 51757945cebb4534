"""The package's exception hierarchy.

Two families, as in the design notes: bad input (the caller can fix it) and failed computation
(something went wrong while computing with valid input). Every error message names the offending
value and what was expected.

    EmuBackendError
    ├── InputError (ValueError)          bad argument, shape, dtype, NaN/inf, unknown config key
    │   ├── DomainError                  cosmology / redshift / resolution outside the trained domain
    │   ├── FileFormatError              missing, truncated or corrupt file of any kind
    │   │   └── CheckpointError          wrong architecture, missing/extra/mis-shaped tensor, checksum
    │   └── OutputLockedError            the output is being written by another run (its lock file)
    ├── ComputationError (RuntimeError)  a backend (CLASS, JAX, torch) failed on valid input
    │   └── ResourceError                out of disk space, memory or device memory
    └── MissingDependencyError (ImportError)  an optional extra is not installed

:func:`from_system_error` turns the operating system's and the allocators' exceptions (``OSError``,
``MemoryError``, torch's ``OutOfMemoryError``) into these classes, with a one-line message naming the
path or the size.
"""

from __future__ import annotations

import errno
import importlib
import re

__all__ = [
    "EmuBackendError",
    "InputError",
    "DomainError",
    "FileFormatError",
    "CheckpointError",
    "ComputationError",
    "MissingDependencyError",
    "OutputLockedError",
    "ResourceError",
    "from_system_error",
]


class EmuBackendError(Exception):
    """Base class of every error raised on purpose by emu_backend."""


class InputError(EmuBackendError, ValueError):
    """An argument, array or configuration value is not acceptable."""


class DomainError(InputError):
    """A cosmology, redshift or resolution lies outside the model's training domain.

    Raised unless the caller explicitly allows extrapolation.
    """


class FileFormatError(InputError):
    """A file is missing, truncated, corrupt or not of the expected format."""


class CheckpointError(FileFormatError):
    """A checkpoint does not match the architecture, or fails its checksum."""


class ComputationError(EmuBackendError, RuntimeError):
    """A computation failed on valid input (e.g. CLASS did not converge)."""


class MissingDependencyError(EmuBackendError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class OutputLockedError(InputError):
    """The output is being written by another run: its lock file names the owner (pid, host, start)."""


class ResourceError(ComputationError):
    """The machine ran out of a resource on valid input: disk space, memory or device memory."""


#: errno -> (class, what went wrong, what to do) for the operating system errors of writing outputs.
_OS_ERRORS = {
    errno.ENOSPC: (ResourceError, "no space left on the device", "free space or write elsewhere"),
    errno.EDQUOT: (ResourceError, "disk quota exceeded", "free space or write elsewhere"),
    errno.EFBIG: (ResourceError, "file too large: over the file system's or the process's file-size limit",
                  "write elsewhere or raise the limit (ulimit -f)"),
    errno.EACCES: (InputError, "permission denied", "choose a folder you can write"),
    errno.EPERM: (InputError, "operation not permitted", "choose a folder you can write"),
    errno.EROFS: (InputError, "read-only file system", "choose a writable folder"),
    errno.ENOTDIR: (InputError, "a component of the path is a file, not a folder", "fix the path"),
    errno.EISDIR: (InputError, "a folder where a file is expected", "give a file name"),
    errno.ENOENT: (InputError, "no such file or folder", "fix the path"),
    errno.ENAMETOOLONG: (InputError, "file name too long", "use a shorter path"),
    errno.ENOMEM: (ResourceError, "out of memory", "use a smaller problem or a machine with more memory"),
}
# h5py's errors carry the C errno and the file name in their message only
_ERRNO_IN_TEXT, _NAME_IN_TEXT = re.compile(r"errno = (\d+)"), re.compile(r"name = '([^']*)'")


def _first_line(text: object, width: int = 200) -> str:
    line = " ".join(str(text).strip().splitlines()[:1]) if str(text).strip() else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def _is_device_oom(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__ if cls.__module__.startswith("torch")}
    text = str(exc)
    return "OutOfMemoryError" in names or (isinstance(exc, RuntimeError) and (
        "out of memory" in text.lower() or "can't allocate memory" in text))


def from_system_error(exc: BaseException, path=None) -> EmuBackendError | None:
    """The package error for an operating-system, allocation or device error, or None for others.

    Parameters
    ----------
    exc : BaseException
        ``OSError`` (by its ``errno``), an h5py error carrying a C ``errno`` in its message (h5py raises
        ``OSError``, ``RuntimeError`` or ``ValueError``), ``MemoryError`` or torch's ``OutOfMemoryError``
        (CUDA, or a CPU allocator's "can't allocate memory").
    path : str or Path, optional
        The file being written, named in the message when the exception does not name one.

    Returns
    -------
    EmuBackendError or None
        :class:`ResourceError` for a full disk, a quota, a file-size limit and memory;
        :class:`InputError` for a path that cannot be written (permissions, read-only file system, a
        file where a folder should be, a folder where a file should be); :class:`ComputationError`
        for other operating-system errors; None when ``exc`` is none of these (or already the
        package's). Raise it ``from exc``.

    Examples
    --------
    >>> import errno
    >>> from_system_error(OSError(errno.ENOSPC, "No space left on device"), "out.h5")
    ResourceError("'out.h5': no space left on the device (ENOSPC); free space or write elsewhere")
    """
    if isinstance(exc, EmuBackendError):  # already the package's
        return None
    if isinstance(exc, MemoryError):
        detail = _first_line(exc) or "the allocation failed"
        return ResourceError(f"out of memory: {detail}; use a smaller problem (grid, tile or batch size) or a "
                             f"machine with more memory")
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None and isinstance(exc, (OSError, RuntimeError, ValueError)):  # h5py's: the errno in the text
        if found := _ERRNO_IN_TEXT.search(str(exc)):
            code = int(found.group(1))
    if isinstance(exc, OSError) or code is not None:
        where = exc.filename if isinstance(exc, OSError) and exc.filename is not None else path
        if where is None and (found := _NAME_IN_TEXT.search(str(exc))):
            where = found.group(1)
        target = repr(str(where)) if where is not None else "file system error"
        if code in _OS_ERRORS:
            cls, what, todo = _OS_ERRORS[code]
            return cls(f"{target}: {what} ({errno.errorcode[code]}); {todo}")
        detail = getattr(exc, "strerror", None) or _first_line(exc) or type(exc).__name__
        return ComputationError(f"{target}: {detail}")
    if _is_device_oom(exc):
        return ResourceError(f"device out of memory: {_first_line(exc)}; reduce tile_size or batch_size, or use "
                             f"a device with more memory")
    return None


def require(module: str, extra: str):
    """Import an optional dependency lazily, or raise a clear error naming the extra.

    Parameters
    ----------
    module : str
        Importable module name, e.g. ``"classy"``.
    extra : str
        The pyproject extra that installs it, e.g. ``"class"``.

    Returns
    -------
    module
        The imported module.
    """

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised where the extra is absent
        raise MissingDependencyError(
            f"optional dependency {module!r} is not installed; "
            f"install it with: pip install 'emu_backend[{extra}]'"
        ) from exc
