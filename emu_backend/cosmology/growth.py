"""Linear growth, growth rate and Hubble rate of flat matter + Lambda cosmologies.

These are the closed forms the published emulators were trained with (SPEC section 3): radiation
and neutrinos are neglected, the growth factor is normalised to ``D(z=0) = 1``. All functions are
pure, vectorised over ``z`` and ``omega_m`` (NumPy broadcasting), and computed in float64.
"""

from __future__ import annotations

import numpy as np
from scipy.special import hyp2f1

from ..errors import InputError

__all__ = [
    "growth_factor",
    "growth_rate",
    "hubble",
    "scale_factor",
]


def check_omega_m(omega_m):
    om = np.asarray(omega_m, dtype=np.float64)
    if np.any(~np.isfinite(om)) or np.any(om <= 0) or np.any(om > 1):
        raise InputError(f"omega_m must lie in (0, 1], got {omega_m!r}")
    return om


def scale_factor(z):
    zz = np.asarray(z, dtype=np.float64)
    if np.any(~np.isfinite(zz)) or np.any(zz <= -1):
        raise InputError(f"redshift z must be finite and > -1, got {z!r}")
    return 1.0 / (1.0 + zz)


def growth_factor(z, omega_m):
    """Linear growth factor ``D(z)`` normalised to ``D(0) = 1``.

    ``D = a 2F1(1, 1/3; 11/6; -(OL/Om) a^3) / 2F1(1, 1/3; 11/6; -OL/Om)`` with ``OL = 1 - Om``.

    Parameters
    ----------
    z : float or array_like
        Redshift.
    omega_m : float or array_like
        Matter density parameter today, in (0, 1].

    Returns
    -------
    float or ndarray
        Dimensionless growth factor, broadcast shape of the inputs.
    """
    om = check_omega_m(omega_m)
    a = scale_factor(z)
    ratio = (1.0 - om) / om
    return a * hyp2f1(1.0, 1.0 / 3.0, 11.0 / 6.0, -ratio * a**3) / hyp2f1(
        1.0, 1.0 / 3.0, 11.0 / 6.0, -ratio
    )


def growth_rate(z, omega_m):
    """Logarithmic growth rate ``f = dlnD/dlna``.

    ``f = 1 - (6/11) x 2F1(2, 4/3; 17/6; -x) / 2F1(1, 1/3; 11/6; -x)`` with ``x = OL a^3 / Om``.

    Parameters
    ----------
    z, omega_m : float or array_like
        Redshift and matter density parameter.

    Returns
    -------
    float or ndarray
        Dimensionless growth rate.
    """
    om = check_omega_m(omega_m)
    a = scale_factor(z)
    x = (1.0 - om) * a**3 / om
    return 1.0 - 6.0 / 11.0 * x * hyp2f1(2.0, 4.0 / 3.0, 17.0 / 6.0, -x) / hyp2f1(
        1.0, 1.0 / 3.0, 11.0 / 6.0, -x
    )


def hubble(z, omega_m):
    """Hubble rate ``H(z) = 100 sqrt(Om a^-3 + 1 - Om)`` in h km/s/Mpc.

    Parameters
    ----------
    z, omega_m : float or array_like
        Redshift and matter density parameter.

    Returns
    -------
    float or ndarray
        Hubble rate [h km/s/Mpc].
    """
    om = check_omega_m(omega_m)
    a = scale_factor(z)
    return 100.0 * np.sqrt(om / a**3 + 1.0 - om)
