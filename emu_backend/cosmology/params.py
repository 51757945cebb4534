"""Flat LambdaCDM parameter sets: a frozen, validated cosmology object with named presets."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from ..checks import check_real
from ..errors import InputError
from . import growth

__all__ = ["Cosmology", "PLANCK18", "QUIJOTE_FIDUCIAL", "PRESETS", "RHO_CRIT_MSUN_H_MPC_H3"]

#: Critical density today, 3 H0^2 / (8 pi G), in (Msun/h) / (Mpc/h)^3.
RHO_CRIT_MSUN_H_MPC_H3 = 2.77536627e11


@dataclass(frozen=True)
class Cosmology:
    """Flat LambdaCDM cosmology (matter + Lambda; radiation and neutrinos neglected).

    Exactly one of ``sigma8`` and ``A_s`` normalises the linear power spectrum.

    Parameters
    ----------
    omega_m : float
        Total matter density today, in (0, 1).
    omega_b : float
        Baryon density today, in [0, omega_m].
    h : float
        Dimensionless Hubble constant H0 / (100 km/s/Mpc), in (0.2, 2).
    n_s : float
        Scalar spectral index, in (0.5, 1.5).
    sigma8 : float or None
        rms linear density contrast in spheres of 8 Mpc/h at z = 0.
    A_s : float or None
        Primordial amplitude at k = 0.05 1/Mpc (used by CLASS-based providers).
    name : str
        Label kept in output files (a string).

    Examples
    --------
    >>> c = Cosmology(omega_m=0.3, omega_b=0.05, h=0.7, n_s=0.96, sigma8=0.8)
    >>> c.clone(omega_m=0.25).omega_m
    0.25
    >>> round(float(QUIJOTE_FIDUCIAL.growth_factor(1.0)), 6)
    0.605938
    """

    omega_m: float
    omega_b: float = 0.049
    h: float = 0.6711
    n_s: float = 0.9624
    sigma8: float | None = 0.834
    A_s: float | None = None
    name: str = "custom"

    def __post_init__(self):
        def check(key, lo, hi, lo_open=True):
            value = check_real(getattr(self, key), f"Cosmology.{key}", lo, hi, lo_open=lo_open, hi_open=True)
            object.__setattr__(self, key, value)

        check("omega_m", 0.0, 1.0)
        check("omega_b", 0.0, self.omega_m, lo_open=False)
        check("h", 0.2, 2.0)
        check("n_s", 0.5, 1.5)
        if (self.sigma8 is None) == (self.A_s is None):
            raise InputError(
                f"exactly one of sigma8 and A_s must be given, got sigma8={self.sigma8!r}, A_s={self.A_s!r}"
            )
        if self.sigma8 is not None:
            check("sigma8", 0.0, 3.0)
        if self.A_s is not None:
            check("A_s", 0.0, 1e-7)
        if not isinstance(self.name, str):
            raise InputError(f"Cosmology.name must be a string (a label), got {self.name!r}")

    # -- derived values -------------------------------------------------------------------
    @property
    def omega_l(self) -> float:
        """Dark-energy (Lambda) density today, ``1 - omega_m`` (flat)."""
        return 1.0 - self.omega_m

    @property
    def omega_cdm(self) -> float:
        """Cold dark matter density today, ``omega_m - omega_b``."""
        return self.omega_m - self.omega_b

    def growth_factor(self, z):
        """Linear growth factor D(z), D(0) = 1."""
        return growth.growth_factor(z, self.omega_m)

    def growth_rate(self, z):
        """Growth rate f(z) = dlnD/dlna."""
        return growth.growth_rate(z, self.omega_m)

    def hubble(self, z):
        """H(z) [h km/s/Mpc]."""
        return growth.hubble(z, self.omega_m)

    def particle_mass(self, box_size_mpc_h: float, n_per_side: int) -> float:
        """Mass of one particle [Msun/h] for ``n_per_side**3`` particles in a box [Mpc/h]."""
        return RHO_CRIT_MSUN_H_MPC_H3 * self.omega_m * box_size_mpc_h**3 / n_per_side**3

    # -- conversions ----------------------------------------------------------------------
    def clone(self, **changes) -> "Cosmology":
        """Return a copy with some parameters changed (validated again).

        Setting ``sigma8`` clears ``A_s`` and vice versa unless both are given.
        """
        if "sigma8" in changes and "A_s" not in changes:
            changes["A_s"] = None
        if "A_s" in changes and "sigma8" not in changes:
            changes["sigma8"] = None
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InputError(f"unknown cosmology parameter(s) {unknown}; allowed: {sorted(known)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain dict of the parameters (for file headers)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Cosmology":
        """Build from a dict, refusing unknown keys by name."""
        if not isinstance(d, Mapping):
            raise InputError(f"a cosmology must be given as a dict of parameters, got {type(d).__name__}: {d!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown cosmology key(s) {unknown}; allowed: {sorted(known)}")
        if "omega_m" not in d:
            raise InputError(f"cosmology dict {dict(d)!r} lacks the required key 'omega_m'")
        return cls(**d)

    @classmethod
    def preset(cls, name: str) -> "Cosmology":
        """A named preset: ``'quijote'`` (Quijote fiducial) or ``'planck18'``."""
        try:
            return PRESETS[name.lower()]
        except (KeyError, AttributeError):
            raise InputError(f"unknown cosmology preset {name!r}; choose one of {sorted(PRESETS)}") from None


#: Quijote fiducial cosmology (Villaescusa-Navarro et al. 2020).
QUIJOTE_FIDUCIAL = Cosmology(
    omega_m=0.3175, omega_b=0.049, h=0.6711, n_s=0.9624, sigma8=0.834, name="quijote_fiducial"
)

#: Planck 2018 TT,TE,EE+lowE+lensing+BAO (Table 2, last column), flat LambdaCDM.
PLANCK18 = Cosmology(
    omega_m=0.3111, omega_b=0.04897, h=0.6766, n_s=0.9665, sigma8=0.8102, name="planck18"
)

PRESETS = {"quijote": QUIJOTE_FIDUCIAL, "quijote_fiducial": QUIJOTE_FIDUCIAL, "planck18": PLANCK18}
