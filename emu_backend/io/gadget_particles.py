"""Type-1 Gadget particles as read from files, and their placement on the Lagrangian grid.

:class:`GadgetParticles` is what every Gadget reader returns (HDF5: :mod:`emu_backend.io.gadget_hdf5`;
binary format 1/2: :mod:`emu_backend.io.gadget1`): the particles in file order, already in internal
units, with the header values. :func:`particles_to_snapshot` turns them into a :class:`Snapshot` in
Lagrangian order; the particle-ID convention that maps an ID to its Lagrangian grid point lives in
:func:`lagrangian_index` and nowhere else.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from ..cosmology.params import Cosmology
from ..datatypes.snapshot import Snapshot
from ..errors import FileFormatError, InputError

__all__ = ["GadgetParticles", "lagrangian_grid_size", "lagrangian_index", "header_cosmology",
           "particles_to_snapshot"]

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
    return f"snapshot {particles.files[0]!r}" if particles.files else "particles"


def lagrangian_grid_size(n_part: int, where: str) -> int:
    """The side ``n`` of the Lagrangian grid of ``n_part = n^3`` particles.

    Raises
    ------
    FileFormatError
        ``n_part`` is not a positive cube; the message starts with ``where``.
    """
    n = round(n_part ** (1.0 / 3.0)) if n_part > 0 else 0
    if n == 0 or n**3 != n_part:
        raise FileFormatError(f"{where}: {n_part} particles is not a cube n^3 of a Lagrangian grid")
    return n


def lagrangian_index(ids: np.ndarray, n_part: int, where: str, *, id_base: int | None = None) -> np.ndarray:
    """The 0-based Lagrangian (C-order) grid index of each particle from its ID.

    The convention (2LPTic, Quijote, and this package's writer): ID ``id_base + i n^2 + j n + k`` is
    Lagrangian grid point ``(i, j, k)``.

    Parameters
    ----------
    ids : ndarray, shape (N,), integer
        Particle IDs as stored.
    n_part : int
        N, the number of grid points.
    where : str
        The file or snapshot, for error messages.
    id_base : {0, 1}, optional
        ID of grid point (0, 0, 0); default detected from the ID range (Quijote/2LPTic: 1).

    Returns
    -------
    ndarray, shape (N,), int64
        A permutation of ``0 .. N-1``.

    Raises
    ------
    FileFormatError
        IDs outside both ranges, or not a permutation.
    InputError
        ``id_base`` other than 0 or 1.
    """
    ids = np.asarray(ids).astype(np.int64)
    lo, hi = (int(ids.min()), int(ids.max())) if ids.size else (0, -1)
    if id_base is None:
        if lo == 1 and hi == n_part:
            id_base = 1
            logger.info("%s: particle IDs run 1..N; shifting to the 0-based Lagrangian index", where)
        elif lo == 0 and hi == n_part - 1:
            id_base = 0
        else:
            raise FileFormatError(f"{where}: particle IDs span [{lo}, {hi}]; expected 1..{n_part} (Quijote) or "
                                  f"0..{n_part - 1} for an {round(n_part ** (1.0 / 3.0))}^3 Lagrangian grid")
    elif isinstance(id_base, bool) or id_base not in (0, 1):
        raise InputError(f"id_base must be 0 or 1, got {id_base!r}")
    index = ids - id_base
    if lo - id_base < 0 or hi - id_base >= n_part or np.bincount(index, minlength=n_part).max() != 1:
        raise FileFormatError(f"{where}: particle IDs are not a permutation of {id_base}..{n_part - 1 + id_base}")
    return index


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


def particles_to_snapshot(particles: GadgetParticles, cosmology: Cosmology | None = None, *,
                          id_base: int | None = None, meta: dict | None = None,
                          record_files: bool = True) -> Snapshot:
    """Reorder Gadget particles by ID into the Lagrangian grid and return a :class:`Snapshot`.

    Parameters
    ----------
    particles : GadgetParticles
        ``n^3`` particles.
    cosmology : Cosmology, optional
        Default: :func:`header_cosmology` of the file (Omega0, HubbleParam).
    id_base : {0, 1}, optional
        ID of Lagrangian point (0, 0, 0); see :func:`lagrangian_index`. Default: detected from the IDs.
    meta : dict, optional
        Provenance of the snapshot.
    record_files : bool
        Add ``source`` and the ``files`` read to ``meta``.

    Returns
    -------
    Snapshot
        Particles in Lagrangian (id) order, positions [Mpc/h] wrapped into the box.

    Raises
    ------
    FileFormatError
        Not ``n^3`` particles, IDs that are not a grid, non-finite values, header values that make no snapshot.
    """
    where = _where(particles)
    n_part = particles.n_particles
    n = lagrangian_grid_size(n_part, where)
    if id_base is not None and (isinstance(id_base, bool) or id_base not in (0, 1)):
        raise InputError(f"id_base must be 0 or 1, got {id_base!r}")
    for key in ("positions", "velocities"):
        if not np.all(np.isfinite(getattr(particles, key))):
            raise FileFormatError(f"{where}: {key} contain NaN or inf (corrupt file?)")
    index = lagrangian_index(particles.ids, n_part, where, id_base=id_base)
    order = np.argsort(index, kind="stable")
    cosmology = header_cosmology(particles) if cosmology is None else cosmology
    if not isinstance(cosmology, Cosmology):
        raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
    info = {"source": "gadget_files", "files": list(particles.files)} if record_files else {}
    info.update(meta or {})
    try:
        return Snapshot(particles.positions[order], particles.velocities[order], index[order], particles.a,
                        particles.box_size, n, cosmology, meta=info)
    except InputError as exc:
        raise FileFormatError(f"{where} is not a valid snapshot: {exc}") from exc
