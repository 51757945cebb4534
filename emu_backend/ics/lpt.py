"""Lagrangian perturbation theory: 2LPT displacement, ZA/2LPT particle positions and velocities.

With the z = 0 linear (ZA) displacement ``Psi1 = -grad phi1`` (``lap phi1 = delta``, see
:mod:`emu_backend.ics.linear`), particles at Lagrangian positions q move to (Bouchet et al. 1995;
Scoccimarro 1998; Crocce, Pueblas & Scoccimarro 2006)::

    x(q, z) = q + D(z) Psi1(q) + D2(z) Psi2(q),     Psi2 = grad phi2,
    lap phi2 = sum_{i<j} [phi1_ii phi1_jj - phi1_ij^2]          (the second-order source)
    D2(z)    = -3/7 D(z)^2 Omega_m(z)^(-1/143)                   (flat LambdaCDM fit)
    v(q, z)  = a H(z) [f(z) D(z) Psi1 + f2(z) D2(z) Psi2],   f2 = dlnD2/dlna ~ 2 Omega_m(z)^(6/11)

H in h km/s/Mpc and Psi in Mpc/h give v in km/s (peculiar velocity ``a dx/dt``). The
``Omega_m(z)^(-1/143)`` factor changes D2 by < 1% for Omega_m(z) > 0.2; it is the choice of 2LPTic.

Spectral conventions: derivatives by ``i k`` on the rfft grid; every mode on a Nyquist plane (even
n) is dropped, as in the "fourier" convention of :mod:`emu_backend.ics.linear`. The source is a
product of fields evaluated on the grid without de-aliasing; only the longitudinal (curl-free) part
of ``Psi1`` enters ``phi1``.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.fft

from ..checks import check_float_dtype, check_int, check_positive, check_real
from ..cosmology import growth
from ..cosmology.params import Cosmology
from ..datatypes.snapshot import lagrangian_grid as _grid_positions
from ..errors import InputError
from .grid import check_displacement, nyquist_mask, wavevectors

__all__ = [
    "second_order_source",
    "second_order_displacement",
    "omega_m_of_z",
    "second_order_growth_factor",
    "second_order_growth_rate",
    "lagrangian_grid",
    "lpt_particles",
]

logger = logging.getLogger(__name__)

_PAIRS = ((0, 1), (0, 2), (1, 2))


def _spectral_setup(displacement, box_size):
    psi = check_displacement(displacement, "displacement")
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    n = psi.shape[1]
    kvec = wavevectors(n, box)
    k2 = kvec[0] ** 2 + kvec[1] ** 2 + kvec[2] ** 2
    k2[0, 0, 0] = 1.0
    return psi, box, n, kvec, k2, nyquist_mask(n)


def second_order_source(displacement, box_size: float) -> np.ndarray:
    """Second-order LPT source ``sum_{i<j} (phi_ii phi_jj - phi_ij^2)`` of a ZA displacement.

    Parameters
    ----------
    displacement : ndarray, shape (3, n, n, n)
        First-order displacement Psi1 [Mpc/h] (``Psi1 = -grad phi1``).
    box_size : float
        Box side [Mpc/h].

    Returns
    -------
    ndarray, shape (n, n, n), float64
        The source (dimensionless); ``lap phi2`` equals it.
    """
    psi, box, n, kvec, k2, mask = _spectral_setup(displacement, box_size)
    # delta_k = -i k . Psi_k, then phi1_ij = k_i k_j delta_k / |k|^2
    delta_k = np.zeros((n, n, n // 2 + 1), dtype=np.complex128)
    for c in range(3):
        delta_k -= (1j * kvec[c]) * scipy.fft.rfftn(psi[c].astype(np.float64, copy=False))
    delta_k *= mask / k2
    delta_k[0, 0, 0] = 0.0

    def phi(i, j):
        return scipy.fft.irfftn(kvec[i] * kvec[j] * delta_k, s=(n, n, n))

    diag = [phi(c, c) for c in range(3)]
    source = diag[0] * diag[1] + diag[0] * diag[2] + diag[1] * diag[2]
    del diag
    for i, j in _PAIRS:
        source -= phi(i, j) ** 2
    return source


def second_order_displacement(displacement, box_size: float, *, dtype=np.float64) -> np.ndarray:
    """2LPT displacement ``Psi2 = grad phi2`` with ``lap phi2`` = :func:`second_order_source`.

    Normalised so that ``x = q + D Psi1 + D2 Psi2`` with ``D2 = -3/7 D^2 ...`` (module notes);
    quadratic in ``Psi1``.

    Parameters
    ----------
    displacement : ndarray, shape (3, n, n, n)
        First-order (z = 0) displacement Psi1 [Mpc/h].
    box_size : float
        Box side [Mpc/h].
    dtype : float32 or float64
        Output dtype.

    Returns
    -------
    ndarray, shape (3, n, n, n)
        Psi2 [Mpc/h].
    """
    source = second_order_source(displacement, box_size)
    _, _, n, kvec, k2, mask = _spectral_setup(displacement, box_size)
    phi2_k = scipy.fft.rfftn(source) * (mask / -k2)  # lap phi2 = S  ->  phi2_k = -S_k / k^2
    phi2_k[0, 0, 0] = 0.0
    out = np.empty((3, n, n, n), dtype=dtype)
    for c in range(3):
        out[c] = scipy.fft.irfftn((1j * kvec[c]) * phi2_k, s=(n, n, n))
    return out


def omega_m_of_z(z, omega_m):
    """Matter density parameter at redshift z, ``Om (1+z)^3 / (Om (1+z)^3 + 1 - Om)`` (flat)."""
    h = growth.hubble(z, omega_m) / 100.0
    return omega_m * (1.0 + np.asarray(z, dtype=np.float64)) ** 3 / h**2


def second_order_growth_factor(z, omega_m):
    """Second-order growth factor ``D2 = -3/7 D(z)^2 Omega_m(z)^(-1/143)`` (negative)."""
    return -3.0 / 7.0 * growth.growth_factor(z, omega_m) ** 2 * omega_m_of_z(z, omega_m) ** (-1.0 / 143.0)


def second_order_growth_rate(z, omega_m):
    """Second-order growth rate ``f2 = dlnD2/dlna ~ 2 Omega_m(z)^(6/11)``."""
    return 2.0 * omega_m_of_z(z, omega_m) ** (6.0 / 11.0)


def lagrangian_grid(n: int, box_size: float) -> np.ndarray:
    """Lagrangian positions ``q = (i, j, k) L / n`` [Mpc/h] of an n^3 particle grid, shape (3, n, n, n)."""
    n = check_int(n, "grid size n", 2)
    return _grid_positions(n, check_positive(box_size, "box_size", unit="Mpc/h"))


def lpt_particles(
    displacement,
    box_size: float,
    cosmology: Cosmology,
    z: float,
    *,
    order: int = 2,
    dtype=np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Particle positions and peculiar velocities at redshift z from the z = 0 linear displacement.

    Parameters
    ----------
    displacement : ndarray, shape (3, n, n, n)
        ZA displacement Psi1 at z = 0 [Mpc/h] of particle (i, j, k); channel c is along array axis c + 1.
    box_size : float
        Box side [Mpc/h].
    cosmology : Cosmology
        Supplies Omega_m for D, f, H (flat LambdaCDM, :mod:`emu_backend.cosmology.growth`).
    z : float
        Redshift, > -1.
    order : {1, 2}
        1: Zel'dovich approximation; 2: 2LPT.
    dtype : float32 or float64
        Output dtype.

    Returns
    -------
    positions : ndarray, shape (3, n, n, n)
        Eulerian positions [Mpc/h], wrapped into [0, box_size).
    velocities : ndarray, shape (3, n, n, n)
        Peculiar velocities [km/s].

    Examples
    --------
    >>> from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    >>> psi = np.zeros((3, 4, 4, 4)); psi[0] = 1.0
    >>> pos, vel = lpt_particles(psi, 100.0, QUIJOTE_FIDUCIAL, z=0.0, order=1)
    >>> float(pos[0, 0, 0, 0]), round(float(vel[0, 0, 0, 0]), 3)
    (1.0, 52.946)
    """
    order = check_int(order, "LPT order", 1, 2, what="1 or 2")
    if not isinstance(cosmology, Cosmology):
        raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
    z = check_real(z, "redshift z", -1.0, lo_open=True)
    dt = check_float_dtype(dtype)
    psi1 = check_displacement(displacement, "displacement").astype(np.float64)
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    n = psi1.shape[1]
    om = cosmology.omega_m
    a = 1.0 / (1.0 + float(z))
    d1 = float(growth.growth_factor(z, om))
    a_h = a * float(growth.hubble(z, om))  # h km/s/Mpc; times Mpc/h gives km/s
    disp = d1 * psi1
    vel = (a_h * float(growth.growth_rate(z, om)) * d1) * psi1
    if order == 2:
        psi2 = second_order_displacement(psi1, box)
        d2 = float(second_order_growth_factor(z, om))
        disp += d2 * psi2
        vel += (a_h * float(second_order_growth_rate(z, om)) * d2) * psi2
    pos = np.mod(lagrangian_grid(n, box) + disp, box).astype(dt)
    pos[pos >= dt.type(box)] = 0  # a value just below L can round up to L in float32
    logger.debug("LPT order %d at z=%g: D=%.5f, rms displacement %.4g Mpc/h", order, z, d1, float(disp.std()))
    return pos, vel.astype(dt)
