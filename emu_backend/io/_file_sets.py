"""Numbered multi-file sets ``X.0<suffix> ... X.{k-1}<suffix>`` (Gadget snapshots, ICs, FoF tables).

Gadget writes one snapshot as ``k`` files and records ``k`` in each file's header; a reader finds the
other members from any one of them with :func:`member_base` and :func:`set_members`.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import FileFormatError

__all__ = ["without_suffix", "member_base", "set_members"]

#: Missing members listed in an error (and where the search stops: a damaged header may declare billions).
_LISTED = 10


def without_suffix(path: Path, suffix: str) -> Path:
    """``X`` of ``X<suffix>``; ``path`` itself when its name does not end in ``suffix``."""
    return path.with_name(path.name[: -len(suffix)]) if suffix and path.name.endswith(suffix) else path


def member_base(path: Path, suffix: str = "") -> Path | None:
    """``X`` of a member file ``X.<i><suffix>`` (``snap_004`` of ``snap_004.3.hdf5``), else None.

    Examples
    --------
    >>> member_base(Path("snapdir_004/snap_004.3.hdf5"), ".hdf5").as_posix()
    'snapdir_004/snap_004'
    >>> member_base(Path("ics"), "") is None
    True
    """
    match = re.match(rf"^(?P<base>.+)\.\d+{re.escape(suffix)}$", path.name)
    return None if match is None else path.with_name(match["base"])


def set_members(base: Path, n_files: int, suffix: str, what: str) -> list[Path]:
    """The files ``base.0<suffix> ... base.{n_files-1}<suffix>``, all of which must exist.

    Parameters
    ----------
    base : Path
        ``X`` of the set.
    n_files : int
        Number of files the header declares (>= 1).
    suffix : str
        ``".hdf5"`` or ``""``.
    what : str
        The set in error messages, e.g. ``"multi-file snapshot"``.

    Returns
    -------
    list of Path
        In file order.

    Raises
    ------
    FileFormatError
        Naming up to 10 missing files (`` ...`` when the search stopped there).
    """
    paths, missing = [], []
    for i in range(n_files):
        path = base.with_name(f"{base.name}.{i}{suffix}")
        (paths if path.is_file() else missing).append(path)
        if len(missing) == _LISTED:
            break
    if missing:
        more = " ..." if len(paths) + len(missing) < n_files else ""
        raise FileFormatError(
            f"{what} {str(base)!r} declares {n_files} files; missing: {[str(p) for p in missing]}{more}"
        )
    return paths
