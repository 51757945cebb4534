"""Gadget-style HDF5 snapshots (single file or ``snap_XXX.{i}.hdf5`` multi-file sets).

Layout written (type-1 dark-matter particles only)::

    /Header      attrs BoxSize, Time (= a), Redshift, NumPart_ThisFile[6], NumPart_Total[6],
                 NumPart_Total_HighWord[6], MassTable[6], NumFilesPerSnapshot, Omega0,
                 OmegaLambda, HubbleParam, LengthUnit ("kpc/h" or "Mpc/h")
    /Parameters  attrs UnitLength_in_cm, UnitMass_in_g, UnitVelocity_in_cm_per_s, BoxSize, Omega0,
                 OmegaLambda, OmegaBaryon, HubbleParam (Gadget-4 style run parameters)
    /Units       attrs UnitLength_in_cm, UnitMass_in_g, UnitVelocity_in_cm_per_s
    /Provenance  attrs format, format_version, package_version, grid, cosmology_json, meta_json
    /PartType1/Coordinates  (n, 3) float32, comoving, in LengthUnit, in [0, BoxSize)
    /PartType1/Velocities   (n, 3) float32, Gadget's u = v_pec / sqrt(a) [km/s]
    /PartType1/ParticleIDs  (n,) uint64, Lagrangian C-order index (0-based)

Counts follow the Gadget-2/3 convention: ``NumPart_Total`` holds the low 32 bits, and
``NumPart_Total_HighWord`` the high bits of the total. Masses: ``MassTable[1]`` in 1e10 Msun/h.
All unit conversions (kpc/h, sqrt(a)) happen here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import h5py
import numpy as np

from .._version import __version__
from ..cosmology.params import Cosmology
from ..datatypes.meta import meta_from_json, meta_to_json
from ..datatypes.snapshot import Snapshot
from ..errors import FileFormatError, InputError
from .atomic import atomic_path, check_overwrite

__all__ = ["LENGTH_UNITS", "write_gadget_hdf5", "read_gadget_hdf5", "gadget_file_paths"]

logger = logging.getLogger(__name__)

#: File length unit -> (file units per Mpc/h, UnitLength_in_cm).
LENGTH_UNITS = {"kpc/h": (1000.0, 3.085678e21), "Mpc/h": (1.0, 3.085678e24)}
_UNIT_MASS_G = 1.989e43  # 1e10 Msun/h
_UNIT_VELOCITY_CM_S = 1e5  # km/s
_MASS_UNIT_MSUN_H = 1e10
_FORMAT = "emu_backend/gadget-hdf5"
_FORMAT_VERSION = 1
_REQUIRED_HEADER = ("BoxSize", "Time", "NumPart_ThisFile", "NumPart_Total", "NumFilesPerSnapshot", "MassTable")
_MULTI_RE = re.compile(r"^(?P<base>.+)\.(?P<index>\d+)\.hdf5$")
#: What h5py raises for damaged files (RuntimeError for corrupt B-trees, OSError for unreadable blocks).
_H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError)


def _h5py():

    return h5py


def _check_length_unit(length_unit: str) -> str:
    if length_unit not in LENGTH_UNITS:
        raise InputError(f"length_unit must be one of {sorted(LENGTH_UNITS)}, got {length_unit!r}")
    return length_unit


def _base_of(path: Path) -> Path:
    return path.with_name(path.name[: -len(".hdf5")]) if path.name.endswith(".hdf5") else path


# -- writing ------------------------------------------------------------------------------------
def write_gadget_hdf5(
    snapshot: Snapshot,
    path: str | Path,
    *,
    n_files: int = 1,
    length_unit: str = "kpc/h",
    overwrite: bool = False,
) -> list[Path]:
    """Write a snapshot as Gadget-style HDF5, one file or ``n_files`` files split in id order.

    Parameters
    ----------
    snapshot : Snapshot
        Particles to write (positions Mpc/h, velocities km/s).
    path : str or Path
        ``snap_005.hdf5`` or ``snap_005``; with ``n_files > 1`` the files are
        ``snap_005.0.hdf5 ... snap_005.{n_files-1}.hdf5``.
    n_files : int
        Number of files (>= 1, at most the number of particles).
    length_unit : {"kpc/h", "Mpc/h"}
        Unit of Coordinates and BoxSize in the file; "kpc/h" is Gadget's (and Quijote's) default.
    overwrite : bool
        Replace existing files; otherwise any existing target file is refused before writing.

    Returns
    -------
    list of Path
        The files written, in order.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    >>> dis = np.zeros((3, 2, 2, 2), np.float32)
    >>> snap = Snapshot.from_displacement(dis, dis, 1.0, 10.0, QUIJOTE_FIDUCIAL)
    >>> files = write_gadget_hdf5(snap, os.path.join(tempfile.mkdtemp(), "snap_000"), n_files=2)
    >>> [f.name for f in files]
    ['snap_000.0.hdf5', 'snap_000.1.hdf5']
    >>> read_gadget_hdf5(files[0]).positions[-1].tolist()
    [5.0, 5.0, 5.0]
    """
    if not isinstance(snapshot, Snapshot):
        raise InputError(f"snapshot must be a Snapshot, got {type(snapshot).__name__}")
    length_unit = _check_length_unit(length_unit)
    n_part = snapshot.n_particles
    if isinstance(n_files, bool) or not isinstance(n_files, (int, np.integer)) or not 1 <= n_files <= max(n_part, 1):
        raise InputError(f"n_files must be an integer in [1, {n_part}] (the number of particles), got {n_files!r}")
    n_files = int(n_files)
    base = _base_of(Path(path))
    if n_files == 1:
        paths = [base.with_name(base.name + ".hdf5")]
    else:
        paths = [base.with_name(f"{base.name}.{i}.hdf5") for i in range(n_files)]
    for p in paths:  # refuse before writing anything
        check_overwrite(p, overwrite)

    factor, unit_cm = LENGTH_UNITS[length_unit]
    box_file = snapshot.box_size * factor
    sqrt_a = math.sqrt(snapshot.a)
    order = np.argsort(snapshot.ids, kind="stable")
    chunks = np.array_split(order, n_files)
    cosmo = snapshot.cosmology
    meta_json = meta_to_json(snapshot.meta)
    cosmo_json = json.dumps(cosmo.to_dict(), sort_keys=True)

    total = np.zeros(6, np.uint64)
    total[1] = n_part
    for index, (p, sel) in enumerate(zip(paths, chunks)):
        if len(sel) >= 2**32:
            raise InputError(f"{len(sel)} particles per file exceed Gadget's 32-bit count; use more files (n_files)")
        pos = (snapshot.positions[sel].astype(np.float64) * factor).astype(np.float32)
        pos[pos.astype(np.float64) >= box_file] = 0.0  # rounded up onto BoxSize: same point as 0
        vel = (snapshot.velocities[sel].astype(np.float64) / sqrt_a).astype(np.float32)
        this_file = np.zeros(6, np.uint32)
        this_file[1] = len(sel)
        mass_table = np.zeros(6, np.float64)
        mass_table[1] = snapshot.particle_mass / _MASS_UNIT_MSUN_H
        with atomic_path(p, overwrite=overwrite) as tmp:
            with _h5py().File(tmp, "w") as f:
                h = f.create_group("Header").attrs
                h["BoxSize"] = np.float64(box_file)
                h["Time"] = np.float64(snapshot.a)
                h["Redshift"] = np.float64(snapshot.z)
                h["NumPart_ThisFile"] = this_file
                h["NumPart_Total"] = (total & np.uint64(0xFFFFFFFF)).astype(np.uint32)
                h["NumPart_Total_HighWord"] = (total >> np.uint64(32)).astype(np.uint32)
                h["MassTable"] = mass_table
                h["NumFilesPerSnapshot"] = np.int32(n_files)
                h["Omega0"] = np.float64(cosmo.omega_m)
                h["OmegaLambda"] = np.float64(cosmo.omega_l)
                h["HubbleParam"] = np.float64(cosmo.h)
                h["LengthUnit"] = length_unit
                units = {
                    "UnitLength_in_cm": np.float64(unit_cm),
                    "UnitMass_in_g": np.float64(_UNIT_MASS_G),
                    "UnitVelocity_in_cm_per_s": np.float64(_UNIT_VELOCITY_CM_S),
                }
                par = f.create_group("Parameters").attrs
                for key, value in units.items():
                    par[key] = value
                par["BoxSize"] = np.float64(box_file)
                par["Omega0"] = np.float64(cosmo.omega_m)
                par["OmegaLambda"] = np.float64(cosmo.omega_l)
                par["OmegaBaryon"] = np.float64(cosmo.omega_b)
                par["HubbleParam"] = np.float64(cosmo.h)
                u = f.create_group("Units").attrs
                for key, value in units.items():
                    u[key] = value
                prov = f.create_group("Provenance").attrs
                prov["format"] = _FORMAT
                prov["format_version"] = np.int32(_FORMAT_VERSION)
                prov["package_version"] = __version__
                prov["grid"] = np.int64(snapshot.grid)
                prov["file_index"] = np.int32(index)
                prov["cosmology_json"] = cosmo_json
                prov["meta_json"] = meta_json
                g = f.create_group("PartType1")
                g.create_dataset("Coordinates", data=pos)
                g.create_dataset("Velocities", data=vel)
                g.create_dataset("ParticleIDs", data=snapshot.ids[sel].astype(np.uint64))
        logger.debug("wrote %s (%d particles, file %d of %d)", p, len(sel), index + 1, n_files)
    logger.info("wrote Gadget HDF5 snapshot %s (%d particles, %d file(s), %s)", base, n_part, n_files, length_unit)
    return paths


# -- reading ------------------------------------------------------------------------------------
def gadget_file_paths(path_or_prefix: str | Path) -> list[Path]:
    """Resolve a snapshot name to its file(s).

    Accepts an existing single file, any file ``X.{i}.hdf5`` of a multi-file set, a prefix ``X``
    (or ``X.hdf5``) with ``X.hdf5`` or ``X.0.hdf5`` on disk, or a folder holding one multi-file set.

    Returns
    -------
    list of Path
        All files of the snapshot, in file order.
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
        base = _base_of(path)
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
    match = _MULTI_RE.match(path.name)
    if n_files == 1:
        return [path]
    if match is None:
        raise FileFormatError(
            f"{str(path)!r}: NumFilesPerSnapshot = {n_files} but the name is not of the form X.<i>.hdf5"
        )
    base = path.with_name(match["base"])
    paths, missing = [], []
    for i in range(n_files):  # stops early: a damaged header may declare billions of files
        p = base.with_name(f"{base.name}.{i}.hdf5")
        (paths if p.is_file() else missing).append(p)
        if len(missing) == 10:
            break
    if missing:
        more = " ..." if len(paths) + len(missing) < n_files else ""
        raise FileFormatError(
            f"multi-file snapshot {str(base)!r} declares {n_files} files; missing: {[str(p) for p in missing]}{more}"
        )
    return paths


