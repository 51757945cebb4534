"""HDF5 compression filters of datasets the package reads, made available on demand.

h5py has gzip, lzf and szip built in. Other filters, such as Blosc (id 32001, used by the Quijote
snapshots since 2023), come with ``hdf5plugin``, which registers them when it is imported. Importing it
costs time and is an optional extra, so a reader calls :func:`ensure_filters` on each dataset before
reading it: hdf5plugin is imported only when a filter is missing, and a filter that is still missing
is named in a clear error instead of h5py's "can't read data".
"""

from __future__ import annotations

import h5py

from ..errors import FileFormatError, MissingDependencyError, require

__all__ = ["HDF5_EXTRA", "ensure_filters"]

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
