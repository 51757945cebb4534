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

so a file holds ``24 + 84 Ngroups`` bytes (``+ 4 Ngroups`` with SFR). The member IDs, where the
catalogue has them (Quijote's ``FoF_id`` tree), are in ``group_ids_XXX.<i>``::

    int32   Ngroups, TotNgroups, Nids;  uint64 TotNids;  uint32 Nfiles;  uint32 Send_offset   (28 bytes)
    uint32 or uint64  IDs[Nids]        (the width follows from the file size)

and the members of group g are ``IDs[GroupOffset[g] : GroupOffset[g] + GroupLen[g]]`` of the files'
IDs concatenated. They become Lagrangian grid indices only through the simulation's verified ID map
(:func:`~emu_backend.io.lagrangian_map.lagrangian_index`). The files carry neither the box nor the
redshift: the caller passes the snapshot's scale factor. Units are converted here, with the length
table and mass unit of :mod:`emu_backend.io.gadget_units`.
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
from .lagrangian_map import LagrangianMap, lagrangian_index

__all__ = ["FoFGroups", "read_fof_groups", "fof_tab_paths", "TAB_HEADER_DTYPE", "IDS_HEADER_DTYPE"]

logger = logging.getLogger(__name__)

#: The 24-byte header of a group_tab file (little endian).
TAB_HEADER_DTYPE = np.dtype([("n_groups", "<i4"), ("tot_n_groups", "<i4"), ("n_ids", "<i4"),
                             ("tot_n_ids", "<u8"), ("n_files", "<u4")])
#: The 28-byte header of a group_ids file (little endian).
IDS_HEADER_DTYPE = np.dtype([("n_groups", "<i4"), ("tot_n_groups", "<i4"), ("n_ids", "<i4"),
                             ("tot_n_ids", "<u8"), ("n_files", "<u4"), ("send_offset", "<u4")])
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
    member_ids : ndarray, shape (TotNids,), uint64, or None
        The ``group_ids`` files' IDs, concatenated (None without those files).
    member_index : ndarray, shape (TotNids,), int64, or None
        Their Lagrangian grid indices, through the simulation's ID map (None without a map or IDs).
    """

    length: np.ndarray
    offset: np.ndarray
    mass: np.ndarray
    position: np.ndarray
    velocity: np.ndarray
    a: float
    files: tuple
    member_ids: np.ndarray | None = None
    member_index: np.ndarray | None = None

    def members(self, group: int) -> slice:
        """The slice of :attr:`member_ids` / :attr:`member_index` holding group ``group`` (file order)."""
        g = check_int(group, "group", 0, self.n_groups - 1)
        return slice(int(self.offset[g]), int(self.offset[g] + self.length[g]))

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


def _ids_header(path: Path) -> tuple[np.void, str, int]:
    """Header, byte order and ID width (4 or 8 bytes) of one group_ids file, checked against its size."""
    if not path.is_file():
        raise FileFormatError(f"FoF group_ids file {str(path)!r} does not exist")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(IDS_HEADER_DTYPE.itemsize)
    except OSError as exc:
        raise FileFormatError(f"{str(path)!r}: cannot be read: {exc}") from exc
    if len(raw) == IDS_HEADER_DTYPE.itemsize:
        for order in ("<", ">"):
            head = np.frombuffer(raw, dtype=IDS_HEADER_DTYPE.newbyteorder(order))[0]
            n_ids = int(head["n_ids"])
            for width in (4, 8):
                if n_ids >= 0 and size - IDS_HEADER_DTYPE.itemsize == width * n_ids:
                    return head, order, width
    raise FileFormatError(f"{str(path)!r}: corrupt or truncated group_ids file: {size} bytes do not match the 28-byte "
                          f"header plus Nids IDs of 4 or 8 bytes")


def _read_member_ids(folder: Path, snapnum: int, tot_n_ids: int) -> np.ndarray | None:
    """The IDs of every ``group_ids_XXX.<i>`` file, concatenated (uint64); None where there are none."""
    first = folder / f"group_ids_{snapnum:03d}.0"
    if not first.is_file():
        return None
    head, _, _ = _ids_header(first)
    n_files = int(head["n_files"])
    if not 1 <= n_files <= 100000:
        raise FileFormatError(f"{str(first)!r}: Nfiles = {n_files} must be in [1, 100000]")
    chunks = []
    for p in set_members(folder / f"group_ids_{snapnum:03d}", n_files, "", "FoF member-ID files"):
        head, order, width = _ids_header(p)
        if int(head["tot_n_ids"]) != tot_n_ids:
            raise FileFormatError(f"{str(p)!r}: TotNids = {int(head['tot_n_ids'])} differs from {tot_n_ids} in the "
                                  f"group_tab files")
        dtype = np.dtype(f"u{width}").newbyteorder(order)
        chunks.append(np.fromfile(p, dtype=dtype, count=int(head["n_ids"]), offset=IDS_HEADER_DTYPE.itemsize))
    ids = np.concatenate(chunks).astype(np.uint64)
    if ids.size != tot_n_ids:
        raise FileFormatError(f"FoF member IDs {str(first)!r}: TotNids = {tot_n_ids} but the files hold {ids.size}")
    return ids


def read_fof_groups(groups_dir, snapnum: int, *, a: float, length_unit: str = DEFAULT_LENGTH_UNIT,
                    lagrangian_map: LagrangianMap | None = None) -> FoFGroups:
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
    lagrangian_map : LagrangianMap, optional
        The simulation's ID map (from its initial conditions): the member IDs, where the catalogue has
        ``group_ids`` files, are turned into Lagrangian grid indices (``member_index``).

    Returns
    -------
    FoFGroups

    Raises
    ------
    FileFormatError
        Missing file, size that does not match its header, totals that disagree between files, group
        offsets outside the member list, member IDs that are not the simulation's or repeat.

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
    tot_groups = tot_ids = None
    for p in paths:
        head, order = _header(p)
        ng = int(head["n_groups"])
        if tot_groups is None:
            tot_groups, tot_ids = int(head["tot_n_groups"]), int(head["tot_n_ids"])
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
    length, offset = out["length"].astype(np.int64), out["offset"].astype(np.int64)
    member_ids = _read_member_ids(paths[0].parent, snapnum, tot_ids)
    member_index = None
    if member_ids is not None:
        if length.size and (offset.min() < 0 or int((offset + length).max()) > member_ids.size):
            raise FileFormatError(f"FoF catalogue {str(paths[0])!r}: GroupOffset + GroupLen reach beyond the "
                                  f"{member_ids.size} member IDs")
        if lagrangian_map is not None:
            member_index = lagrangian_index(member_ids, lagrangian_map, f"FoF member IDs {str(paths[0].parent)!r}",
                                            complete=False)
    logger.info("read FoF catalogue %s: %d groups in %d file(s)%s", paths[0], tot_groups, len(paths),
                "" if member_ids is None else f", {member_ids.size} member IDs")
    return FoFGroups(
        length=length, offset=offset, mass=out["mass"].astype(np.float64) * MASS_UNIT_MSUN_H,
        position=out["position"].astype(np.float64) / factor,
        velocity=out["velocity"].astype(np.float64) / float(a), a=float(a), files=tuple(str(p) for p in paths),
        member_ids=member_ids, member_index=member_index,
    )