def _open(path: Path):
    try:
        return _h5py().File(path, "r")
    except _H5_ERRORS as exc:
        raise FileFormatError(
            f"{str(path)!r}: cannot be opened as HDF5 (missing, truncated or corrupt): {exc}"
        ) from exc


def _read_attrs(path: Path) -> dict[str, dict]:
    """Attributes of the Header, Parameters and Provenance groups (the latter two may be empty)."""
    with _open(path) as f:
        try:  # h5py raises RuntimeError as well as OSError/KeyError/ValueError for corrupt metadata
            if "Header" not in f:
                raise FileFormatError(f"{str(path)!r}: no 'Header' group; not a Gadget HDF5 snapshot")
            groups = {name: dict(f[name].attrs) if name in f else {} for name in ("Header", "Parameters", "Provenance")}
        except FileFormatError:
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
    for key in ("NumPart_ThisFile", "NumPart_Total", "MassTable"):
        if np.shape(header[key]) != (6,):
            raise FileFormatError(f"{str(path)!r}: Header/{key} must have 6 entries, got shape {np.shape(header[key])}")
    return groups


def _total(header: dict) -> list[int]:
    """Total particle counts per type, low word plus high word << 32."""
    total = np.asarray(header["NumPart_Total"]).astype(np.uint64)
    high = np.asarray(header.get("NumPart_Total_HighWord", np.zeros(6))).astype(np.uint64)
    return [int(t) + (int(hw) << 32) for t, hw in zip(total, high)]


