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
...) and an int32. Only type-1 (dark matter) particles are supported. Units are converted with
:mod:`emu_backend.io.gadget_units`; the particles come back as
:class:`~emu_backend.io.gadget_particles.GadgetParticles`, as from the HDF5 reader.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import FileFormatError
from ._file_sets import member_base, set_members
from .gadget_header import GadgetHeader, check_header_set, particles_from_file
from .gadget_particles import GadgetParticles
from .gadget_units import DEFAULT_LENGTH_UNIT, length_factor

__all__ = ["HEADER_DTYPE", "read_gadget_binary", "gadget_binary_paths"]

logger = logging.getLogger(__name__)

#: The 256-byte header (little endian; ``.newbyteorder()`` for big-endian files).
HEADER_DTYPE = np.dtype([
    ("npart", "<u4", 6), ("massarr", "<f8", 6), ("time", "<f8"), ("redshift", "<f8"),
    ("flag_sfr", "<i4"), ("flag_feedback", "<i4"), ("npart_total", "<u4", 6), ("flag_cooling", "<i4"),
    ("num_files", "<i4"), ("box_size", "<f8"), ("omega0", "<f8"), ("omega_lambda", "<f8"),
    ("hubble_param", "<f8"), ("flag_stellarage", "<i4"), ("flag_metals", "<i4"),
    ("npart_total_high", "<u4", 6), ("flag_entropy", "<i4"), ("fill", "V60"),
])
assert HEADER_DTYPE.itemsize == 256


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
    if n_files == 1:
        return [path]
    base = member_base(path)
    if base is None:
        raise FileFormatError(f"{str(path)!r}: num_files = {n_files} but the name is not of the form X.<i>")
    return set_members(base, n_files, "", "multi-file Gadget set")


def _header(head: np.void) -> GadgetHeader:
    """The format-independent header of a binary header record."""
    total = np.asarray(head["npart_total"], np.int64) + (np.asarray(head["npart_total_high"], np.int64) << 32)
    return GadgetHeader(
        time=float(head["time"]), box_size=float(head["box_size"]), num_files=int(head["num_files"]),
        npart=tuple(int(n) for n in head["npart"]), npart_total=tuple(int(t) for t in total),
        mass_table=tuple(float(m) for m in head["massarr"]), omega0=float(head["omega0"]),
        omega_lambda=float(head["omega_lambda"]), hubble_param=float(head["hubble_param"]),
        redshift=float(head["redshift"]),
    )


def _particle_blocks(path: Path, named: dict, ordered: list) -> list:
    """The POS, VEL, ID and (or None) MASS records of one file."""
    if named:
        missing = [b for b in ("POS ", "VEL ", "ID  ") if b not in named]
        if missing:
            raise FileFormatError(f"{str(path)!r}: format-2 blocks {missing} missing (found {sorted(named)})")
        return [named["POS "], named["VEL "], named["ID  "], named.get("MASS")]
    if len(ordered) < 4:
        raise FileFormatError(f"{str(path)!r}: {len(ordered)} blocks, expected HEAD, POS, VEL, ID")
    return ordered[1:4] + [ordered[4] if len(ordered) > 4 else None]


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


def read_gadget_binary(path_or_prefix, *, length_unit: str = DEFAULT_LENGTH_UNIT) -> GadgetParticles:
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
    factor = length_factor(length_unit)
    paths = gadget_binary_paths(path_or_prefix)
    files = []
    for p in paths:
        order, named, ordered = _blocks(p)
        files.append((order, named, ordered, _read_header(p, order, ordered[0])))
    headers = [_header(head) for *_, head in files]
    n_part = check_header_set(paths, headers)
    pos, vel, ids, masses = [], [], [], []
    for p, (order, named, ordered, head) in zip(paths, files):
        n = int(head["npart"][1])
        recs = _particle_blocks(p, named, ordered)
        pos.append(_read_array(p, order, recs[0], n, 3, {4: "f4", 8: "f8"}, "POS"))
        vel.append(_read_array(p, order, recs[1], n, 3, {4: "f4", 8: "f8"}, "VEL"))
        ids.append(_read_array(p, order, recs[2], n, 1, {4: "u4", 8: "u8"}, "ID"))
        if head["massarr"][1] == 0 and n:
            if recs[3] is None:
                raise FileFormatError(f"{str(p)!r}: massarr[1] = 0 but no MASS block follows")
            masses.append(_read_array(p, order, recs[3], n, 1, {4: "f4", 8: "f8"}, "MASS"))
    mass_1e10 = None
    if masses:
        m = np.concatenate(masses)
        if m.size and not np.allclose(m, m[0], rtol=1e-6):
            raise FileFormatError(f"{str(paths[0])!r}: type-1 particles have unequal masses; not supported")
        mass_1e10 = float(m[0])
    particles = particles_from_file(headers[0], paths, np.concatenate(pos), np.concatenate(vel),
                                    np.concatenate(ids), factor=factor, mass_1e10=mass_1e10)
    logger.info("read Gadget binary %s: %d particles in %d file(s), a = %.6g", paths[0], n_part, len(paths),
                particles.a)
    return particles
