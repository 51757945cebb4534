"""Quijote particle files: HDF5 snapshots (Blosc-compressed, multi-file), conversion to :class:`Snapshot`, and
the emulator's linear displacement from the z = 127 initial conditions.

HDF5 layout read (Gadget-III as distributed by Quijote; ``snapdir_XXX/snap_XXX.<i>.hdf5``)::

    /Header     attrs Time (= a), Redshift, BoxSize [kpc/h], NumPart_ThisFile[6], NumPart_Total[6],
                NumPart_Total_HighWord[6], MassTable[6] [1e10 Msun/h], NumFilesPerSnapshot,
                Omega0, OmegaLambda, HubbleParam
    /PartType1/Coordinates  (n, 3) float32 [kpc/h]
    /PartType1/Velocities   (n, 3) float32, Gadget's u = v_pec / sqrt(a) [km/s]
    /PartType1/ParticleIDs  (n,) uint32, 1 + i n^2 + j n + k for Lagrangian grid point (i, j, k)

Since February 2023 the Quijote datasets are compressed with the Blosc HDF5 filter (id 32001) from
``hdf5plugin``; it is imported only when a dataset needs a filter h5py does not have.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import h5py
import numpy as np

from ..cosmology.growth import growth_factor
from ..cosmology.params import Cosmology
from ..datatypes.snapshot import Snapshot
from ..errors import FileFormatError, InputError, MissingDependencyError, require
from ..ics.lpt import second_order_displacement, second_order_growth_factor
from .gadget import gadget_file_paths
from .gadget1 import LENGTH_FACTORS, GadgetParticles, read_gadget_binary

__all__ = [
    "read_gadget_hdf5_particles",
    "read_particles",
    "particles_to_snapshot",
    "linear_displacement_from_ics",
    "HDF5_EXTRA",
]

logger = logging.getLogger(__name__)

#: The pyproject extra that installs hdf5plugin.
HDF5_EXTRA = "quijote"
_H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError)
_MASS_UNIT_MSUN_H = 1e10


def _h5py():

    return h5py


def _ensure_filters(ds, path: Path, key: str) -> None:
    """Make sure every HDF5 filter of a dataset is available, importing hdf5plugin if needed."""
    h5py = _h5py()
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _, _, name = plist.get_filter(i)
        if h5py.h5z.filter_avail(code):
            continue
        try:
            require("hdf5plugin", HDF5_EXTRA)
        except MissingDependencyError as exc:
            raise MissingDependencyError(
                f"{str(path)!r}: dataset {key!r} is compressed with HDF5 filter {code} "
                f"({name.decode(errors='replace') if isinstance(name, bytes) else name}); reading it needs "
                f"hdf5plugin: pip install 'emu_backend[{HDF5_EXTRA}]'"
            ) from exc
        if not h5py.h5z.filter_avail(code):
            raise FileFormatError(f"{str(path)!r}: dataset {key!r} needs HDF5 filter {code}, which hdf5plugin "
                                  f"does not provide")


def _attrs(path: Path) -> dict:
    try:
        with _h5py().File(path, "r") as f:
            if "Header" not in f:
                raise FileFormatError(f"{str(path)!r}: no 'Header' group; not a Gadget HDF5 file")
            header = dict(f["Header"].attrs)
            if "Parameters" in f:
                for key, value in f["Parameters"].attrs.items():
                    header.setdefault(key, value)
    except FileFormatError:
        raise
    except _H5_ERRORS as exc:
        raise FileFormatError(f"{str(path)!r}: cannot be read as HDF5 (missing, truncated or corrupt): {exc}") from exc
    missing = [k for k in ("Time", "BoxSize", "NumPart_ThisFile", "NumPart_Total", "MassTable") if k not in header]
    if missing:
        raise FileFormatError(f"{str(path)!r}: Header lacks attribute(s) {missing}")
    return header


def _total(header: dict) -> np.ndarray:
    total = np.asarray(header["NumPart_Total"]).astype(np.int64)
    high = np.asarray(header.get("NumPart_Total_HighWord", np.zeros(6))).astype(np.int64)
    return total + (high << 32)


def _dataset(f, path: Path, key: str, shape: tuple) -> np.ndarray:
    if key not in f:
        raise FileFormatError(f"{str(path)!r}: dataset {key!r} is missing")
    ds = f[key]
    if not isinstance(ds, _h5py().Dataset) or ds.shape != shape:
        raise FileFormatError(f"{str(path)!r}: {key!r} has shape {getattr(ds, 'shape', None)}, expected {shape}")
    _ensure_filters(ds, path, key)
    return ds[...]


def read_gadget_hdf5_particles(path_or_prefix, *, length_unit: str = "kpc/h") -> GadgetParticles:
    """Read the type-1 particles of a single- or multi-file Gadget HDF5 snapshot (e.g. Quijote's).

    Parameters
    ----------
    path_or_prefix : str or Path
        ``.../snapdir_004/snap_004`` (resolves ``snap_004.hdf5`` or ``snap_004.0.hdf5 ...``) or one file.
    length_unit : {"kpc/h", "Mpc/h"}
        Unit of Coordinates and BoxSize in the files (Quijote: kpc/h).

    Returns
    -------
    GadgetParticles
        In file order; positions [Mpc/h], velocities [km/s] (``u sqrt(a)``), IDs as stored.

    Raises
    ------
    FileFormatError
        Missing file of the set, truncated/corrupt file, missing dataset, counts that disagree.
    MissingDependencyError
        A dataset is Blosc-compressed and hdf5plugin is not installed (extra ``quijote``).
    """
    if length_unit not in LENGTH_FACTORS:
        raise InputError(f"length_unit must be one of {sorted(LENGTH_FACTORS)}, got {length_unit!r}")
    factor = LENGTH_FACTORS[length_unit]
    paths = gadget_file_paths(path_or_prefix)
    pos, vel, ids, first = [], [], [], None
    for p in paths:
        h = _attrs(p)
        if first is None:
            first = h
        for key in ("Time", "BoxSize"):
            if not np.array_equal(h[key], first[key]):
                raise FileFormatError(f"{str(p)!r}: Header/{key} = {h[key]!r} differs from {first[key]!r} "
                                      f"in {str(paths[0])!r}")
        this = np.asarray(h["NumPart_ThisFile"]).astype(np.int64)
        others = [t for t in range(6) if t != 1 and (this[t] or _total(h)[t])]
        if others:
            raise FileFormatError(f"{str(p)!r}: particle types {others} present; only type 1 is supported")
        n = int(this[1])
        try:
            with _h5py().File(p, "r") as f:
                if n:
                    pos.append(_dataset(f, p, "PartType1/Coordinates", (n, 3)))
                    vel.append(_dataset(f, p, "PartType1/Velocities", (n, 3)))
                    ids.append(_dataset(f, p, "PartType1/ParticleIDs", (n,)))
        except (FileFormatError, MissingDependencyError):
            raise
        except _H5_ERRORS as exc:
            raise FileFormatError(f"{str(p)!r}: cannot read particle data (truncated or corrupt?): {exc}") from exc
    n_total = int(_total(first)[1])
    n_read = sum(len(i) for i in ids)
    if n_read != n_total or n_read == 0:
        raise FileFormatError(f"snapshot {str(paths[0])!r}: NumPart_Total[1] = {n_total} but the {len(paths)} "
                              f"file(s) hold {n_read} particles (type 1, at least one expected)")
    a = float(np.asarray(first["Time"]).reshape(()))
    box = float(np.asarray(first["BoxSize"]).reshape(())) / factor
    if not (0 < a <= 1.5 and math.isfinite(box) and box > 0):
        raise FileFormatError(f"{str(paths[0])!r}: Time = {a!r} must be in (0, 1.5] and BoxSize > 0")
    cosmo = {k: float(np.asarray(first.get(k, np.nan)).reshape(())) for k in ("Omega0", "OmegaLambda", "HubbleParam")}
    logger.info("read Gadget HDF5 %s: %d particles in %d file(s), a = %.6g", paths[0], n_read, len(paths), a)
    return GadgetParticles(
        positions=(np.concatenate(pos).astype(np.float64) / factor).astype(np.float32),
        velocities=(np.concatenate(vel).astype(np.float64) * math.sqrt(a)).astype(np.float32),
        ids=np.concatenate(ids).astype(np.uint64), a=a, box_size=box,
        omega_m=cosmo["Omega0"], omega_l=cosmo["OmegaLambda"], h=cosmo["HubbleParam"],
        particle_mass=float(np.asarray(first["MassTable"])[1]) * _MASS_UNIT_MSUN_H, files=tuple(str(p) for p in paths),
    )


def _is_hdf5(path: Path) -> bool:
    if path.is_file():
        return path.name.endswith(".hdf5")
    return any(path.with_name(path.name + s).is_file() for s in (".hdf5", ".0.hdf5"))


def read_particles(path_or_prefix, *, length_unit: str = "kpc/h") -> GadgetParticles:
    """Read Gadget particles in HDF5 (``X.hdf5``, ``X.<i>.hdf5``) or binary format 1/2 (``X``, ``X.<i>``).

    HDF5 is chosen when a ``.hdf5`` file of that name exists, binary otherwise.
    """
    path = Path(path_or_prefix)
    if _is_hdf5(path):
        return read_gadget_hdf5_particles(path, length_unit=length_unit)
    return read_gadget_binary(path, length_unit=length_unit)


def header_cosmology(particles: GadgetParticles) -> Cosmology:
    """A flat cosmology from a file header: Omega0 and HubbleParam, the other parameters Quijote's fiducial."""
    om, h = particles.omega_m, particles.h
    if not (0 < om < 1 and 0.2 < h < 2):
        raise FileFormatError(f"{particles.files[0]!r}: header Omega0 = {om!r}, HubbleParam = {h!r} are not a "
                              f"usable cosmology; pass the cosmology explicitly")
    if math.isfinite(particles.omega_l) and abs(om + particles.omega_l - 1.0) > 1e-3:
        logger.warning("%s: Omega0 + OmegaLambda = %g is not flat; using a flat cosmology with Omega_m = %g",
                       particles.files[0], om + particles.omega_l, om)
    return Cosmology(omega_m=om, omega_b=min(0.049, om), h=h, name="gadget_header")


def particles_to_snapshot(particles: GadgetParticles, cosmology: Cosmology | None = None, *,
                          id_base: int | None = None, meta: dict | None = None) -> Snapshot:
    """Reorder Gadget particles by ID into the Lagrangian grid and return a :class:`Snapshot`.

    Parameters
    ----------
    particles : GadgetParticles
        ``n^3`` particles.
    cosmology : Cosmology, optional
        Default: :func:`header_cosmology` of the file (Omega0, HubbleParam).
    id_base : {0, 1}, optional
        ID of Lagrangian point (0, 0, 0); IDs are ``id_base + i n^2 + j n + k`` (Quijote/2LPTic: 1).
        Default: detected from the ID range.
    meta : dict, optional
        Extra provenance (the files read are always recorded).

    Returns
    -------
    Snapshot
        Particles in Lagrangian (id) order, positions [Mpc/h] wrapped into the box.
    """
    n_part = particles.n_particles
    n = round(n_part ** (1.0 / 3.0)) if n_part else 0
    where = particles.files[0] if particles.files else "particles"
    if n == 0 or n**3 != n_part:
        raise FileFormatError(f"{where!r}: {n_part} particles is not a cube n^3 of a Lagrangian grid")
    ids = particles.ids.astype(np.int64)
    lo, hi = int(ids.min()), int(ids.max())
    if id_base is None:
        if lo == 1 and hi == n_part:
            id_base = 1
        elif lo == 0 and hi == n_part - 1:
            id_base = 0
        else:
            raise FileFormatError(f"{where!r}: particle IDs span [{lo}, {hi}]; expected 1..{n_part} (Quijote) or "
                                  f"0..{n_part - 1} for an {n}^3 Lagrangian grid")
    elif id_base not in (0, 1):
        raise InputError(f"id_base must be 0 or 1, got {id_base!r}")
    for key in ("positions", "velocities"):
        if not np.all(np.isfinite(getattr(particles, key))):
            raise FileFormatError(f"{where!r}: {key} contain NaN or inf (corrupt file?)")
    index = ids - id_base
    if lo - id_base < 0 or hi - id_base >= n_part or np.bincount(index, minlength=n_part).max() != 1:
        raise FileFormatError(f"{where!r}: particle IDs are not a permutation of {id_base}..{n_part - 1 + id_base}")
    order = np.argsort(index, kind="stable")
    cosmology = header_cosmology(particles) if cosmology is None else cosmology
    if not isinstance(cosmology, Cosmology):
        raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
    info = {"source": "gadget_files", "files": list(particles.files), **(meta or {})}
    return Snapshot(particles.positions[order], particles.velocities[order], index[order], particles.a,
                    particles.box_size, n, cosmology, meta=info)


def linear_displacement_from_ics(ics: Snapshot, cosmology: Cosmology | None = None, *,
                                 correct_2lpt: bool = True, check_grid: bool = True) -> np.ndarray:
    """The z = 0 linear (Zel'dovich) displacement implied by 2LPT initial conditions.

    ``s = x - q`` (minimum periodic image, particles placed by ID) at the ICs' redshift ``z_i``
    (Quijote: 127) is ``D(z_i) Psi1 + D2(z_i) Psi2[Psi1]``; this returns
    ``Psi1 = s / D(z_i) - (D2 / D)(z_i) Psi2[Psi1]`` (two fixed-point iterations, see
    docs/quijote.md), or ``s / D(z_i)`` with ``correct_2lpt=False`` (ZA ICs).

    Parameters
    ----------
    ics : Snapshot
        The initial conditions (e.g. from :func:`particles_to_snapshot`).
    cosmology : Cosmology, optional
        For the growth factors; default ``ics.cosmology``.
    correct_2lpt : bool
        Remove the second-order displacement (2LPTic's ``D2 = -3/7 D^2 Omega_m(z)^(-1/143)``).
    check_grid : bool
        Refuse displacements of half a grid cell or more, the sign that IDs do not index the
        nearest Lagrangian points (or that these are not early-time ICs).

    Returns
    -------
    ndarray, shape (3, n, n, n), float32
        Psi1 at z = 0 [Mpc/h], channel c along axis c + 1; input of
        :meth:`InitialConditions.from_linear_displacement`.
    """

    if not isinstance(ics, Snapshot):
        raise InputError(f"ics must be a Snapshot, got {type(ics).__name__}")
    cosmo = ics.cosmology if cosmology is None else cosmology
    if not isinstance(cosmo, Cosmology):
        raise InputError(f"cosmology must be a Cosmology, got {type(cosmo).__name__}")
    dis = ics.displacement_field().astype(np.float64)
    cell = ics.box_size / ics.grid
    largest = float(np.abs(dis).max())
    if check_grid and largest >= 0.5 * cell:
        raise InputError(
            f"largest IC displacement {largest:.4g} Mpc/h is >= half a grid cell ({0.5 * cell:.4g} Mpc/h) at "
            f"z = {ics.z:.4g}: the IDs do not index the nearest Lagrangian grid points (or these are not early ICs); "
            f"pass check_grid=False to proceed"
        )
    d1 = float(growth_factor(ics.z, cosmo.omega_m))
    psi = dis / d1
    if correct_2lpt:
        ratio = float(second_order_growth_factor(ics.z, cosmo.omega_m)) / d1
        psi1 = psi
        for _ in range(2):
            psi1 = psi - ratio * second_order_displacement(psi1, ics.box_size)
        psi = psi1
    logger.info("linear displacement from ICs at z = %.4g: D = %.6g, rms %.4g Mpc/h, 2LPT corrected: %s",
                ics.z, d1, float(np.sqrt(np.mean(psi**2))), correct_2lpt)
    return psi.astype(np.float32)