def _read_one(path: Path, header: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_this = int(np.asarray(header["NumPart_ThisFile"])[1])
    with _open(path) as f:
        try:
            out = []
            for name, shape in (("Coordinates", (n_this, 3)), ("Velocities", (n_this, 3)), ("ParticleIDs", (n_this,))):
                key = f"PartType1/{name}"
                if key not in f:
                    if n_this == 0:
                        out.append(np.zeros(shape, np.int64 if name == "ParticleIDs" else np.float32))
                        continue
                    raise FileFormatError(f"{str(path)!r}: dataset {key!r} is missing")
                ds = f[key]
                if not isinstance(ds, _h5py().Dataset):
                    raise FileFormatError(f"{str(path)!r}: {key!r} is a {type(ds).__name__}, expected a dataset")
                if ds.shape != shape:
                    raise FileFormatError(
                        f"{str(path)!r}: dataset {key!r} has shape {ds.shape}, expected {shape} "
                        f"(NumPart_ThisFile[1] = {n_this})"
                    )
                out.append(ds[...])
        except FileFormatError:
            raise
        except _H5_ERRORS as exc:
            raise FileFormatError(f"{str(path)!r}: cannot read particle data (truncated or corrupt?): {exc}") from exc
    return tuple(out)


def _file_length_unit(path: Path, f_header: dict, parameters: dict) -> str | None:
    if "LengthUnit" in f_header:
        unit = f_header["LengthUnit"]
        unit = unit.decode() if isinstance(unit, bytes) else str(unit)
        if unit not in LENGTH_UNITS:
            raise FileFormatError(f"{str(path)!r}: Header/LengthUnit = {unit!r} is not one of {sorted(LENGTH_UNITS)}")
        return unit
    if "UnitLength_in_cm" in parameters:
        cm = float(parameters["UnitLength_in_cm"])
        for unit, (_, unit_cm) in LENGTH_UNITS.items():
            if abs(cm / unit_cm - 1.0) < 1e-3:
                return unit
        raise FileFormatError(f"{str(path)!r}: UnitLength_in_cm = {cm!r} is neither kpc/h nor Mpc/h")
    return None


def read_gadget_hdf5(
    path_or_prefix: str | Path,
    *,
    length_unit: str | None = None,
    cosmology: Cosmology | None = None,
) -> Snapshot:
    """Read a single- or multi-file Gadget HDF5 snapshot (type-1 particles) into a Snapshot.

    Parameters
    ----------
    path_or_prefix : str or Path
        See :func:`gadget_file_paths`.
    length_unit : {"kpc/h", "Mpc/h"}, optional
        Overrides the file's unit; by default taken from Header/LengthUnit, else from
        UnitLength_in_cm, else Gadget's default "kpc/h".
    cosmology : Cosmology, optional
        Overrides the file's cosmology; by default the recorded one, else Omega0 and HubbleParam
        of the header with the other parameters at their defaults.

    Returns
    -------
    Snapshot
        Particles sorted by id; positions [Mpc/h], velocities [km/s] (``u sqrt(a)``).

    Raises
    ------
    FileFormatError
        Missing, truncated or corrupt file, missing header attribute, wrong dataset shape,
        counts that disagree between files and datasets, ids that are not a Lagrangian grid.
    """
    paths = gadget_file_paths(path_or_prefix)
    attrs = [_read_attrs(p) for p in paths]
    headers = [a["Header"] for a in attrs]
    first = headers[0]
    total = _total(first)
    if any(t for i, t in enumerate(total) if i != 1):
        raise FileFormatError(
            f"{str(paths[0])!r}: NumPart_Total = {total}; only type-1 (dark matter) particles are supported"
        )
    for p, h in zip(paths, headers):
        for key in ("BoxSize", "Time", "NumFilesPerSnapshot"):
            if not np.array_equal(h[key], first[key]):
                raise FileFormatError(
                    f"{str(p)!r}: Header/{key} = {h[key]!r} differs from {first[key]!r} in {str(paths[0])!r}"
                )
        if _total(h) != total:
            raise FileFormatError(f"{str(p)!r}: NumPart_Total {_total(h)} differs from {total} in {str(paths[0])!r}")
    n_part = total[1]
    n_sum = sum(int(np.asarray(h["NumPart_ThisFile"])[1]) for h in headers)
    if n_sum != n_part:
        raise FileFormatError(
            f"snapshot {str(paths[0])!r}: NumPart_Total[1] = {n_part} but NumPart_ThisFile[1] sums to {n_sum} "
            f"over {len(paths)} file(s)"
        )

    provenance = attrs[0]["Provenance"]
    file_unit = _file_length_unit(paths[0], first, attrs[0]["Parameters"])
    if length_unit is None:
        if file_unit is None:
            logger.info("%s records no length unit; assuming Gadget's default kpc/h", paths[0])
        length_unit = file_unit or "kpc/h"
    else:
        _check_length_unit(length_unit)
        if file_unit is not None and file_unit != length_unit:
            logger.warning("%s records length unit %s; reading it as %s as requested", paths[0], file_unit, length_unit)
    factor = LENGTH_UNITS[length_unit][0]

    a = float(first["Time"])
    box_size = float(first["BoxSize"]) / factor
    if not (a > 0 and box_size > 0):
        raise FileFormatError(f"{str(paths[0])!r}: Time = {a!r} and BoxSize = {first['BoxSize']!r} must be > 0")
    grid = round(n_part ** (1.0 / 3.0)) if n_part else 0
    if grid**3 != n_part or n_part == 0:
        raise FileFormatError(f"snapshot {str(paths[0])!r}: {n_part} particles is not a cube n^3 of a Lagrangian grid")

    meta: dict = {}
    try:
        if cosmology is None and "cosmology_json" in provenance:
            cosmology = Cosmology.from_dict(json.loads(provenance["cosmology_json"]))
        if "meta_json" in provenance:
            meta = meta_from_json(provenance["meta_json"])
    except (ValueError, TypeError) as exc:
        raise FileFormatError(f"{str(paths[0])!r}: unreadable Provenance attributes: {exc}") from exc
    if cosmology is None:
        if "Omega0" not in first or "HubbleParam" not in first:
            raise FileFormatError(
                f"{str(paths[0])!r}: no recorded cosmology and no Header Omega0/HubbleParam; pass cosmology="
            )
        cosmology = Cosmology(omega_m=float(first["Omega0"]), h=float(first["HubbleParam"]), name="gadget_header")
        logger.warning(
            "%s records only Omega0 and HubbleParam; omega_b, n_s, sigma8 take default values", paths[0]
        )

    parts = [_read_one(p, h) for p, h in zip(paths, headers)]
    pos = np.concatenate([q[0] for q in parts]).astype(np.float64)
    vel = np.concatenate([q[1] for q in parts]).astype(np.float64)
    ids = np.concatenate([q[2] for q in parts])
    if ids.dtype.kind not in "iu":
        raise FileFormatError(f"{str(paths[0])!r}: ParticleIDs must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if "format" not in provenance and ids.size and ids.min() == 1 and ids.max() == n_part:
        logger.info("%s: particle ids run 1..N; shifting to the 0-based Lagrangian index", paths[0])
        ids = ids - 1
    if ids.size and (ids.min() < 0 or ids.max() >= n_part or np.bincount(ids, minlength=n_part).max() != 1):
        raise FileFormatError(f"snapshot {str(paths[0])!r}: ParticleIDs are not a permutation of 0..{n_part - 1}")
    order = np.argsort(ids, kind="stable")
    try:
        return Snapshot(
            positions=(pos[order] / factor).astype(np.float32),
            velocities=(vel[order] * math.sqrt(a)).astype(np.float32),
            ids=ids[order],
            a=a,
            box_size=box_size,
            grid=grid,
            cosmology=cosmology,
            meta=meta,
        )
    except InputError as exc:
        raise FileFormatError(f"snapshot {str(paths[0])!r} is not a valid snapshot: {exc}") from exc
