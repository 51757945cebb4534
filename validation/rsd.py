"""Redshift-space distortions: the plane-parallel position shift and the power-spectrum multipoles.

Conventions
-----------
* Plane-parallel (distant-observer) approximation along mesh axis ``los``: the redshift-space position is
  ``s = x + v_los / (a H(a)) e_los`` with ``x`` [Mpc/h], ``v`` the peculiar velocity [km/s] and ``H`` in
  h km/s/Mpc (:func:`emu_backend.cosmology.growth.hubble`), so the shift is in Mpc/h; ``s`` is wrapped
  periodically into ``[0, L)``.
* Multipoles ``P_l(k) = (2 l + 1) < P_k L_l(mu_k) >`` with ``mu_k = k_los / |k|``, ``L_l`` the Legendre
  polynomial and ``< >`` the mode average of :mod:`.power` (every mode of the full FFT grid in the bin). The
  mesh is the window-deconvolved (and by default interlaced) density of :func:`.mesh.density_mesh`. No
  shot noise is subtracted from the monopole.
* On a finite grid the mode average of ``L_l(mu)`` over a shell is not exactly zero for ``l = 4`` (cubic
  symmetry keeps a ``l = 4`` harmonic), so an isotropic field has a small ``P_4`` at low k; it vanishes for
  ``l = 2`` (``<mu^2> = 1/3`` on every cubic-symmetric shell).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy.special import eval_legendre

from ..checks import check_int, check_points, check_positive, check_real
from ..cosmology.growth import hubble
from ..errors import InputError
from .mesh import density_mesh
from .power import bin_modes, check_cubic_field, check_k_edges, mode_grid

__all__ = ["Multipoles", "redshift_space_positions", "multipoles"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Multipoles:
    """Binned redshift-space power-spectrum multipoles.

    Attributes
    ----------
    k : ndarray, shape (n_bins,)
        Mean ``|k|`` of the modes in each bin [h/Mpc]; NaN for an empty bin.
    poles : ndarray, shape (len(ells), n_bins)
        ``P_l(k)`` [(Mpc/h)^3], one row per entry of ``ells``; NaN for an empty bin.
    ells : tuple of int
        The multipole orders of the rows of ``poles``.
    n_modes : ndarray, shape (n_bins,), int64
        Fourier modes per bin (``k`` and ``-k`` counted separately).
    k_edges : ndarray, shape (n_bins + 1,)
        Bin edges [h/Mpc].
    box_size : float
        Box side [Mpc/h].
    los : int
        Line-of-sight mesh axis (0, 1 or 2).
    """

    k: np.ndarray
    poles: np.ndarray
    ells: tuple
    n_modes: np.ndarray
    k_edges: np.ndarray
    box_size: float
    los: int = 2

    def pole(self, ell: int) -> np.ndarray:
        """The row of ``poles`` for multipole ``ell`` [(Mpc/h)^3]."""
        if ell not in self.ells:
            raise InputError(f"ell = {ell!r} was not computed; available: {self.ells}")
        return self.poles[self.ells.index(ell)]


def _check_los(los) -> int:
    return check_int(los, "los", 0, 2, what="the mesh axis 0, 1 or 2")


def redshift_space_positions(
    positions, velocities, a: float, omega_m: float, box_size: float, los: int = 2
) -> np.ndarray:
    """Plane-parallel redshift-space positions ``s = x + v_los / (a H(a))``, wrapped into the box.

    Parameters
    ----------
    positions : array_like, shape (N, 3)
        Comoving real-space positions [Mpc/h].
    velocities : array_like, shape (N, 3)
        Peculiar velocities [km/s].
    a : float
        Scale factor of the snapshot, in (0, 1.5].
    omega_m : float
        Matter density today (flat LCDM), in (0, 1]; sets ``H(a) = 100 sqrt(Om a^-3 + 1 - Om)`` h km/s/Mpc.
    box_size : float
        Box side [Mpc/h].
    los : int
        Line-of-sight mesh axis (0, 1 or 2).

    Returns
    -------
    ndarray, shape (N, 3), float64
        Redshift-space positions [Mpc/h] in ``[0, box_size)``; only column ``los`` differs from ``positions``
        (modulo the wrap).

    Examples
    --------
    >>> s = redshift_space_positions([[1.0, 1.0, 1.0]], [[0.0, 0.0, 100.0]], a=1.0, omega_m=0.3, box_size=10.0)
    >>> s.round(6).tolist()  # 100 km/s / (1 * 100 h km/s/Mpc) = 1 Mpc/h at a = 1
    [[1.0, 1.0, 2.0]]
    """
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    axis = _check_los(los)
    scale = check_real(a, "scale factor a", 0.0, 1.5, lo_open=True)
    pos = check_points(positions, "positions", "Mpc/h")
    vel = check_points(velocities, "velocities", "km/s")
    if vel.shape != pos.shape:
        raise InputError(f"velocities shape {vel.shape} differs from positions shape {pos.shape}")
    h_a = float(hubble(1.0 / scale - 1.0, omega_m))  # h km/s/Mpc; validates omega_m
    out = pos.copy()
    out[:, axis] += vel[:, axis] / (scale * h_a)
    out = np.mod(out, box)
    out[out >= box] = 0.0  # np.mod of a tiny negative number can round up to box
    return out


def _check_ells(ells) -> tuple:
    try:
        items = tuple(ells)
    except TypeError:
        raise InputError(f"ells must be a sequence of non-negative integers, got {ells!r}") from None
    if not items:
        raise InputError(f"ells must be a non-empty sequence of non-negative integers, got {ells!r}")
    orders = tuple(check_int(e, f"ells[{i}]", 0) for i, e in enumerate(items))
    if len(set(orders)) != len(orders):
        raise InputError(f"ells must not repeat an order, got {ells!r}")
    return orders


def field_multipoles(delta, box_size: float, los: int = 2, ells=(0, 2, 4), k_edges=None) -> Multipoles:
    """Multipoles ``P_l(k) = (2l + 1) <P_k L_l(mu)>`` of a real field already on a mesh.

    Parameters
    ----------
    delta : ndarray, shape (N, N, N)
        Real field (e.g. a redshift-space density contrast), dimensionless.
    box_size : float
        Box side [Mpc/h].
    los : int
        Line-of-sight mesh axis.
    ells : sequence of int
        Multipole orders.
    k_edges : array_like or None
        Bin edges [h/Mpc]; default :func:`.power.default_k_edges`.

    Returns
    -------
    Multipoles
    """
    arr = check_cubic_field(delta, "delta")
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    axis = _check_los(los)
    orders = _check_ells(ells)
    n = arr.shape[0]
    edges = check_k_edges(k_edges, n, box)
    fk = scipy.fft.rfftn(arr.astype(np.float64, copy=False))
    pk = (fk.real**2 + fk.imag**2).ravel() * (box**3 / float(n) ** 6)
    del fk
    kmag, weight = mode_grid(n, box)
    kf = 2.0 * np.pi / box
    comps = [np.fft.fftfreq(n, d=1.0 / n) * kf, np.fft.fftfreq(n, d=1.0 / n) * kf, np.fft.rfftfreq(n, d=1.0 / n) * kf]
    shape = [1, 1, 1]
    shape[axis] = -1
    k_los = np.broadcast_to(comps[axis].reshape(shape), (n, n, n // 2 + 1)).ravel()
    mu = np.divide(k_los, kmag, out=np.zeros_like(kmag), where=kmag > 0)
    per_mode = [(2 * ell + 1) * pk * eval_legendre(ell, mu) for ell in orders]
    k_mean, means, n_modes = bin_modes(n, box, edges, per_mode, kmag=kmag, weight=weight)
    return Multipoles(
        k=k_mean, poles=np.stack(means), ells=orders, n_modes=n_modes, k_edges=edges, box_size=box, los=axis
    )


def multipoles(
    positions,
    velocities,
    box_size: float,
    n_mesh: int,
    a: float,
    omega_m: float,
    los: int = 2,
    ells=(0, 2, 4),
    window: str = "cic",
    interlace: bool = True,
    k_edges=None,
) -> Multipoles:
    """Redshift-space power-spectrum multipoles of equal-mass particles (plane-parallel RSD).

    Parameters
    ----------
    positions : array_like, shape (N, 3)
        Real-space positions [Mpc/h].
    velocities : array_like, shape (N, 3)
        Peculiar velocities [km/s].
    box_size : float
        Box side [Mpc/h].
    n_mesh : int
        Mesh points per side.
    a : float
        Scale factor, in (0, 1.5].
    omega_m : float
        Matter density today, in (0, 1].
    los : int
        Line-of-sight mesh axis (0, 1 or 2).
    ells : sequence of int
        Multipole orders (default monopole, quadrupole, hexadecapole).
    window : {"cic", "tsc", "ngp"}
        Mass assignment; the window is deconvolved.
    interlace : bool
        Interlace the mesh (default True).
    k_edges : array_like or None
        Bin edges [h/Mpc].

    Returns
    -------
    Multipoles
        ``poles`` [(Mpc/h)^3], shot noise not subtracted.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pos, vel = rng.uniform(0, 100.0, (4096, 3)), np.zeros((4096, 3))
    >>> mp = multipoles(pos, vel, 100.0, 16, a=1.0, omega_m=0.3)
    >>> mp.poles.shape, mp.ells
    ((3, 14), (0, 2, 4))
    """
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    n = check_int(n_mesh, "n_mesh", 2)
    s = redshift_space_positions(positions, velocities, a, omega_m, box, los)
    delta = density_mesh(s, box, n, window=window, interlace=interlace, deconvolve=True)
    logger.debug("multipoles: %d particles, n=%d, L=%g, los=%d, a=%g", s.shape[0], n, box, los, a)
    return field_multipoles(delta, box, los=los, ells=ells, k_edges=k_edges)
