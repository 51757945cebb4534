"""Density and momentum meshes from particles, for the power-spectrum and bispectrum estimators.

Conventions
-----------
* Mesh point ``(i, j, k)`` sits at ``(i, j, k) * H``, ``H = L / n`` (the convention of
  :func:`emu_backend.mesh.paint`, and of Pylians' ``MAS_library.MA``): a particle exactly on a mesh point
  deposits all its weight there.
* The overdensity is ``delta = n_cell / nbar - 1`` with ``nbar = N_particles / n^3`` (equal-mass particles).
* Window deconvolution divides the rfft of the mesh by ``W(k) = prod_i sinc(k_i H / 2)^p`` (p = 1, 2, 3 for
  NGP, CIC, TSC; :func:`emu_backend.mesh.window_fourier`); ``W = 1`` at k = 0, so the mean is unchanged.
* Interlacing (Sefusatti et al. 2016, arXiv:1512.07295) paints a second mesh with every particle shifted by
  ``+H/2`` along each axis, which samples the field at ``x - H/2 (1, 1, 1)``; in Fourier space it is
  realigned with the phase ``exp(+i (k_x + k_y + k_z) H / 2)`` and averaged with the first. The aliased
  images at ``k + 2 k_Nyq m`` with odd ``m_x + m_y + m_z`` pick up a sign ``-1`` and cancel.
* Returned meshes are float64 real-space arrays; the k = 0 mode of ``delta`` is set to zero, so its mean is 0
  up to round-off.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.fft
import torch

from ..checks import check_int, check_points, check_positive
from ..errors import InputError
from ..mesh.paint import check_window, paint, window_fourier
from .power import PowerSpectrum

__all__ = ["density_mesh", "momentum_mesh", "transfer_function"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20  # particles painted per torch call (bounds the (P, p^3) stencil memory)


# -- painting ----------------------------------------------------------------------------------
def _paint(pos: np.ndarray, box: float, n: int, window: str, weights: np.ndarray | None) -> np.ndarray:
    """Periodic paint in float64, chunked over particles; shape (n, n, n) or (C, n, n, n)."""
    shape = (n, n, n) if weights is None else (weights.shape[1], n, n, n)
    mesh = torch.zeros(shape, dtype=torch.float64)
    for start in range(0, pos.shape[0], _CHUNK):
        p = torch.from_numpy(pos[start : start + _CHUNK])
        w = None if weights is None else torch.from_numpy(weights[start : start + _CHUNK])
        mesh += paint(p, n, box, weights=w, window=window, periodic=True)
    return mesh.numpy()


def _interlace_phase(n: int) -> np.ndarray:
    """``exp(i (k_x + k_y + k_z) H / 2)`` on the rfft grid, shape (n, n, n//2 + 1)."""
    half_kh = np.pi * np.fft.fftfreq(n)  # k_i H / 2
    half_kh_z = np.pi * np.fft.rfftfreq(n)
    return np.exp(1j * (half_kh[:, None, None] + half_kh[None, :, None] + half_kh_z[None, None, :]))


def _painted_fields(pos, box, n, window, interlace, deconvolve, weights) -> np.ndarray:
    """Painted (C, n, n, n) real mesh(es) after interlacing/deconvolution, divided by nothing."""
    mesh = _paint(pos, box, n, window, weights)
    if not (interlace or deconvolve):
        return mesh
    axes = (-3, -2, -1)
    fk = scipy.fft.rfftn(mesh, axes=axes)
    if interlace:
        shifted = np.mod(pos + 0.5 * box / n, box)
        fk2 = scipy.fft.rfftn(_paint(shifted, box, n, window, weights), axes=axes)
        fk = 0.5 * (fk + fk2 * _interlace_phase(n))
    if deconvolve:
        fk /= window_fourier((n, n, n), window, rfft=True, dtype=torch.float64).numpy()
    return scipy.fft.irfftn(fk, s=(n, n, n), axes=axes)


def density_mesh(
    positions,
    box_size: float,
    n_mesh: int,
    window: str = "cic",
    interlace: bool = False,
    deconvolve: bool = True,
) -> np.ndarray:
    """Overdensity ``delta`` of equal-mass particles on a periodic ``n_mesh^3`` mesh.

    Parameters
    ----------
    positions : array_like, shape (N, 3)
        Particle positions [Mpc/h]; wrapped periodically into ``[0, box_size)``.
    box_size : float
        Box side [Mpc/h].
    n_mesh : int
        Mesh points per side (>= 2).
    window : {"cic", "tsc", "ngp"}
        Mass-assignment scheme.
    interlace : bool
        Average with a mesh of the particles shifted by half a cell (Fourier-space phase), which cancels the
        leading aliased images.
    deconvolve : bool
        Divide by the Fourier window ``W(k)`` of the scheme.

    Returns
    -------
    ndarray, shape (n_mesh, n_mesh, n_mesh), float64
        ``delta = n / nbar - 1``, dimensionless, mean 0 up to round-off. Without interlacing and
        deconvolution it is exactly the painted counts over their mean, minus 1.

    Examples
    --------
    >>> q = np.arange(8) * 10.0 / 8  # a lattice of 8^3 particles in a 10 Mpc/h box
    >>> lattice = np.stack(np.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3)
    >>> float(np.abs(density_mesh(lattice, 10.0, 8, interlace=True)).max())
    0.0
    """
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    n = check_int(n_mesh, "n_mesh", 2)
    window = check_window(window)
    pos = np.mod(check_points(positions, "positions", "Mpc/h"), box)
    nbar = pos.shape[0] / float(n) ** 3
    mesh = _painted_fields(pos, box, n, window, bool(interlace), bool(deconvolve), None)
    delta = mesh / nbar - 1.0
    if interlace or deconvolve:
        delta -= delta.mean()  # the k = 0 mode is exactly 0 in theory; remove round-off
    logger.debug("density mesh: %d particles, n=%d, L=%g, %s, interlace=%s", pos.shape[0], n, box, window, interlace)
    return delta


def momentum_mesh(
    positions,
    velocities,
    box_size: float,
    n_mesh: int,
    window: str = "cic",
    interlace: bool = False,
    deconvolve: bool = True,
) -> np.ndarray:
    """Momentum density ``(1 + delta) v`` [km/s] of equal-mass particles on a periodic mesh.

    Each component is the painted sum of the particle velocities divided by the mean particle count per mesh
    point, so its mean over the mesh is the mean particle velocity.

    Parameters
    ----------
    positions : array_like, shape (N, 3)
        Particle positions [Mpc/h].
    velocities : array_like, shape (N, 3)
        Peculiar velocities [km/s].
    box_size, n_mesh, window, interlace, deconvolve
        As :func:`density_mesh`.

    Returns
    -------
    ndarray, shape (3, n_mesh, n_mesh, n_mesh), float64
        Component ``c`` is the momentum along axis ``c`` [km/s].

    Examples
    --------
    >>> pos = np.random.default_rng(0).uniform(0, 10.0, (1000, 3))
    >>> vel = np.tile([100.0, 0.0, -50.0], (1000, 1))
    >>> mom = momentum_mesh(pos, vel, 10.0, 8)
    >>> np.round(mom.mean(axis=(1, 2, 3)), 6).tolist()
    [100.0, 0.0, -50.0]
    """
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    n = check_int(n_mesh, "n_mesh", 2)
    window = check_window(window)
    pos = np.mod(check_points(positions, "positions", "Mpc/h"), box)
    vel = check_points(velocities, "velocities", "km/s")
    if vel.shape != pos.shape:
        raise InputError(f"velocities shape {vel.shape} differs from positions shape {pos.shape}")
    nbar = pos.shape[0] / float(n) ** 3
    return _painted_fields(pos, box, n, window, bool(interlace), bool(deconvolve), vel) / nbar


def transfer_function(p_test: PowerSpectrum, p_ref: PowerSpectrum) -> np.ndarray:
    """Transfer function ``T(k) = sqrt(P_test / P_ref)`` of two spectra on the same bins.

    Parameters
    ----------
    p_test, p_ref : PowerSpectrum
        Spectra with identical ``k_edges`` and ``box_size`` (e.g. emulator and reference N-body).

    Returns
    -------
    ndarray, shape (n_bins,)
        Dimensionless; NaN where a bin is empty, ``P_ref <= 0`` or the ratio is negative.

    Examples
    --------
    >>> from emu_backend.validation.power import power_spectrum
    >>> g = np.random.default_rng(1).standard_normal((8, 8, 8))
    >>> t = transfer_function(power_spectrum(2 * g, 8.0), power_spectrum(g, 8.0))
    >>> bool(np.allclose(t[np.isfinite(t)], 2.0))
    True
    """
    for name, p in (("p_test", p_test), ("p_ref", p_ref)):
        if not isinstance(p, PowerSpectrum):
            raise InputError(f"{name} must be a PowerSpectrum, got {type(p).__name__}")
    if p_test.box_size != p_ref.box_size or not np.array_equal(p_test.k_edges, p_ref.k_edges):
        raise InputError(
            f"p_test and p_ref must share box_size and k_edges; got box sizes {p_test.box_size} and "
            f"{p_ref.box_size} Mpc/h and {p_test.k_edges.size} and {p_ref.k_edges.size} edges"
        )
    ratio = np.full(p_ref.power.shape, np.nan)
    ok = np.isfinite(p_test.power) & np.isfinite(p_ref.power) & (p_ref.power > 0)
    ratio[ok] = p_test.power[ok] / p_ref.power[ok]
    ratio[ratio < 0] = np.nan
    return np.sqrt(ratio)
