"""HDF5 compression filters of datasets the package reads, made available on demand.

h5py has gzip, lzf and szip built in. Other filters, such as Blosc (id 32001, used by the Quijote
snapshots since 2023), come with ``hdf5plugin``, which registers them when it is imported. Importing it
costs time and is an optional extra, so a reader calls :func:`ensure_filters` on each dataset before
reading it: hdf5plugin is imported only when a filter is missing, and a filter that is still missing
is named in a clear error instead of h5py's "can't read data". :func:`read_datasets` is the one reading
loop of the package's own HDF5 formats (field files, training samples, density meshes): root attributes,
a format check, the named datasets with their filters, h5py's errors turned into a named
:class:`~emu_backend.errors.FileFormatError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import h5py
import numpy as np

from ..errors import FileFormatError, MissingDependencyError, require

__all__ = ["HDF5_EXTRA", "ensure_filters", "read_datasets"]

#: The pyproject extra that installs hdf5plugin.
HDF5_EXTRA = "quijote"


def ensure_filters(ds: h5py.Dataset, path, key: str) -> None:
    """Make sure every HDF5 filter of dataset ``key`` of file ``path`` is available, importing hdf5plugin
    if one is missing.

    Raises
    ------
    MissingDependencyError
        A filter is missing and hdf5plugin is not installed (extra :data:`HDF5_EXTRA`).
    FileFormatError
        A filter is missing that hdf5plugin does not provide either.
    """
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _, _, name = plist.get_filter(i)
        if h5py.h5z.filter_avail(code):
            continue
        label = name.decode(errors="replace") if isinstance(name, bytes) else name
        try:
            require("hdf5plugin", HDF5_EXTRA)
        except MissingDependencyError as exc:
            raise MissingDependencyError(
                f"{str(path)!r}: dataset {key!r} is compressed with HDF5 filter {code} ({label}); reading it needs "
                f"hdf5plugin: pip install 'emu_backend[{HDF5_EXTRA}]'"
            ) from exc
        if not h5py.h5z.filter_avail(code):
            raise FileFormatError(f"{str(path)!r}: dataset {key!r} needs HDF5 filter {code} ({label}), which "
                                  f"hdf5plugin does not provide")


def read_datasets(path, what: str, *, required: Sequence[str] = (), optional: Sequence[str] = (),
                  check_attrs: Callable[[dict], None] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Root attributes and the named datasets of HDF5 file ``path``, hdf5plugin loaded where a filter needs it.

    Parameters
    ----------
    path : str or Path
    what : str
        The kind of file, for the error message (e.g. ``"a training sample"``).
    required, optional : sequence of str
        Datasets that must be present / that are read when present.
    check_attrs : callable, optional
        Called with the root attributes before any dataset is read; raises :class:`FileFormatError`
        (format tag, version, missing attributes).

    Returns
    -------
    (dict, dict)
        The root attributes and ``{name: array}`` of the datasets read.

    Raises
    ------
    FileFormatError
        A missing required dataset (named), a failed ``check_attrs``, a truncated or corrupt file.
    MissingDependencyError
        A dataset's filter needs hdf5plugin, which is not installed.
    """
    try:
        with h5py.File(path, "r") as f:
            attrs = {key: f.attrs[key] for key in f.attrs}
            if check_attrs is not None:
                check_attrs(attrs)
            for key in required:
                if key not in f:
                    raise FileFormatError(f"{str(path)!r}: dataset {key!r} is missing")
            arrays = {}
            for key in (*required, *optional):
                if key in f:
                    ensure_filters(f[key], path, key)
                    arrays[key] = f[key][...]
    except (FileFormatError, MissingDependencyError):
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # h5py: RuntimeError for corrupt B-trees
        raise FileFormatError(f"{str(path)!r}: cannot be read as {what} (truncated or corrupt?): {exc}") from exc
    return attrs, arrays
