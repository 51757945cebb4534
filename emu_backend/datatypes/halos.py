"""Halo catalogues: the data type that halo finders and catalogue readers return."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..checks import check_positive
from ..errors import InputError

__all__ = ["HaloCatalog"]


@dataclass(frozen=True, eq=False)
class HaloCatalog:
    """Friends-of-friends halos, sorted by mass (descending; ties by first member index).

    Attributes
    ----------
    mass : ndarray, shape (N_h,)
        Halo mass ``n_particles * particle_mass`` [Msun/h].
    position : ndarray, shape (N_h, 3)
        Periodic centre of mass [Mpc/h], in ``[0, box_size)``.
    velocity : ndarray, shape (N_h, 3)
        Mean peculiar velocity of the members [km/s].
    n_particles : ndarray, shape (N_h,), int64
        Member count.
    box_size : float
        Box side [Mpc/h].
    particle_mass : float
        Mass of one particle [Msun/h].
    linking_length : float
        ``b``, in units of the mean inter-particle separation.
    min_particles : int
        Smallest member count kept.
    a : float or None
        Scale factor of the snapshot, if known.
    particle_halo : ndarray, shape (N_particles,), int64, or None
        Index into this catalog of the halo of each input particle, -1 for particles in no halo.
    """

    mass: np.ndarray
    position: np.ndarray
    velocity: np.ndarray
    n_particles: np.ndarray
    box_size: float
    particle_mass: float
    linking_length: float
    min_particles: int = 20
    a: float | None = None
    particle_halo: np.ndarray | None = None

    def __post_init__(self):
        def put(key, value):
            object.__setattr__(self, key, value)

        put("box_size", check_positive(self.box_size, "HaloCatalog.box_size [Mpc/h]"))
        put("particle_mass", check_positive(self.particle_mass, "HaloCatalog.particle_mass [Msun/h]"))
        if self.a is not None:
            put("a", check_positive(self.a, "HaloCatalog.a"))
        try:
            mass = np.asarray(self.mass, dtype=np.float64).reshape(-1)
            n_h = mass.size
            put("mass", mass)
            put("position", np.asarray(self.position, dtype=np.float64).reshape(n_h, 3))
            put("velocity", np.asarray(self.velocity, dtype=np.float64).reshape(n_h, 3))
            put("n_particles", np.asarray(self.n_particles, dtype=np.int64).reshape(n_h))
        except (TypeError, ValueError) as exc:
            raise InputError(
                "HaloCatalog arrays must be mass (N,), position (N, 3) [Mpc/h], velocity (N, 3) [km/s] and "
                f"n_particles (N,) for one N: {exc}"
            ) from exc
        if not (np.all(np.isfinite(self.mass)) and np.all(np.isfinite(self.position))):
            raise InputError("HaloCatalog.mass and .position must be finite")

    @property
    def z(self) -> float | None:
        """Redshift ``1/a - 1``, or None when ``a`` is unknown."""
        return None if self.a is None else 1.0 / self.a - 1.0

    @property
    def n_halos(self) -> int:
        """Number of halos."""
        return int(self.mass.size)

    @property
    def number_density(self) -> float:
        """Halos per volume [(h/Mpc)^3]."""
        return self.n_halos / self.box_size**3
