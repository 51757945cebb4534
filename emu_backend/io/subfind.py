"""Gadget-III friends-of-friends group catalogues ``groups_XXX/group_tab_XXX.<i>`` (as in Quijote), read-only.

Layout of one ``group_tab`` file (native byte order, no record markers; the layout Pylians'
``readfof.FoF_catalog`` reads)::

    int32   Ngroups        groups in this file
    int32   TotNgroups     groups in all files
    int32   Nids           particle IDs of this file's groups (in group_ids_XXX.<i>)
    uint64  TotNids
    uint32  Nfiles         number of group_tab files
    int32   GroupLen[Ngroups]          particles per group
    int32   GroupOffset[Ngroups]       offset of the group's IDs in the ID list
    float32 GroupMass[Ngroups]         [1e10 Msun/h]
    float32 GroupPos[Ngroups][3]       centre of mass, comoving [kpc/h]
    float32 GroupVel[Ngroups][3]       peculiar velocity / (1 + z) [km/s]  (Quijote docs: v = GroupVel (1+z))
    int32   GroupLenType[Ngroups][6]   (Pylians reads these 4-byte words as float32)
    float32 GroupMassType[Ngroups][6]  [1e10 Msun/h]
    float32 GroupSFR[Ngroups]          only in runs with star formation

so a file holds ``24 + 84 Ngroups`` bytes (``+ 4 Ngroups`` with SFR). The files carry neither the box
nor the redshift: the caller passes the snapshot's scale factor. Units are converted here, with the
length table and mass unit of :mod:`emu_backend.io.gadget_units`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checks import check_int, check_real
from ..datatypes.snapshot import A_MAX
from ..errors import FileFormatError
from ._file_sets import set_members
from .gadget_units import DEFAULT_LENGTH_UNIT, MASS_UNIT_MSUN_H, length_factor

__all__ = ["FoFGroups", "read_fof_groups", "fof_tab_paths", "TAB_HEADER_DTYPE"]

logger = logging.getLogger(__name__)

#: The 24-byte header of a group_tab file (little endian).
TAB_HEADER_DTYPE = np.dtype([("n_groups", "<i4"), ("tot_n_groups", "<i4"), ("n_ids", "<i4"),
                             ("tot_n_ids", "<u8"), ("n_files", "<u4")])
_BYTES_PER_GROUP = 84


@dataclass(frozen=True, eq=False)
class FoFGroups:
    """FoF groups of a Gadget-III catalogue, converted to internal units, in file order.

    Attributes
    ----------
    length : ndarray, shape (G,), int64
        Particles per group.
    offset : ndarray, shape (G,), int64
        Offset of each group's particle IDs in the ``group_ids`` list.
    mass : ndarray, shape (G,), float64
        Group mass [Msun/h].
    position : ndarray, shape (G, 3), float64
        Centre of mass [Mpc/h] (as stored; not wrapped).
    velocity : ndarray, shape (G, 3), float64
        Peculiar velocity [km/s] (stored ``GroupVel / a``).
    a : float
        Scale factor given by the caller.
    files : tuple of str
    """

    length: np.ndarray
    offset: np.ndarray
    mass: np.ndarray
    position: np.ndarray
    velocity: np.ndarray
    a: float
    files: tuple

    @property
    def n_groups(self) -> int:
        """Number of groups G."""
        return int(self.length.shape[0])


def fof_tab_paths(groups_dir, snapnum: int) -> list[Path]:
    """The ``group_tab_XXX.<i>`` files of a catalogue folder, ``i = 0 .. Nfiles-1`` (from file 0's header)."""
    check_int(snapnum, "snapnum", 0, 999)
    folder = Path(groups_dir)
    if not folder.is_dir():
        raise FileFormatError(f"FoF catalogue folder {str(folder)!r} does not exist")
    first = folder / f"group_tab_{snapnum:03d}.0"
    head, _ = _header(first)
    n_files = int(head["n_files"])
    if not 1 <= n_files <= 100000:
        raise FileFormatError(f"{str(first)!r}: Nfiles = {n_files} must be in [1, 100000]")
    return set_members(folder / f"group_tab_{snapnum:03d}", n_files, "", "FoF catalogue")


def _header(path: Path) -> tuple[np.void, str]:
    """Header and byte order ('<' or '>') of one group_tab file, checked against the file size."""
    if not path.is_file():
        raise FileFormatError(f"FoF group_tab file {str(path)!r} does not exist")
    try:
        size = path.stat().st_size
        raw = path.read_bytes()[: TAB_HEADER_DTYPE.itemsize]
    except OSError as exc:
        raise FileFormatError(f"{str(path)!r}: cannot be read: {exc}") from exc
    if len(raw) < TAB_HEADER_DTYPE.itemsize:
        raise FileFormatError(f"{str(path)!r}: {size} bytes is shorter than the 24-byte group_tab header")
    for order in ("<", ">"):
        head = np.frombuffer(raw, dtype=TAB_HEADER_DTYPE.newbyteorder(order) if order == ">" else TAB_HEADER_DTYPE)[0]
        ng = int(head["n_groups"])
        if ng >= 0 and size - 24 in (_BYTES_PER_GROUP * ng, (_BYTES_PER_GROUP + 4) * ng):
            if not 0 <= ng <= int(head["tot_n_groups"]):
                break
            return head, order
    raise FileFormatError(
        f"{str(path)!r}: corrupt or truncated group_tab file: {size} bytes do not match 24 + 84 x Ngroups "
        f"(Ngroups = {int(np.frombuffer(raw[:4], '<i4')[0])} in the header)"
    )


def read_fof_groups(groups_dir, snapnum: int, *, a: float, length_unit: str = DEFAULT_LENGTH_UNIT) -> FoFGroups:
    """Read a Gadget-III FoF catalogue ``groups_dir/group_tab_XXX.<i>`` (all files).

    Parameters
    ----------
    groups_dir : str or Path
        The ``groups_XXX`` folder.
    snapnum : int
        Snapshot number XXX.
    a : float
        Scale factor of the snapshot (the files do not record it), in (0, 1.5]; velocities are
        ``GroupVel / a``.
    length_unit : {"kpc/h", "Mpc/h"}
        Unit of GroupPos in the files (Quijote: kpc/h).

    Returns
    -------
    FoFGroups

    Raises
    ------
    FileFormatError
        Missing file, size that does not match its header, totals that disagree between files.

    Examples
    --------
    >>> read_fof_groups("no/such/groups_004", 4, a=1.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    emu_backend.errors.FileFormatError: FoF catalogue folder 'no/such/groups_004' does not exist
    """
    factor = length_factor(length_unit)
    a = check_real(a, "scale factor a", 0.0, A_MAX, lo_open=True, what=f"a number in (0, {A_MAX}]")
    paths = fof_tab_paths(groups_dir, snapnum)
    cols = {k: [] for k in ("length", "offset", "mass", "position", "velocity")}
    tot_groups = None
    for p in paths:
        head, order = _header(p)
        ng = int(head["n_groups"])
        if tot_groups is None:
            tot_groups = int(head["tot_n_groups"])
        elif int(head["tot_n_groups"]) != tot_groups:
            raise FileFormatError(f"{str(p)!r}: TotNgroups = {int(head['tot_n_groups'])} differs from {tot_groups} "
                                  f"in {str(paths[0])!r}")
        off = TAB_HEADER_DTYPE.itemsize
        for key, dt, comp in (("length", "i4", 1), ("offset", "i4", 1), ("mass", "f4", 1),
                              ("position", "f4", 3), ("velocity", "f4", 3)):
            arr = np.fromfile(p, dtype=np.dtype(dt).newbyteorder(order), count=ng * comp, offset=off)
            off += arr.nbytes
            cols[key].append(arr.reshape(ng, comp) if comp > 1 else arr)
    out = {k: np.concatenate(v) for k, v in cols.items()}
    if out["length"].shape[0] != tot_groups:
        raise FileFormatError(f"FoF catalogue {str(paths[0])!r}: TotNgroups = {tot_groups} but the "
                              f"{len(paths)} file(s) hold {out['length'].shape[0]} groups")
    if out["length"].size and (out["length"].min() < 1 or not np.all(np.isfinite(out["mass"]))):
        raise FileFormatError(f"FoF catalogue {str(paths[0])!r}: group lengths must be >= 1 and masses finite")
    logger.info("read FoF catalogue %s: %d groups in %d file(s)", paths[0], tot_groups, len(paths))
    return FoFGroups(
        length=out["length"].astype(np.int64), offset=out["offset"].astype(np.int64),
        mass=out["mass"].astype(np.float64) * MASS_UNIT_MSUN_H,
        position=out["position"].astype(np.float64) / factor,
        velocity=out["velocity"].astype(np.float64) / float(a), a=float(a), files=tuple(str(p) for p in paths),
    )
