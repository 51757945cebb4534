"""Gadget-style HDF5 snapshots (single file or ``snap_XXX.{i}.hdf5`` multi-file sets) of a Snapshot.

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
Reading goes through the one Gadget-HDF5 reader, :mod:`emu_backend.io.gadget_hdf5`, and the
Lagrangian ordering of :mod:`emu_backend.io.gadget_particles`; units are converted with
:mod:`emu_backend.io.gadget_units`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np

from .._version import __version__
from ..checks import check_int
from ..cosmology.params import Cosmology
from ..datatypes.meta import meta_from_json, meta_to_json
from ..datatypes.snapshot import Snapshot
from ..errors import FileFormatError, InputError
from ._file_sets import without_suffix
from .atomic import atomic_path, check_overwrite
from .gadget_hdf5 import read_gadget_hdf5_particles
from .gadget_particles import header_cosmology, particles_to_snapshot
from .gadget_units import (
    LENGTH_UNITS,
    MASS_UNIT_MSUN_H,
    UNIT_MASS_G,
    UNIT_VELOCITY_CM_S,
    length_factor,
    positions_to_file,
    velocities_to_file,
)

__all__ = ["write_gadget_hdf5", "read_gadget_hdf5"]

logger = logging.getLogger(__name__)

_FORMAT = "emu_backend/gadget-hdf5"
_FORMAT_VERSION = 1


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
    factor = length_factor(length_unit)
    n_part = snapshot.n_particles
    n_files = check_int(n_files, "n_files", 1, max(n_part, 1),
                        what=f"an integer in [1, {n_part}] (the number of particles)")
    base = without_suffix(Path(path), ".hdf5")
    if n_files == 1:
        paths = [base.with_name(base.name + ".hdf5")]
    else:
        paths = [base.with_name(f"{base.name}.{i}.hdf5") for i in range(n_files)]
    for p in paths:  # refuse before writing anything
        check_overwrite(p, overwrite)

    unit_cm = LENGTH_UNITS[length_unit][1]
    box_file = snapshot.box_size * factor
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
        pos = positions_to_file(snapshot.positions[sel], factor)
        pos[pos.astype(np.float64) >= box_file] = 0.0  # rounded up onto BoxSize: same point as 0
        vel = velocities_to_file(snapshot.velocities[sel], snapshot.a)
        this_file = np.zeros(6, np.uint32)
        this_file[1] = len(sel)
        mass_table = np.zeros(6, np.float64)
        mass_table[1] = snapshot.particle_mass / MASS_UNIT_MSUN_H
        with atomic_path(p, overwrite=overwrite) as tmp:
            with open(tmp, "w+b") as fh, h5py.File(fh, "w") as f:  # a full disk: OSError, not a crash in h5py
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
                    "UnitMass_in_g": np.float64(UNIT_MASS_G),
                    "UnitVelocity_in_cm_per_s": np.float64(UNIT_VELOCITY_CM_S),
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
def read_gadget_hdf5(
    path_or_prefix: str | Path,
    *,
    length_unit: str | None = None,
    cosmology: Cosmology | None = None,
) -> Snapshot:
    """Read a single- or multi-file Gadget HDF5 snapshot (type-1 particles) into a Snapshot.

    The particles come from :func:`~emu_backend.io.gadget_hdf5.read_gadget_hdf5_particles`; this adds
    the cosmology and metadata this package records and the Lagrangian order.

    Parameters
    ----------
    path_or_prefix : str or Path
        See :func:`~emu_backend.io.gadget_hdf5.gadget_file_paths`.
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
    particles = read_gadget_hdf5_particles(path_or_prefix, length_unit=length_unit, lagrangian=True)
    provenance = particles.provenance
    meta: dict = {}
    try:
        if cosmology is None and "cosmology_json" in provenance:
            cosmology = Cosmology.from_dict(json.loads(provenance["cosmology_json"]))
        if "meta_json" in provenance:
            meta = meta_from_json(provenance["meta_json"])
    except (ValueError, TypeError) as exc:
        raise FileFormatError(f"{particles.files[0]!r}: unreadable Provenance attributes: {exc}") from exc
    if cosmology is None:
        cosmology = header_cosmology(particles)
        logger.warning(
            "%s records only Omega0 and HubbleParam; omega_b, n_s, sigma8 take default values", particles.files[0]
        )
    # files of this package hold the 0-based Lagrangian index; others are detected (Gadget/2LPTic: 1-based)
    id_base = 0 if "format" in provenance else None
    return particles_to_snapshot(particles, cosmology, id_base=id_base, meta=meta, record_files=False)
