"""Halos of one output time, indexed by Lagrangian particle ID: the input of the linking step.

A :class:`~emu_backend.datatypes.halos.HaloCatalog` maps each particle *in the order of the snapshot's
arrays* to its halo (``particle_halo``); the order of the arrays may differ between output times (and
between backends), the Lagrangian IDs do not. :class:`OutputHalos` re-indexes the membership by ID,
``halo_of_id[id]``, so that two output times are compared particle by particle. It also keeps the 3-D
velocity dispersion of the members (``vrms``), which the merger-tree files carry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..checks import check_int, check_real
from ..datatypes.halos import HaloCatalog
from ..datatypes.snapshot import Snapshot
from ..errors import FileFormatError, InputError
from ..validation.halos import find_halos_in_snapshot

__all__ = ["OutputHalos", "find_output_halos"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class OutputHalos:
    """FoF halos of one output time with their membership indexed by Lagrangian particle ID.

    Attributes
    ----------
    catalog : HaloCatalog
        The halos (mass-sorted, descending) with ``a`` set; ``catalog.particle_halo`` may be None.
    halo_of_id : ndarray, shape (N_particles,), int64
        Index into ``catalog`` of the halo of the particle with Lagrangian ID ``i``; -1: in no halo.
    vrms : ndarray, shape (N_h,)
        3-D rms velocity of the members about the halo's mean velocity [km/s].
    """

    catalog: HaloCatalog
    halo_of_id: np.ndarray
    vrms: np.ndarray

    def __post_init__(self):
        if not isinstance(self.catalog, HaloCatalog):
            raise InputError(f"catalog must be a HaloCatalog, got {type(self.catalog).__name__}")
        if self.catalog.a is None:
            raise InputError("OutputHalos.catalog must record its scale factor a")
        lab = np.asarray(self.halo_of_id)
        if lab.ndim != 1 or lab.dtype.kind not in "iu":
            raise InputError(f"halo_of_id must be a 1-d integer array, got shape {lab.shape}, dtype {lab.dtype}")
        lab = lab.astype(np.int64, copy=False)
        n_h = self.catalog.n_halos
        if lab.size and (lab.min() < -1 or lab.max() >= n_h):
            raise InputError(f"halo_of_id values must be in [-1, {n_h - 1}] (the catalog's {n_h} halos)")
        if not np.array_equal(np.bincount(lab[lab >= 0], minlength=n_h), self.catalog.n_particles):
            raise InputError("halo_of_id does not give every halo its catalog's n_particles members")
        vrms = np.asarray(self.vrms, dtype=np.float64).reshape(-1)
        if vrms.size != n_h:
            raise InputError(f"vrms must have one entry per halo ({n_h}), got {vrms.size}")
        object.__setattr__(self, "halo_of_id", lab)
        object.__setattr__(self, "vrms", vrms)

    @property
    def z(self) -> float:
        """Redshift of the output."""
        return self.catalog.z

    @classmethod
    def from_catalog(cls, catalog: HaloCatalog, ids, velocities=None) -> "OutputHalos":
        """Re-index ``catalog.particle_halo`` (in the particles' array order) by Lagrangian ID.

        Parameters
        ----------
        catalog : HaloCatalog
            With ``particle_halo`` and ``a``.
        ids : array_like, shape (N,)
            Lagrangian ID of each particle, in the order the halo finder saw them (a permutation of 0..N-1).
        velocities : array_like, shape (N, 3), optional
            Peculiar velocities [km/s] in the same order, for ``vrms`` (zeros without them).
        """
        if catalog.particle_halo is None:
            raise InputError("the catalog has no particle_halo membership (use validation.halos.find_halos)")
        ids = np.asarray(ids)
        member = catalog.particle_halo
        if ids.shape != member.shape or ids.dtype.kind not in "iu":
            raise InputError(f"ids must be integers of shape {member.shape} (one per particle), got {ids.shape}")
        n = member.size
        if n and (ids.min() < 0 or ids.max() >= n or np.bincount(ids, minlength=n).max() != 1):
            raise InputError(f"ids must be a permutation of 0..{n - 1}")
        halo_of_id = np.empty(n, dtype=np.int64)
        halo_of_id[ids] = member
        n_h = catalog.n_halos
        vrms = np.zeros(n_h)
        if velocities is not None:
            vel = np.asarray(velocities, dtype=np.float64)
            if vel.shape != (n, 3):
                raise InputError(f"velocities must have shape ({n}, 3), got {vel.shape}")
            inside = member >= 0
            h = member[inside]
            counts = np.maximum(catalog.n_particles, 1)
            sq = np.bincount(h, weights=np.einsum("ij,ij->i", vel[inside], vel[inside]), minlength=n_h) / counts
            mean_sq = np.einsum("ij,ij->i", catalog.velocity, catalog.velocity)
            vrms = np.sqrt(np.maximum(sq - mean_sq, 0.0))
        return cls(catalog, halo_of_id, vrms)

    # -- storage (the pipeline's resumable per-output files) ---------------------------------------
    def to_arrays(self) -> dict:
        """The arrays of :meth:`from_arrays` (for ``np.savez``)."""
        c = self.catalog
        return {"mass": c.mass, "position": c.position, "velocity": c.velocity, "n_particles": c.n_particles,
                "box_size": c.box_size, "particle_mass": c.particle_mass, "linking_length": c.linking_length,
                "min_particles": c.min_particles, "a": c.a, "halo_of_id": self.halo_of_id.astype(np.int32),
                "vrms": self.vrms}

    @classmethod
    def from_arrays(cls, arrays) -> "OutputHalos":
        """Rebuild from the mapping written by :meth:`to_arrays` (e.g. an open ``np.load``)."""
        try:
            catalog = HaloCatalog(
                mass=arrays["mass"], position=arrays["position"], velocity=arrays["velocity"],
                n_particles=arrays["n_particles"], box_size=float(arrays["box_size"]),
                particle_mass=float(arrays["particle_mass"]), linking_length=float(arrays["linking_length"]),
                min_particles=int(arrays["min_particles"]), a=float(arrays["a"]))
            return cls(catalog, np.asarray(arrays["halo_of_id"]), arrays["vrms"])
        except KeyError as exc:
            raise FileFormatError(f"halo file lacks the array {exc}") from exc


def find_output_halos(snapshot: Snapshot, b: float = 0.2, min_particles: int = 20) -> OutputHalos:
    """FoF halos of a snapshot (:func:`~emu_backend.validation.halos.find_halos_in_snapshot`) by particle ID.

    Parameters
    ----------
    snapshot : Snapshot
        Particles [Mpc/h, km/s] with Lagrangian IDs.
    b : float
        FoF linking length in mean inter-particle separations, in (0, 1).
    min_particles : int
        Smallest member count of a halo, >= 2.

    Returns
    -------
    OutputHalos
    """
    if not isinstance(snapshot, Snapshot):
        raise InputError(f"snapshot must be a Snapshot, got {type(snapshot).__name__}")
    b = check_real(b, "linking length b", 0.0, 1.0, lo_open=True, hi_open=True, unit="mean separations")
    min_particles = check_int(min_particles, "min_particles", 2)
    catalog = find_halos_in_snapshot(snapshot, b=b, min_particles=min_particles)
    return OutputHalos.from_catalog(catalog, snapshot.ids, snapshot.velocities)
