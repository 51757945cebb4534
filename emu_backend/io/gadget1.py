"""Gadget binary snapshots and initial conditions (format 1, and format 2 with block labels), read-only.

The Quijote initial conditions ``ICs/ics.{0..N-1}`` are in this format (written by 2LPTic). Layout of
one file: a sequence of Fortran-style records ``int32 nbytes | payload | int32 nbytes`` (little or big
endian, detected from the first record)::

    HEAD   256 bytes: uint32 npart[6], float64 massarr[6], float64 time (= a), float64 redshift,
           int32 flag_sfr, int32 flag_feedback, uint32 npartTotal[6], int32 flag_cooling,
           int32 num_files, float64 BoxSize, float64 Omega0, float64 OmegaLambda, float64 HubbleParam,
           int32 flag_stellarage, int32 flag_metals, uint32 npartTotalHighWord[6],
           int32 flag_entropy_instead_u, padding to 256 bytes
    POS    float32 (or float64) x, y, z per particle, comoving [kpc/h for Gadget's default units]
    VEL    float32 (or float64) u = v_pec / sqrt(a) per particle [km/s]
    ID     uint32 (or uint64) per particle
    MASS   only when massarr[type] = 0 for a present type

Format 2 precedes every block by an 8-byte record holding a 4-character label (``"HEAD"``, ``"POS "``,
...) and an int32. Only type-1 (dark matter) particles are supported. Unit conversions (kpc/h,
sqrt(a), 1e10 Msun/h) happen here and in :mod:`emu_backend.io.quijote`, nowhere else.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FileFormatError, InputError

__all__ = ["GadgetParticles", "HEADER_DTYPE", "read_gadget_binary", "gadget_binary_paths", "LENGTH_FACTORS"]

logger = logging.getLogger(__name__)

#: File length unit -> file units per Mpc/h.
LENGTH_FACTORS = {"kpc/h": 1000.0, "Mpc/h": 1.0}
_MASS_UNIT_MSUN_H = 1e10

#: The 256-byte header (little endian; ``.newbyteorder()`` for big-endian files).
HEADER_DTYPE = np.dtype([
    ("npart", "<u4", 6), ("massarr", "<f8", 6), ("time", "<f8"), ("redshift", "<f8"),
    ("flag_sfr", "<i4"), ("flag_feedback", "<i4"), ("npart_total", "<u4", 6), ("flag_cooling", "<i4"),
    ("num_files", "<i4"), ("box_size", "<f8"), ("omega0", "<f8"), ("omega_lambda", "<f8"),
    ("hubble_param", "<f8"), ("flag_stellarage", "<i4"), ("flag_metals", "<i4"),
    ("npart_total_high", "<u4", 6), ("flag_entropy", "<i4"), ("fill", "V60"),
])
assert HEADER_DTYPE.itemsize == 256


@dataclass(frozen=True, eq=False)
class GadgetParticles:
    """Type-1 particles of a Gadget snapshot or IC set, in file order, converted to internal units.

    Attributes
    ----------
    positions : ndarray, shape (N, 3), float32
        Comoving positions [Mpc/h] as stored (not wrapped).
    velocities : ndarray, shape (N, 3), float32
        Peculiar velocities [km/s] (the stored ``u`` times ``sqrt(a)``).
    ids : ndarray, shape (N,), uint64
        Particle IDs as stored.
    a : float
        Scale factor (header ``Time``).
    box_size : float
        Box side [Mpc/h].
    omega_m, omega_l, h : float
        Header cosmology (Omega0, OmegaLambda, HubbleParam).
    particle_mass : float
        Mass of one particle [Msun/h].
    files : tuple of str
        The files read, in order.
    """

    positions: np.ndarray
    velocities: np.ndarray
    ids: np.ndarray
    a: float
    box_size: float
    omega_m: float
    omega_l: float
    h: float
    particle_mass: float
    files: tuple = field(default_factory=tuple)

    @property
    def z(self) -> float:
        """Redshift ``1/a - 1``."""
        return 1.0 / self.a - 1.0

    @property
    def n_particles(self) -> int:
        """Number of particles N."""
        return int(self.ids.shape[0])


def _check_length_unit(length_unit: str) -> float:
    if length_unit not in LENGTH_FACTORS:
        raise InputError(f"length_unit must be one of {sorted(LENGTH_FACTORS)}, got {length_unit!r}")
    return LENGTH_FACTORS[length_unit]


def _records(path: Path) -> tuple[str, list[tuple[int, int]], int]:
    """Walk the Fortran records of a file: (byte order '<' or '>', [(payload offset, size)], format)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise FileFormatError(f"{str(path)!r}: {size} bytes is too short for a Gadget binary file")
            order = None
            for bo in ("<", ">"):
                first = int(np.frombuffer(head, dtype=bo + "i4")[0])
                if first in (256, 8):
                    order, fmt = bo, (1 if first == 256 else 2)
                    break
            if order is None:
                raise FileFormatError(
                    f"{str(path)!r}: not a Gadget binary file (first record has {head!r}; expected the 256-byte "
                    f"header record of format 1 or the 8-byte label record of format 2)"
                )
            records, pos = [], 0
            while pos < size:
                fh.seek(pos)
                lead = fh.read(4)
                if len(lead) < 4:
                    raise FileFormatError(f"{str(path)!r}: truncated record marker at byte {pos} of {size}")
                n = int(np.frombuffer(lead, dtype=order + "u4")[0])
                end = pos + 4 + n
                if end + 4 > size:
                    raise FileFormatError(
                        f"{str(path)!r}: truncated: record {len(records)} at byte {pos} declares {n} bytes but the "
                        f"file ends at byte {size}"
                    )
                fh.seek(end)
                trail = int(np.frombuffer(fh.read(4), dtype=order + "u4")[0])
                if trail != n:
                    raise FileFormatError(
                        f"{str(path)!r}: corrupt record {len(records)} at byte {pos}: leading size {n} != trailing "
                        f"size {trail}"
                    )
                records.append((pos + 4, n))
                pos = end + 4
    except OSError as exc:
        raise FileFormatError(f"{str(path)!r}: cannot be read: {exc}") from exc
    return order, records, fmt


