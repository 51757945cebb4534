"""Initial conditions of a run: the z = 0 linear field on the particle grid, with its provenance.

Every backend of the simulator interface (:mod:`emu_backend.simulator.backends`) starts from the same
object: the linear (Zel'dovich) displacement ``Psi`` [Mpc/h] and density contrast ``delta`` at z = 0 of
an ``n^3`` particle grid in a periodic box, ``div Psi = -delta``. Three ways to make one, as in a PM
code's ``whitenoise -> linear -> lpt`` chain:

* :meth:`InitialConditions.from_noise`: seeded white noise and a linear P(k) (Eisenstein & Hu by
  default), optionally Quijote-style fixed / paired;
* :meth:`InitialConditions.from_linear_density`: a user-supplied linear density contrast at z = 0;
* :meth:`InitialConditions.from_linear_displacement`: a user-supplied ZA displacement at z = 0.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass, field

import numpy as np

from ..cosmology.linear_power import EisensteinHuPower
from ..cosmology.params import Cosmology
from ..errors import InputError
from ..ics.linear import LinearField, default_box_size, linear_field
from ..ics.noise import white_noise
from .snapshot import _readonly, meta_to_json

__all__ = ["InitialConditions"]

logger = logging.getLogger(__name__)


def _provenance(provenance) -> dict:
    if provenance is None:
        return {}
    if not isinstance(provenance, dict):
        raise InputError(f"provenance must be a dict or None, got {type(provenance).__name__}: {provenance!r}")
    return provenance


@dataclass(frozen=True, eq=False)
class InitialConditions:
    """The z = 0 linear field of an ``n^3`` particle grid in a periodic box.

    Parameters
    ----------
    displacement : ndarray, shape (3, n, n, n)
        Linear (Zel'dovich) displacement Psi at z = 0 [Mpc/h] of particle ``(i, j, k)``; channel ``c``
        along array axis ``c + 1``. Stored as a read-only float32 array.
    density : ndarray, shape (n, n, n)
        Linear density contrast at z = 0 (dimensionless), ``div Psi = -delta``. Stored read-only.
    box_size : float
        Box side [Mpc/h].
    seed : int or None
        Seed of the white noise, or None for user-supplied fields.
    provenance : dict
        JSON-serialisable description of how the field was made (recorded in every snapshot).

    Use the constructors :meth:`from_noise`, :meth:`from_linear_density` and
    :meth:`from_linear_displacement` rather than building one directly.

    Examples
    --------
    >>> from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    >>> ics = InitialConditions.from_noise(16, None, QUIJOTE_FIDUCIAL, seed=42)
    >>> ics.n, ics.box_size, ics.displacement.shape
    (16, 31.25, (3, 16, 16, 16))
    """

    displacement: np.ndarray
    density: np.ndarray
    box_size: float
    seed: int | None = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        # LinearField checks shapes, finiteness and the box size
        lf = LinearField(self.density, self.displacement, self.box_size)
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0
        ):
            raise InputError(f"seed must be a non-negative integer or None, got {self.seed!r}")
        if not isinstance(self.provenance, dict):
            raise InputError(f"provenance must be a dict, got {type(self.provenance).__name__}")
        meta_to_json(self.provenance)
        put = object.__setattr__
        put(self, "displacement", _readonly(np.asarray(lf.displacement, dtype=np.float32)))
        put(self, "density", _readonly(np.asarray(lf.density, dtype=np.float32)))
        put(self, "box_size", lf.box_size)
        put(self, "seed", None if self.seed is None else int(self.seed))
        put(self, "provenance", dict(self.provenance))

    # -- derived values --------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Particles per side."""
        return self.displacement.shape[1]

    @property
    def cell_size(self) -> float:
        """Lagrangian grid spacing ``box_size / n`` [Mpc/h]."""
        return self.box_size / self.n

    def describe(self) -> dict:
        """Provenance recorded in snapshots: the constructor's description plus n, box and seed."""
        return {**self.provenance, "n": self.n, "box_size_mpc_h": self.box_size, "seed": self.seed}

    # -- constructors ----------------------------------------------------------------------
    @classmethod
    def from_noise(
        cls,
        n: int,
        box_size: float | None,
        cosmology: Cosmology,
        seed: int,
        *,
        power=None,
        fixed_amplitude: bool = False,
        paired: bool = False,
        convention: str = "fourier",
    ) -> "InitialConditions":
        """Gaussian linear field from seeded white noise and a linear P(k) at z = 0.

        Parameters
        ----------
        n : int
            Particles per side.
        box_size : float or None
            Box side [Mpc/h]; None gives the emulators' training resolution ``1000 n / 512``.
        cosmology : Cosmology
            Used for the default power spectrum.
        seed : int
            Non-negative noise seed (:func:`emu_backend.ics.white_noise`).
        power : LinearPower, optional
            P(k) at z = 0 [(Mpc/h)^3] of k [h/Mpc]; default ``EisensteinHuPower(cosmology)``.
        fixed_amplitude, paired : bool
            Quijote-style fixed-amplitude and phase-flipped noise.
        convention : {"fourier", "reference"}
            Mode convention of :func:`emu_backend.ics.linear_field`.

        Returns
        -------
        InitialConditions
        """
        if not isinstance(cosmology, Cosmology):
            raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
        if power is None:
            power = EisensteinHuPower(cosmology)
        box = default_box_size(n) if box_size is None and isinstance(n, numbers.Integral) else box_size
        noise = white_noise(n, seed, fixed_amplitude=fixed_amplitude, paired=paired)
        lf = linear_field(noise, power, box, convention=convention)
        prov = {
            "source": "noise",
            "power": repr(power),
            "fixed_amplitude": bool(fixed_amplitude),
            "paired": bool(paired),
            "convention": convention,
            "ics_cosmology": cosmology.to_dict(),
        }
        logger.info("ICs from noise: n=%d, L=%g Mpc/h, seed=%d, P(k)=%r", n, lf.box_size, seed, power)
        return cls(lf.displacement, lf.density, lf.box_size, seed=seed, provenance=prov)

    @classmethod
    def from_linear_density(
        cls, density, box_size: float, *, seed: int | None = None, provenance: dict | None = None
    ) -> "InitialConditions":
        """ICs from a user-supplied linear density contrast at z = 0.

        Parameters
        ----------
        density : ndarray, shape (n, n, n)
            Linear density contrast at z = 0; its k = 0 and Nyquist modes do not enter the
            displacement (:func:`emu_backend.ics.displacement_from_density`).
        box_size : float
            Box side [Mpc/h].
        seed : int, optional
            Seed of the field, if known (recorded).
        provenance : dict, optional
            Extra JSON-serialisable description, recorded in the snapshots.
        """
        lf = LinearField.from_density(density, box_size)
        prov = {"source": "linear_density", **_provenance(provenance)}
        return cls(lf.displacement, lf.density, lf.box_size, seed=seed, provenance=prov)

    @classmethod
    def from_linear_displacement(
        cls, displacement, box_size: float, *, seed: int | None = None, provenance: dict | None = None
    ) -> "InitialConditions":
        """ICs from a user-supplied linear (Zel'dovich) displacement at z = 0.

        Parameters
        ----------
        displacement : ndarray, shape (3, n, n, n)
            Psi [Mpc/h] at z = 0; the density is ``-div Psi`` (spectral).
        box_size : float
            Box side [Mpc/h].
        seed : int, optional
            Seed of the field, if known (recorded).
        provenance : dict, optional
            Extra JSON-serialisable description, recorded in the snapshots.
        """
        lf = LinearField.from_displacement(displacement, box_size)
        prov = {"source": "linear_displacement", **_provenance(provenance)}
        return cls(lf.displacement, lf.density, lf.box_size, seed=seed, provenance=prov)
