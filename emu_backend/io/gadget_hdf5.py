"""The Gadget-HDF5 reader: type-1 particles and header of a single- or multi-file snapshot, read-only.

Every Gadget-HDF5 file the package reads goes through :func:`read_gadget_hdf5_particles`: its own
snapshots (:func:`emu_backend.io.gadget.read_gadget_hdf5` builds a Snapshot on top) and Quijote's
(:mod:`emu_backend.io.quijote`). Layout read (``X.hdf5``, or ``X.0.hdf5 ... X.{k-1}.hdf5``)::

    /Header      attrs Time (= a), BoxSize, NumPart_ThisFile[6], NumPart_Total[6],
                 NumPart_Total_HighWord[6] (optional), MassTable[6] [1e10 Msun/h], NumFilesPerSnapshot,
                 Omega0, OmegaLambda, HubbleParam (optional; else from /Parameters),
                 LengthUnit (optional, "kpc/h" or "Mpc/h"; written by this package)
    /Parameters  attrs UnitLength_in_cm (optional), cosmology (optional)
    /Provenance  attrs of files written by this package (optional), passed on as they are
    /PartType1/Coordinates  (n, 3) comoving, in the length unit
    /PartType1/Velocities   (n, 3) Gadget's u = v_pec / sqrt(a) [km/s]
    /PartType1/ParticleIDs  (n,) integers

Counts follow the Gadget-2/3 convention: ``NumPart_Total`` holds the low 32 bits of the total,
``NumPart_Total_HighWord`` the high bits. Since February 2023 the Quijote datasets are compressed with
the Blosc HDF5 filter (id 32001) from ``hdf5plugin``; it is imported only when a dataset needs a filter
h5py does not have. Units are converted with :mod:`emu_backend.io.gadget_units`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import h5py
import numpy as np

from ..errors import EmuBackendError, FileFormatError
from ._file_sets import member_base, set_members, without_suffix
from .gadget_header import GadgetHeader, check_header_set, particles_from_file
from .gadget_particles import GadgetParticles
from .gadget_units import DEFAULT_LENGTH_UNIT, LENGTH_UNITS, length_factor, length_unit_of_cm
from .hdf5_filters import HDF5_EXTRA, ensure_filters
from .lagrangian_map import lagrangian_grid_size

__all__ = ["HDF5_EXTRA", "gadget_file_paths", "read_gadget_hdf5_particles"]

logger = logging.getLogger(__name__)

_REQUIRED_HEADER = ("BoxSize", "Time", "NumPart_ThisFile", "NumPart_Total", "NumFilesPerSnapshot", "MassTable")
_COUNTS = ("NumPart_ThisFile", "NumPart_Total", "NumPart_Total_HighWord")
_DATASETS = (("Coordinates", 3), ("Velocities", 3), ("ParticleIDs", 1))
#: What h5py raises for damaged files (RuntimeError for corrupt B-trees, OSError for unreadable blocks).
_H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError)


def gadget_file_paths(path_or_prefix: str | Path) -> list[Path]:
    """Resolve a snapshot name to its file(s).

    Accepts an existing single file, any file ``X.{i}.hdf5`` of a multi-file set, a prefix ``X``
    (or ``X.hdf5``) with ``X.hdf5`` or ``X.0.hdf5`` on disk, or a folder holding one multi-file set.

    Returns
    -------
    list of Path
        All files of the snapshot, in file order.

    Raises
    ------
    FileFormatError
        No such snapshot, a header without a usable NumFilesPerSnapshot, missing members.
    """
    path = Path(path_or_prefix)
    if path.is_dir():
        firsts = sorted(path.glob("*.0.hdf5"))
        if len(firsts) != 1:
            raise FileFormatError(
                f"folder {str(path)!r} must hold exactly one '*.0.hdf5' snapshot set, found {len(firsts)}"
            )
        path = firsts[0]
    if not path.is_file():
        base = without_suffix(path, ".hdf5")
        candidates = [base.with_name(base.name + ".hdf5"), base.with_name(base.name + ".0.hdf5")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise FileFormatError(
                f"Gadget snapshot {str(path_or_prefix)!r} not found (tried {[str(c) for c in candidates]})"
            )
        path = found[0]
    n_files = _read_attrs(path)["Header"]["NumFilesPerSnapshot"]
    if not (np.isfinite(n_files) and n_files == int(n_files) and n_files >= 1):
        raise FileFormatError(f"{str(path)!r}: Header/NumFilesPerSnapshot = {n_files!r} must be an integer >= 1")
    n_files = int(n_files)
    if n_files == 1:
        return [path]
    base = member_base(path, ".hdf5")
    if base is None:
        raise FileFormatError(
            f"{str(path)!r}: NumFilesPerSnapshot = {n_files} but the name is not of the form X.<i>.hdf5"
        )
    return set_members(base, n_files, ".hdf5", "multi-file snapshot")


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except _H5_ERRORS as exc:
        raise FileFormatError(
            f"{str(path)!r}: cannot be opened as HDF5 (missing, truncated or corrupt): {exc}"
        ) from exc


def _read_attrs(path: Path) -> dict[str, dict]:
    """Header, Parameters and Provenance attributes of one file (the latter two may be empty), checked."""
    with _open(path) as f:
        try:
            if "Header" not in f:
                raise FileFormatError(f"{str(path)!r}: no 'Header' group; not a Gadget HDF5 snapshot")
            groups = {name: dict(f[name].attrs) if name in f else {} for name in ("Header", "Parameters", "Provenance")}
        except EmuBackendError:
            raise
        except _H5_ERRORS as exc:
            raise FileFormatError(f"{str(path)!r}: cannot read the header attributes (truncated or corrupt?): {exc}") from exc
    header = groups["Header"]
    missing = [key for key in _REQUIRED_HEADER if key not in header]
    if missing:
        raise FileFormatError(f"{str(path)!r}: Header lacks required attribute(s) {missing}")
    for key in ("BoxSize", "Time", "NumFilesPerSnapshot"):
        if np.size(header[key]) != 1 or np.asarray(header[key]).dtype.kind not in "iuf":
            raise FileFormatError(f"{str(path)!r}: Header/{key} must be one number, got {header[key]!r}")
        header[key] = np.asarray(header[key]).reshape(()).item()
    for key in ("NumPart_ThisFile", "NumPart_Total", "MassTable", "NumPart_Total_HighWord"):
        if key in header and np.shape(header[key]) != (6,):
            raise FileFormatError(f"{str(path)!r}: Header/{key} must have 6 entries, got shape {np.shape(header[key])}")
    for key in _COUNTS:
        if key in header:
            counts = np.asarray(header[key])
            if counts.dtype.kind not in "iu" or counts.min() < 0:
                raise FileFormatError(f"{str(path)!r}: Header/{key} = {header[key]!r} must hold 6 integers >= 0")
            header[key] = counts.astype(np.int64)
    return groups


def _header(groups: dict[str, dict]) -> GadgetHeader:
    """The format-independent header of one file (cosmology from /Header, else /Parameters)."""
    h, par = groups["Header"], groups["Parameters"]
    high = h.get("NumPart_Total_HighWord", np.zeros(6, np.int64))
    cosmo = [_number(h.get(key, par.get(key, math.nan))) for key in ("Omega0", "OmegaLambda", "HubbleParam")]
    return GadgetHeader(
        time=h["Time"], box_size=h["BoxSize"], num_files=h["NumFilesPerSnapshot"],
        npart=tuple(int(n) for n in h["NumPart_ThisFile"]),
        npart_total=tuple(int(t) + (int(hw) << 32) for t, hw in zip(h["NumPart_Total"], high)),
        mass_table=tuple(_number(m) for m in h["MassTable"]), omega0=cosmo[0], omega_lambda=cosmo[1],
        hubble_param=cosmo[2], redshift=_number(h.get("Redshift", math.nan)),
    )


def _file_length_unit(path: Path, header: dict, parameters: dict) -> str | None:
    """The length unit a file records (Header/LengthUnit, else Parameters/UnitLength_in_cm), or None."""
    if "LengthUnit" in header:
        unit = header["LengthUnit"]
        unit = unit.decode(errors="replace") if isinstance(unit, bytes) else str(unit)
        if unit not in LENGTH_UNITS:
            raise FileFormatError(f"{str(path)!r}: Header/LengthUnit = {unit!r} is not one of {sorted(LENGTH_UNITS)}")
        return unit
    if "UnitLength_in_cm" in parameters:
        cm = _number(parameters["UnitLength_in_cm"])
        unit = length_unit_of_cm(cm)
        if unit is None:
            raise FileFormatError(f"{str(path)!r}: UnitLength_in_cm = {cm!r} is neither kpc/h nor Mpc/h")
        return unit
    return None


def _resolve_length_unit(path: Path, groups: dict, length_unit: str | None) -> float:
    """File units per Mpc/h: ``length_unit`` if given, else the file's, else Gadget's default."""
    file_unit = _file_length_unit(path, groups["Header"], groups["Parameters"])
    if length_unit is None:
        if file_unit is None:
            logger.info("%s records no length unit; assuming Gadget's default %s", path, DEFAULT_LENGTH_UNIT)
        length_unit = file_unit or DEFAULT_LENGTH_UNIT
    elif file_unit is not None and file_unit != length_unit:
        logger.warning("%s records length unit %s; reading it as %s as requested", path, file_unit, length_unit)
    return length_factor(length_unit)


def _number(value) -> float:
    """One number of an attribute as a float; NaN if it is not one."""
    arr = np.asarray(value)
    return float(arr.reshape(())) if arr.size == 1 and arr.dtype.kind in "iuf" else math.nan


def _read_datasets(path: Path, n_this: int) -> list[np.ndarray]:
    """Coordinates, Velocities and ParticleIDs of one file, as stored, shapes checked against ``n_this``."""
    out = []
    with _open(path) as f:
        try:
            for name, ncomp in _DATASETS:
                key, shape = f"PartType1/{name}", (n_this, ncomp) if ncomp > 1 else (n_this,)
                if key not in f:
                    raise FileFormatError(f"{str(path)!r}: dataset {key!r} is missing")
                ds = f[key]
                if not isinstance(ds, h5py.Dataset):
                    raise FileFormatError(f"{str(path)!r}: {key!r} is a {type(ds).__name__}, expected a dataset")
                if ds.shape != shape:
                    raise FileFormatError(
                        f"{str(path)!r}: dataset {key!r} has shape {ds.shape}, expected {shape} "
                        f"(NumPart_ThisFile[1] = {n_this})"
                    )
                ensure_filters(ds, path, key)
                out.append(ds[...])
        except EmuBackendError:
            raise
        except _H5_ERRORS as exc:
            raise FileFormatError(f"{str(path)!r}: cannot read particle data (truncated or corrupt?): {exc}") from exc
    return out


def read_gadget_hdf5_particles(path_or_prefix: str | Path, *, length_unit: str | None = None,
                               lagrangian: bool = False) -> GadgetParticles:
    """Read the type-1 particles of a single- or multi-file Gadget HDF5 snapshot, in file order.

    Parameters
    ----------
    path_or_prefix : str or Path
        ``.../snapdir_004/snap_004`` (resolves ``snap_004.hdf5`` or ``snap_004.0.hdf5 ...``), one file,
        or a folder; see :func:`gadget_file_paths`.
    length_unit : {"kpc/h", "Mpc/h"}, optional
        Unit of Coordinates and BoxSize in the files; by default the recorded one (Header/LengthUnit,
        else Parameters/UnitLength_in_cm), else Gadget's "kpc/h" (Quijote's).
    lagrangian : bool
        Refuse, from the header and before reading any data, a particle count that is not the
        ``n^3`` of a Lagrangian grid.

    Returns
    -------
    GadgetParticles
        Positions [Mpc/h], velocities [km/s] (``u sqrt(a)``), IDs as stored; the header cosmology
        (NaN where absent) and the ``/Provenance`` attributes of the first file.

    Raises
    ------
    FileFormatError
        Missing file of the set, truncated/corrupt file, missing header attribute or dataset, wrong
        dataset shape, counts or headers that disagree between files, particle types other than 1.
    MissingDependencyError
        A dataset is Blosc-compressed and hdf5plugin is not installed (extra ``quijote``).
    InputError
        ``length_unit`` other than "kpc/h" or "Mpc/h".

    Examples
    --------
    >>> read_gadget_hdf5_particles("no/such/snap_004")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    emu_backend.errors.FileFormatError: Gadget snapshot 'no/such/snap_004' not found (tried [...])
    """
    if length_unit is not None:
        length_factor(length_unit)
    paths = gadget_file_paths(path_or_prefix)
    groups = [_read_attrs(p) for p in paths]
    headers = [_header(g) for g in groups]
    n_part = check_header_set(paths, headers)
    if lagrangian:
        lagrangian_grid_size(n_part, f"snapshot {str(paths[0])!r}")
    factor = _resolve_length_unit(paths[0], groups[0], length_unit)
    parts = [_read_datasets(p, h.npart[1]) for p, h in zip(paths, headers) if h.npart[1] > 0]
    pos, vel, ids = (np.concatenate([part[i] for part in parts]) for i in range(3))
    particles = particles_from_file(headers[0], paths, pos, vel, ids, factor=factor,
                                    provenance=groups[0]["Provenance"])
    logger.info("read Gadget HDF5 %s: %d particles in %d file(s), a = %.6g", paths[0], n_part, len(paths),
                particles.a)
    return particles