def _blocks(path: Path) -> tuple[str, dict[str, tuple[int, int]], list[tuple[int, int]]]:
    """Named blocks (format 2) or blocks in order (format 1) of one file."""
    order, records, fmt = _records(path)
    if fmt == 1:
        return order, {}, records
    if len(records) % 2:
        raise FileFormatError(f"{str(path)!r}: format-2 file with an odd number of records ({len(records)})")
    named, ordered = {}, []
    with open(path, "rb") as fh:
        for (off, n), data in zip(records[0::2], records[1::2]):
            if n != 8:
                raise FileFormatError(f"{str(path)!r}: format-2 label record at byte {off - 4} has {n} bytes, "
                                      f"expected 8")
            fh.seek(off)
            label = fh.read(4).decode("ascii", errors="replace")
            named[label] = data
            ordered.append(data)
    if "HEAD" not in named:
        raise FileFormatError(f"{str(path)!r}: format-2 file without a 'HEAD' block (labels {sorted(named)})")
    return order, named, [named["HEAD"]] + [d for d in ordered if d != named["HEAD"]]


def _read_header(path: Path, order: str, record: tuple[int, int]) -> np.void:
    off, n = record
    if n != 256:
        raise FileFormatError(f"{str(path)!r}: header block has {n} bytes, expected 256")
    with open(path, "rb") as fh:
        fh.seek(off)
        raw = fh.read(256)
    dtype = HEADER_DTYPE if order == "<" else HEADER_DTYPE.newbyteorder(">")
    return np.frombuffer(raw, dtype=dtype)[0]


