"""Initial conditions of a run: the z = 0 linear field on the particle grid, with its provenance.

Every backend of the simulator interface (:mod:`emu_backend.simulator.backends`) starts from the same
object: the linear (Zel'dovich) displacement ``Psi`` [Mpc/h] and density contrast ``delta`` at z = 0 of
an ``n^3`` particle grid in a periodic box, ``div Psi = -delta``. Three ways to make one, as in a PM
code's ``whitenoise -> linear -> lpt`` chain:

* :meth:`InitialConditions.from_noise`: seeded white noise and a linear P(k) (Eisenstein & Hu by
  default), optionally Quijote-style fixed / paired;
* :meth:`InitialConditions.from_linear_density`: a user-supplied linear density contrast at z = 0;
* :meth:`InitialConditions.from_linear_displacement`: a user-supplied ZA displacement at z = 0.

:func:`linear_field` is the array-level entry (white noise and P(k) in, InitialConditions out) that
:meth:`InitialConditions.from_noise` builds on.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass, field

import numpy as np

from ..checks import check_float_dtype, check_int, check_positive
from ..cosmology.linear_power import EisensteinHuPower
from ..cosmology.params import Cosmology
from ..datatypes.meta import meta_to_json, readonly
from ..errors import InputError
from .grid import check_displacement, check_field
from .linear import (
    Convention,
    check_box_size,
    default_box_size,
    displacement_from_density,
    divergence,
    linear_arrays,
)
from .noise import white_noise

__all__ = ["InitialConditions", "linear_field"]

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
        along array axis ``c + 1``. Stored as a read-only array: float64 stays float64, anything else
        becomes float32.
    density : ndarray, shape (n, n, n)
        Linear density contrast at z = 0 (dimensionless), ``div Psi = -delta``. Stored read-only, in
        the displacement's dtype.
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
        delta = check_field(self.density, "density")
        psi = check_displacement(self.displacement, "displacement")
        if psi.shape[1:] != delta.shape:
            raise InputError(f"displacement shape {psi.shape} does not match density shape {delta.shape}")
        dtype = np.float64 if psi.dtype == np.float64 else np.float32
        if self.seed is not None:
            check_int(self.seed, "seed", 0, what="a non-negative integer or None")
        if not isinstance(self.provenance, dict):
            raise InputError(f"provenance must be a dict, got {type(self.provenance).__name__}")
        meta_to_json(self.provenance)
        put = object.__setattr__
        put(self, "displacement", readonly(np.asarray(psi, dtype=dtype)))
        put(self, "density", readonly(np.asarray(delta, dtype=dtype)))
        put(self, "box_size", check_positive(self.box_size, "box_size", unit="Mpc/h"))
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
        if box_size is not None:
            box = check_box_size(box_size)  # before the noise is drawn
        noise = white_noise(n, seed, fixed_amplitude=fixed_amplitude, paired=paired)
        delta, psi, box = linear_arrays(noise, power, box, convention=convention)
        prov = {
            "source": "noise",
            "power": repr(power),
            "fixed_amplitude": bool(fixed_amplitude),
            "paired": bool(paired),
            "convention": convention,
            "ics_cosmology": cosmology.to_dict(),
        }
        logger.info("ICs from noise: n=%d, L=%g Mpc/h, seed=%d, P(k)=%r", n, box, seed, power)
        return cls(psi, delta, box, seed=seed, provenance=prov)

    @classmethod
    def from_linear_density(
        cls, density, box_size: float, *, seed: int | None = None, provenance: dict | None = None,
        dtype=np.float32,
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
        dtype : float32 or float64
            Stored dtype; the density is passed through unchanged apart from this cast.
        """
        dt = check_float_dtype(dtype)
        delta = check_field(density, "density")
        psi = displacement_from_density(delta, box_size, dtype=dt)
        prov = {"source": "linear_density", **_provenance(provenance)}
        return cls(psi, delta.astype(dt), box_size, seed=seed, provenance=prov)

    @classmethod
    def from_linear_displacement(
        cls, displacement, box_size: float, *, seed: int | None = None, provenance: dict | None = None,
        dtype=np.float32,
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
        dtype : float32 or float64
            Stored dtype; the displacement is passed through unchanged apart from this cast.
        """
        dt = check_float_dtype(dtype)
        psi = check_displacement(displacement, "displacement")
        delta = -divergence(psi, box_size)
        prov = {"source": "linear_displacement", **_provenance(provenance)}
        return cls(psi.astype(dt), delta.astype(dt), box_size, seed=seed, provenance=prov)


def linear_field(
    noise, power, box_size: float | None = None, *, convention: Convention = "fourier", dtype=np.float32
) -> "InitialConditions":
    """Linear density and ZA displacement at z = 0 from white noise and P(k).

    Parameters
    ----------
    noise : ndarray, shape (n, n, n)
        Real white noise of unit variance (e.g. :func:`emu_backend.ics.white_noise`).
    power : LinearPower
        Callable linear P(k) at z = 0 [(Mpc/h)^3] of k [h/Mpc]; must cover the grid wavenumbers
        ``2 pi / L`` ... ``sqrt(3) n pi / L``.
    box_size : float or None
        Box side [Mpc/h]; default ``1000 n / 512`` (:func:`default_box_size`).
    convention : {"fourier", "reference"}
        Mode convention, see :mod:`emu_backend.ics.linear`.
    dtype : float32 or float64
        Output dtype (computation is float64 except the reference's float32 wavenumbers).

    Returns
    -------
    InitialConditions
        ``density`` (n, n, n) and ``displacement`` (3, n, n, n) [Mpc/h] in ``dtype``, no seed (the
        noise is the caller's), provenance naming the P(k) and convention.

    Examples
    --------
    >>> from emu_backend.cosmology import EisensteinHuPower, QUIJOTE_FIDUCIAL
    >>> from emu_backend.ics import white_noise
    >>> f = linear_field(white_noise(16, seed=0), EisensteinHuPower(QUIJOTE_FIDUCIAL))
    >>> f.displacement.shape, f.box_size
    ((3, 16, 16, 16), 31.25)
    """
    delta, psi, box = linear_arrays(noise, power, box_size, convention=convention, dtype=dtype)
    return InitialConditions(psi, delta, box, provenance={"source": "linear_field", "power": repr(power),
                                                          "convention": convention})
