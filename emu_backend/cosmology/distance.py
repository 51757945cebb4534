"""Comoving distances of flat matter + Lambda cosmologies (the background of :mod:`.growth`).

``chi(z) = (c / H0) int_0^z dz' / E(z')`` with ``E = sqrt(Om (1+z)^3 + 1 - Om)``; with ``H0 = 100 h km/s/Mpc``
the distance is in Mpc/h. Radiation and neutrinos are neglected, as in the growth factor the emulators
were trained with. The integral is scipy's adaptive quadrature between tabulation knots; the inverse
``z(chi)`` interpolates the tabulated pairs with a cubic spline (error below 1e-9 in z on the default table).
"""

from __future__ import annotations

import numpy as np
import scipy.integrate
import scipy.interpolate

from ..checks import check_int, check_real
from ..errors import InputError

__all__ = ["C_KM_S", "HUBBLE_DISTANCE_MPC_H", "comoving_distance", "DistanceTable"]

#: Speed of light [km/s].
C_KM_S = 299792.458
#: Hubble distance ``c / H0`` [Mpc/h] (``H0 = 100 h km/s/Mpc``).
HUBBLE_DISTANCE_MPC_H = C_KM_S / 100.0


def _inverse_e(z, omega_m: float):
    return 1.0 / np.sqrt(omega_m * (1.0 + z) ** 3 + 1.0 - omega_m)


def comoving_distance(z, omega_m: float) -> np.ndarray:
    """Line-of-sight comoving distance to redshift ``z`` [Mpc/h].

    Parameters
    ----------
    z : float or array_like
        Redshifts, >= 0.
    omega_m : float
        Matter density today, in (0, 1].

    Returns
    -------
    float or ndarray
        ``chi(z)`` [Mpc/h], the shape of ``z``.

    Examples
    --------
    >>> round(float(comoving_distance(1.0, 1.0)), 6)  # Einstein-de Sitter: 2 (c/H0) (1 - 1/sqrt(1+z))
    1756.14356
    """
    om = check_real(omega_m, "omega_m", 0.0, 1.0, lo_open=True)
    zs = np.asarray(z, dtype=np.float64)
    if not np.all(np.isfinite(zs)) or np.any(zs < 0):
        raise InputError(f"redshift z must be finite and >= 0, got {z!r}")
    flat = zs.ravel()
    order = np.argsort(flat)
    knots = np.concatenate([[0.0], flat[order]])
    pieces = [scipy.integrate.quad(_inverse_e, lo, hi, args=(om,), epsabs=0.0, epsrel=1e-12)[0] if hi > lo else 0.0
              for lo, hi in zip(knots[:-1], knots[1:])]
    out = np.empty_like(flat)
    out[order] = HUBBLE_DISTANCE_MPC_H * np.cumsum(pieces)
    return out.reshape(zs.shape) if zs.ndim else float(out[0])


class DistanceTable:
    """``chi(z)``, its inverse ``z(chi)`` and the scale factor along the line of sight, fast for many points.

    Parameters
    ----------
    omega_m : float
        Matter density today, in (0, 1].
    z_max : float
        Largest redshift tabulated (> 0).
    n_knots : int
        Tabulation knots, uniform in ``log(1 + z)``.

    Examples
    --------
    >>> t = DistanceTable(0.3, 2.0)
    >>> round(float(t.redshift(t.distance(1.0))), 9)
    1.0
    """

    def __init__(self, omega_m: float, z_max: float, n_knots: int = 4096):
        self.omega_m = check_real(omega_m, "omega_m", 0.0, 1.0, lo_open=True)
        self.z_max = check_real(z_max, "z_max", 0.0, lo_open=True)
        n = check_int(n_knots, "n_knots", 16)
        z = np.expm1(np.linspace(0.0, np.log1p(self.z_max), n))
        chi = comoving_distance(z, self.omega_m)
        self._chi_of_z = scipy.interpolate.CubicSpline(z, chi)
        self._z_of_chi = scipy.interpolate.CubicSpline(chi, z)
        self.chi_max = float(chi[-1])

    def distance(self, z) -> np.ndarray:
        """``chi(z)`` [Mpc/h] for ``0 <= z <= z_max``."""
        zs = np.asarray(z, dtype=np.float64)
        if np.any(zs < 0) or np.any(zs > self.z_max * (1 + 1e-12)):
            raise InputError(f"redshift z must lie in [0, {self.z_max}] (the table), got {z!r}")
        return self._chi_of_z(zs)

    def redshift(self, chi) -> np.ndarray:
        """``z(chi)`` for ``0 <= chi <= chi(z_max)`` [Mpc/h]."""
        c = np.asarray(chi, dtype=np.float64)
        if np.any(c < 0) or np.any(c > self.chi_max * (1 + 1e-12)):
            raise InputError(f"comoving distance must lie in [0, {self.chi_max:.6g}] Mpc/h (the table), got {chi!r}")
        return self._z_of_chi(c)

    def scale_factor(self, chi) -> np.ndarray:
        """``a(chi) = 1 / (1 + z(chi))``."""
        return 1.0 / (1.0 + self.redshift(chi))