def gadget_binary_paths(path_or_prefix) -> list[Path]:
    """All files of a binary snapshot: ``X`` (single file) or ``X.0 ... X.{k-1}`` (``num_files = k``).

    Accepts the prefix ``X`` or any file ``X.<i>`` of a multi-file set.
    """
    path = Path(path_or_prefix)
    if path.is_dir():
        raise FileFormatError(f"{str(path)!r} is a folder; give the snapshot prefix, e.g. {str(path / 'ics')!r}")
    if not path.is_file():
        alt = path.with_name(path.name + ".0")
        if not alt.is_file():
            raise FileFormatError(f"Gadget binary file {str(path)!r} not found (nor {str(alt)!r})")
        path = alt
    order, named, ordered = _blocks(path)
    header = _read_header(path, order, ordered[0])
    n_files = int(header["num_files"])
    if not 1 <= n_files <= 100000:
        raise FileFormatError(f"{str(path)!r}: header num_files = {n_files} must be in [1, 100000]")
    match = re.match(r"^(?P<base>.+)\.(?P<index>\d+)$", path.name)
    if n_files == 1:
        return [path]
    if match is None:
        raise FileFormatError(f"{str(path)!r}: num_files = {n_files} but the name is not of the form X.<i>")
    base = match["base"]
    paths = [path.with_name(f"{base}.{i}") for i in range(n_files)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileFormatError(f"multi-file Gadget set {str(path.with_name(base))!r} declares {n_files} files; "
                              f"missing: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    return paths


def _read_array(path: Path, order: str, record, n_part: int, ncomp: int, kinds: dict, name: str) -> np.ndarray:
    off, nbytes = record
    per = nbytes / max(n_part * ncomp, 1)
    if n_part == 0:
        return np.zeros((0, ncomp) if ncomp > 1 else (0,), dtype=kinds[4])
    if per not in kinds:
        raise FileFormatError(
            f"{str(path)!r}: block {name} has {nbytes} bytes for {n_part} particles x {ncomp}; expected "
            f"{' or '.join(str(k * n_part * ncomp) for k in kinds)} bytes"
        )
    dtype = np.dtype(kinds[int(per)]).newbyteorder(order)
    arr = np.fromfile(path, dtype=dtype, count=n_part * ncomp, offset=off)
    return arr.reshape((n_part, ncomp) if ncomp > 1 else (n_part,))


def read_gadget_binary(path_or_prefix, *, length_unit: str = "kpc/h") -> GadgetParticles:
    """Read a single- or multi-file Gadget binary snapshot / IC set (format 1 or 2, type-1 particles).

    Parameters
    ----------
    path_or_prefix : str or Path
        ``.../ICs/ics`` (resolves ``ics`` or ``ics.0 ...``) or one file of the set.
    length_unit : {"kpc/h", "Mpc/h"}
        Unit of positions and BoxSize in the file (Quijote, 2LPTic, Gadget default: kpc/h).

    Returns
    -------
    GadgetParticles
        Positions [Mpc/h], velocities [km/s] (``u sqrt(a)``), IDs as stored, in file order.

    Raises
    ------
    FileFormatError
        Missing file of the set, truncated or corrupt record, wrong block size, header counts that
        disagree between files, particle types other than 1.

    Examples
    --------
    >>> read_gadget_binary("no/such/ics")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    emu_backend.errors.FileFormatError: Gadget binary file 'no/such/ics' not found (nor 'no/such/ics.0')
    """
    factor = _check_length_unit(length_unit)
    paths = gadget_binary_paths(path_or_prefix)
    pos, vel, ids, first = [], [], [], None
    masses = []
    for p in paths:
        order, named, ordered = _blocks(p)
        head = _read_header(p, order, ordered[0])
        npart = np.asarray(head["npart"], dtype=np.int64)
        total = np.asarray(head["npart_total"], np.int64) + (np.asarray(head["npart_total_high"], np.int64) << 32)
        if first is None:
            first = head
            first_total = total
        for key in ("time", "box_size", "num_files"):
            if head[key] != first[key]:
                raise FileFormatError(f"{str(p)!r}: header {key} = {head[key]!r} differs from {first[key]!r} in "
                                      f"{str(paths[0])!r}")
        if not np.array_equal(total, first_total):
            raise FileFormatError(f"{str(p)!r}: npartTotal {total.tolist()} differs from {first_total.tolist()}")
        others = [t for t in range(6) if t != 1 and (npart[t] or total[t])]
        if others:
            raise FileFormatError(f"{str(p)!r}: particle types {others} present (npart {npart.tolist()}); only "
                                  f"type 1 (dark matter) is supported")
        n = int(npart[1])
        if named:
            missing = [b for b in ("POS ", "VEL ", "ID  ") if b not in named]
            if missing:
                raise FileFormatError(f"{str(p)!r}: format-2 blocks {missing} missing (found {sorted(named)})")
            recs = [named["POS "], named["VEL "], named["ID  "], named.get("MASS")]
        else:
            if len(ordered) < 4:
                raise FileFormatError(f"{str(p)!r}: {len(ordered)} blocks, expected HEAD, POS, VEL, ID")
            recs = ordered[1:4] + [ordered[4] if len(ordered) > 4 else None]
        pos.append(_read_array(p, order, recs[0], n, 3, {4: "f4", 8: "f8"}, "POS"))
        vel.append(_read_array(p, order, recs[1], n, 3, {4: "f4", 8: "f8"}, "VEL"))
        ids.append(_read_array(p, order, recs[2], n, 1, {4: "u4", 8: "u8"}, "ID"))
        if head["massarr"][1] == 0 and n:
            if recs[3] is None:
                raise FileFormatError(f"{str(p)!r}: massarr[1] = 0 but no MASS block follows")
            masses.append(_read_array(p, order, recs[3], n, 1, {4: "f4", 8: "f8"}, "MASS"))
    n_total = int(first_total[1])
    n_read = sum(len(i) for i in ids)
    if n_read != n_total:
        raise FileFormatError(f"Gadget set {str(paths[0])!r}: npartTotal[1] = {n_total} but the {len(paths)} file(s) "
                              f"hold {n_read} particles")
    a = float(first["time"])
    box = float(first["box_size"]) / factor
    if not (0 < a <= 1.5 and math.isfinite(box) and box > 0):
        raise FileFormatError(f"{str(paths[0])!r}: header time = {a!r} must be in (0, 1.5] and BoxSize = "
                              f"{float(first['box_size'])!r} > 0")
    if masses:
        m = np.concatenate(masses)
        if m.size and not np.allclose(m, m[0], rtol=1e-6):
            raise FileFormatError(f"{str(paths[0])!r}: type-1 particles have unequal masses; not supported")
        mass = float(m[0]) * _MASS_UNIT_MSUN_H
    else:
        mass = float(first["massarr"][1]) * _MASS_UNIT_MSUN_H
    positions = (np.concatenate(pos).astype(np.float64) / factor).astype(np.float32)
    velocities = (np.concatenate(vel).astype(np.float64) * math.sqrt(a)).astype(np.float32)
    logger.info("read Gadget binary %s: %d particles in %d file(s), a = %.6g", paths[0], n_read, len(paths), a)
    return GadgetParticles(
        positions=positions, velocities=velocities, ids=np.concatenate(ids).astype(np.uint64), a=a, box_size=box,
        omega_m=float(first["omega0"]), omega_l=float(first["omega_lambda"]), h=float(first["hubble_param"]),
        particle_mass=mass, files=tuple(str(p) for p in paths),
    )
