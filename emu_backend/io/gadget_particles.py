"""Type-1 Gadget particles as read from files, and their placement on the Lagrangian grid.

:class:`GadgetParticles` is what every Gadget reader returns (HDF5: :mod:`emu_backend.io.gadget_hdf5`;
binary format 1/2: :mod:`emu_backend.io.gadget1`): the particles in file order, already in internal
units, with the header values. :func:`particles_to_snapshot` turns them into a :class:`Snapshot` in
Lagrangian order through a verified ID map (:mod:`emu_backend.io.lagrangian_map`, the one place where
IDs become grid indices): the map of the simulation's initial conditions
(:func:`lagrangian_map_from_ics`), the declaration of a file written by this package, or the particles'
own positions where they are early initial conditions. Particles that none of these can place are refused.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from ..cosmology.params import Cosmology
from ..datatypes.snapshot import Snapshot
from ..errors import FileFormatError, InputError
from .lagrangian_map import (
    MAX_OFFSET_CELLS,
    LagrangianMap,
    lagrangian_grid_size,
    lagrangian_index,
    map_declared_by_file,
    map_from_ic_positions,
)

__all__ = ["GadgetParticles", "header_cosmology", "lagrangian_map_from_ics", "particles_to_snapshot"]

logger = logging.getLogger(__name__)


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
        Header cosmology (Omega0, OmegaLambda, HubbleParam); NaN where the file records none.
    particle_mass : float
        Mass of one particle [Msun/h].
    files : tuple of str
        The files read, in order.
    provenance : dict
        Attributes of the ``/Provenance`` group of HDF5 files written by this package, else empty.
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
    provenance: dict = field(default_factory=dict)

    @property
    def z(self) -> float:
        """Redshift ``1/a - 1``."""
        return 1.0 / self.a - 1.0

    @property
    def n_particles(self) -> int:
        """Number of particles N."""
        return int(self.ids.shape[0])


def _where(particles: GadgetParticles) -> str:
    if not particles.files:
        return "particles"
    more = f" (+ {len(particles.files) - 1} more files)" if len(particles.files) > 1 else ""
    return f"{particles.files[0]!r}{more}"


def header_cosmology(particles: GadgetParticles) -> Cosmology:
    """A flat cosmology from a file header: Omega0 and HubbleParam, the other parameters Quijote's fiducial.

    Raises
    ------
    FileFormatError
        Omega0 outside (0, 1) or HubbleParam outside (0.2, 2), missing ones included.
    """
    om, h = particles.omega_m, particles.h
    where = particles.files[0] if particles.files else "particles"
    if not (0 < om < 1 and 0.2 < h < 2):
        raise FileFormatError(f"{where!r}: header Omega0 = {om!r}, HubbleParam = {h!r} are not a "
                              f"usable cosmology; pass the cosmology explicitly")
    if math.isfinite(particles.omega_l) and abs(om + particles.omega_l - 1.0) > 1e-3:
        logger.warning("%s: Omega0 + OmegaLambda = %g is not flat; using a flat cosmology with Omega_m = %g",
                       where, om + particles.omega_l, om)
    return Cosmology(omega_m=om, omega_b=min(0.049, om), h=h, name="gadget_header")


def lagrangian_map_from_ics(particles: GadgetParticles, *, omega_m: float | None = None,
                            max_offset_cells: float = MAX_OFFSET_CELLS) -> LagrangianMap:
    """The verified ID -> Lagrangian grid map of a simulation, from its initial conditions.

    See :func:`~emu_backend.io.lagrangian_map.map_from_ic_positions`: each particle goes to the grid point
    nearest to its position (or to ``x - v / (a H f)``), and the assignment must be a permutation of the
    grid with every particle within ``max_offset_cells`` of its point and a continuous displacement field.

    Parameters
    ----------
    particles : GadgetParticles
        The ``n^3`` IC particles (e.g. from :func:`emu_backend.io.quijote.read_particles`).
    omega_m : float, optional
        For the velocity estimate; default the header's Omega0.
    max_offset_cells : float
        Largest per-axis distance from the grid point [cells], in (0, 0.5].

    Returns
    -------
    LagrangianMap

    Raises
    ------
    FileFormatError
        The positions do not identify the grid points (not early ICs, a glass, IDs that repeat); the
        message names the files and what failed.
    """
    om = particles.omega_m if omega_m is None else omega_m
    return map_from_ic_positions(particles.positions, particles.velocities, particles.ids, a=particles.a,
                                 box_size=particles.box_size, omega_m=om if math.isfinite(om) else None,
                                 where=_where(particles), max_offset_cells=max_offset_cells)


def particles_to_snapshot(particles: GadgetParticles, cosmology: Cosmology | None = None, *,
                          lagrangian_map: LagrangianMap | None = None, meta: dict | None = None,
                          record_files: bool = True, id_base: int | None = None) -> Snapshot:
    """Place Gadget particles on their Lagrangian grid points and return a :class:`Snapshot`.

    The grid point of each ID comes from a verified map: ``lagrangian_map`` (the simulation's, from its
    initial conditions: :func:`lagrangian_map_from_ics`); else, for a file written by this package, its
    declared convention (ParticleIDs = 0-based grid index); else the particles' own positions, which
    identify the grid only in early initial conditions. A late snapshot of another code without a map
    is refused, never reordered on the assumption that its IDs are grid indices.

    Parameters
    ----------
    particles : GadgetParticles
        ``n^3`` particles.
    cosmology : Cosmology, optional
        Default: :func:`header_cosmology` of the file (Omega0, HubbleParam).
    lagrangian_map : LagrangianMap, optional
        The simulation's ID map.
    meta : dict, optional
        Provenance of the snapshot.
    record_files : bool
        Add ``source``, the ``files`` read and the ``lagrangian_map`` proof to ``meta``.
    id_base : {0}, optional
        Accepted only for files written by this package (whose IDs start at 0), for their reader.

    Returns
    -------
    Snapshot
        Particles in Lagrangian (grid) order, positions [Mpc/h] wrapped into the box.

    Raises
    ------
    FileFormatError
        Not ``n^3`` particles, non-finite values, IDs that are not the map's, particles that cannot be
        placed (no map, not early ICs), header values that make no snapshot.
    InputError
        ``id_base`` for a file not written by this package, a bad ``cosmology`` or ``lagrangian_map``.
    """
    where = _where(particles)
    n_part = particles.n_particles
    n = lagrangian_grid_size(n_part, where)
    for key in ("positions", "velocities"):
        if not np.all(np.isfinite(getattr(particles, key))):
            raise FileFormatError(f"{where}: {key} contain NaN or inf (corrupt file?)")
    cosmology = header_cosmology(particles) if cosmology is None else cosmology
    if not isinstance(cosmology, Cosmology):
        raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
    declared = map_declared_by_file(particles.provenance, n_part, where)
    if id_base is not None and (declared is None or isinstance(id_base, bool) or id_base != 0):
        raise InputError(f"id_base = {id_base!r} is accepted only as 0 for files written by this package; the IDs "
                         f"of {where} are placed by the ID map of the simulation's initial conditions")
    if lagrangian_map is not None and not isinstance(lagrangian_map, LagrangianMap):
        raise InputError(f"lagrangian_map must be a LagrangianMap, got {type(lagrangian_map).__name__}")
    lmap = lagrangian_map if lagrangian_map is not None else declared
    if lmap is None:
        try:
            lmap = lagrangian_map_from_ics(particles, omega_m=cosmology.omega_m)
        except FileFormatError as exc:
            raise FileFormatError(
                f"{exc}; no ID map of the simulation's initial conditions was given, and positions identify grid "
                f"points only in early initial conditions (these are at a = {particles.a:.4g}): read a snapshot "
                f"with the map of its initial conditions (QuijoteSimulation.read_snapshot, or "
                f"particles_to_snapshot(..., lagrangian_map=lagrangian_map_from_ics(ic_particles)))") from exc
    index = lagrangian_index(particles.ids, lmap, where)
    order = np.empty(n_part, np.int64)
    order[index] = np.arange(n_part)
    info = {}
    if record_files:
        info = {"source": "gadget_files", "files": list(particles.files), "lagrangian_map": lmap.proof}
    info.update(meta or {})
    try:
        return Snapshot(particles.positions[order], particles.velocities[order], np.arange(n_part), particles.a,
                        particles.box_size, n, cosmology, meta=info)
    except InputError as exc:
        raise FileFormatError(f"{where} is not a valid snapshot: {exc}") from exc
