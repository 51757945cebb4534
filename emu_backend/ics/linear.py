"""Linear density and Zel'dovich displacement at z = 0 from white noise and a linear P(k).

The transform (SPEC section 4.2) is, with ``L`` the box size [Mpc/h], ``n`` cells per side,
``dV = (L/n)^3`` and ``noise_k = rfftn(noise) / n^1.5`` (orthonormal DFT, ``<|noise_k|^2> = 1``)::

    delta_k = sqrt(P(|k|) L^3) noise_k / dV          (numpy's unnormalised DFT of delta(x))
    Psi_k   = i k delta_k / |k|^2,   k = 0 mode zero
    delta(x), Psi(x) = irfftn(delta_k), irfftn(Psi_k)

so that ``<|delta_k|^2> dV^2 = P L^3`` (the field has power spectrum P, see
:func:`emu_backend.validation.power.power_spectrum`) and ``div Psi = -delta``, Psi in Mpc/h.

Two conventions, with the same amplitude normalisation:

``"reference"``
    Reproduces the published generator ``gen_fields.pk_to_dis`` (float32 golden vectors to ~1e-6):
    float32 wavenumbers and ``|k|^2``, the rfft axis using the first n/2+1 entries of ``fftfreq`` (its
    Nyquist entry is negative), no Nyquist treatment. One deliberate difference: a grid ``|k|`` below
    the first point of a tabulated P(k) is refused (the reference silently uses its last segment).
``"fourier"`` (default)
    float64 throughout. Every mode on a Nyquist plane (``|k_c| = n/2`` along any axis, even n) is set to
    zero in delta_k and hence in Psi_k. Both fields are then exactly the inverse transform of a
    Hermitian spectrum, the spectral ``div Psi = -delta`` holds to rounding on every mode, and no
    derivative has the ambiguous sign of a Nyquist frequency. All other modes equal the reference's.

The default box is the training resolution of the published emulators, ``L = 1000 n / 512`` Mpc/h.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import scipy.fft

from ..checks import check_float_dtype, check_positive
from ..errors import ComputationError, InputError
from .grid import check_displacement, check_field, nyquist_mask, wavevectors

__all__ = [
    "linear_density",
    "za_displacement",
    "displacement_from_density",
    "divergence",
    "default_box_size",
    "linear_arrays",
    "check_box_size",
    "BOX_SIZE_RANGE_MPC_H",
]

logger = logging.getLogger(__name__)

Convention = Literal["fourier", "reference"]
_CONVENTIONS = ("fourier", "reference")


#: Box sides [Mpc/h] a linear field is made in: 1 kpc/h to 10^6 Mpc/h (a hundred times the comoving
#: horizon), where the cell volume ``(L/n)^3``, ``|k|^2`` and ``P(k) L^3`` stay far inside float64.
BOX_SIZE_RANGE_MPC_H = (1e-3, 1e6)


def check_box_size(box_size) -> float:
    """``box_size`` [Mpc/h] as a float if it is in :data:`BOX_SIZE_RANGE_MPC_H`, else :class:`InputError`.

    Examples
    --------
    >>> check_box_size(1000)
    1000.0
    """
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    lo, hi = BOX_SIZE_RANGE_MPC_H
    if not lo <= box <= hi:
        raise InputError(f"box_size [Mpc/h] = {box_size!r} is outside the range a linear field is made in, "
                         f"[{lo:g}, {hi:g}] Mpc/h")
    return box


def default_box_size(n: int) -> float:
    """Box size [Mpc/h] of an n^3 grid at the emulators' training resolution, ``1000 n / 512``."""
    return 1000.0 * n / 512.0


def _evaluate_power(power, k: np.ndarray) -> np.ndarray:
    """P(k) [(Mpc/h)^3] on the grid wavenumbers ``k`` (all > 0), checked finite and >= 0."""
    if not callable(power):
        raise InputError(f"power must be a callable P(k) provider (k [h/Mpc] -> P [(Mpc/h)^3]), got {power!r}")
    try:
        p = power(k)
    except InputError as exc:
        raise InputError(
            f"the P(k) provider cannot cover the grid wavenumbers k in [{k.min():.6g}, {k.max():.6g}] h/Mpc: {exc}"
        ) from exc
    try:
        p = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ComputationError(f"P(k) provider returned {type(p).__name__}, not an array of numbers: {exc}") from exc
    if p.shape != k.shape:
        raise ComputationError(f"P(k) provider returned shape {p.shape} for k of shape {k.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ComputationError("P(k) provider returned negative or non-finite values on the grid")
    return p


def _spectra(noise, power, box_size, convention):
    """delta_k (unnormalised DFT, rfft grid, complex128), the three k_c and |k|^2 (k=0 entry 1)."""
    if convention not in _CONVENTIONS:
        raise InputError(f"convention must be one of {_CONVENTIONS}, got {convention!r}")
    arr = check_field(noise, "noise")
    n = arr.shape[0]
    box = default_box_size(n) if box_size is None else check_box_size(box_size)
    dv = (box / n) ** 3
    noise_k = scipy.fft.rfftn(arr.astype(np.float64, copy=False))
    if convention == "reference":
        # float32 wavenumbers; the rfft axis takes fftfreq's first n//2+1 entries (negative Nyquist)
        k1 = (np.fft.fftfreq(n) * n * (2.0 * np.pi / box)).astype(np.float32)
        kvec = (k1[:, None, None], k1[None, :, None], k1[None, None, : n // 2 + 1])
        k2 = kvec[0] ** 2 + kvec[1] ** 2 + kvec[2] ** 2  # float32, as the reference
        k2[0, 0, 0] = 1.0
        kmag = np.sqrt(k2).astype(np.float64)
        kmag[0, 0, 0] = kmag.ravel()[1]  # the k = 0 amplitude is zeroed below; keep P's range honest
        amp = np.sqrt(_evaluate_power(power, kmag) * box**3)
    else:
        kvec = wavevectors(n, box)
        mask = nyquist_mask(n)
        # |k|^2 = kf^2 m with integer m: evaluate P once per m instead of once per mode
        idx = [np.rint(k * box / (2.0 * np.pi)).astype(np.int64) for k in kvec]
        m = idx[0] ** 2 + idx[1] ** 2 + idx[2] ** 2
        m_max = int(m[mask].max())
        p_of_m = np.zeros(m_max + 1)
        if m_max > 0:
            p_of_m[1:] = _evaluate_power(power, (2.0 * np.pi / box) * np.sqrt(np.arange(1, m_max + 1.0)))
        amp = np.sqrt(p_of_m[np.where(mask, m, 0)] * box**3) * mask
        k2 = kvec[0] ** 2 + kvec[1] ** 2 + kvec[2] ** 2
        k2[0, 0, 0] = 1.0
    amp[0, 0, 0] = 0.0
    noise_k *= amp / (n**1.5 * dv)
    return noise_k, kvec, k2, box


def _displacement_from_spectrum(delta_k, kvec, k2, n, dtype) -> np.ndarray:
    out = np.empty((3, n, n, n), dtype=dtype)
    phi_k = delta_k * (1j / k2)  # i delta_k / |k|^2; the k = 0 entry of delta_k is already 0
    for c in range(3):
        out[c] = scipy.fft.irfftn(kvec[c] * phi_k, s=(n, n, n))
    return out


def linear_arrays(
    noise, power, box_size: float | None = None, *, convention: Convention = "fourier", dtype=np.float32
) -> tuple[np.ndarray, np.ndarray, float]:
    """Linear density (n, n, n), ZA displacement (3, n, n, n) [Mpc/h] and box side [Mpc/h] at z = 0.

    Arguments as :func:`emu_backend.ics.linear_field`, which wraps the result in
    :class:`~emu_backend.ics.InitialConditions`.
    """
    dt = check_float_dtype(dtype)
    delta_k, kvec, k2, box = _spectra(noise, power, box_size, convention)
    n = delta_k.shape[0]
    delta = scipy.fft.irfftn(delta_k, s=(n, n, n)).astype(dt)
    psi = _displacement_from_spectrum(delta_k, kvec, k2, n, dt)
    logger.debug("linear field n=%d L=%g convention=%s: std(delta)=%.4g", n, box, convention, float(delta.std()))
    return delta, psi, box


def za_displacement(
    noise, power, box_size: float | None = None, *, convention: Convention = "fourier", dtype=np.float32
) -> np.ndarray:
    """ZA displacement Psi [Mpc/h] at z = 0, shape (3, n, n, n); arguments as :func:`linear_arrays`.

    With ``convention="reference"`` and float32 this is the published ``pk_to_dis(k, P, noise)``.
    """
    dt = check_float_dtype(dtype)
    delta_k, kvec, k2, _ = _spectra(noise, power, box_size, convention)
    return _displacement_from_spectrum(delta_k, kvec, k2, delta_k.shape[0], dt)


def linear_density(
    noise, power, box_size: float | None = None, *, convention: Convention = "fourier", dtype=np.float32
) -> np.ndarray:
    """Linear density contrast delta(x) at z = 0, shape (n, n, n); arguments as :func:`linear_arrays`."""
    dt = check_float_dtype(dtype)
    delta_k, _, _, _ = _spectra(noise, power, box_size, convention)
    n = delta_k.shape[0]
    return scipy.fft.irfftn(delta_k, s=(n, n, n)).astype(dt)


def displacement_from_density(density, box_size: float, *, dtype=np.float64) -> np.ndarray:
    """ZA displacement ``Psi_k = i k delta_k / |k|^2`` [Mpc/h] of a density field (fourier convention).

    Parameters
    ----------
    density : ndarray, shape (n, n, n)
        Density contrast.
    box_size : float
        Box side [Mpc/h].
    dtype : float32 or float64
        Output dtype.

    Returns
    -------
    ndarray, shape (3, n, n, n)
        Psi with ``div Psi = -delta`` on every mode except k = 0 and the Nyquist planes (set to 0).
    """
    dt = check_float_dtype(dtype)
    delta = check_field(density, "density")
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    n = delta.shape[0]
    delta_k = scipy.fft.rfftn(delta.astype(np.float64, copy=False)) * nyquist_mask(n)
    delta_k[0, 0, 0] = 0.0
    kvec = wavevectors(n, box)
    k2 = kvec[0] ** 2 + kvec[1] ** 2 + kvec[2] ** 2
    k2[0, 0, 0] = 1.0
    return _displacement_from_spectrum(delta_k, kvec, k2, n, dt)


def divergence(displacement, box_size: float) -> np.ndarray:
    """Spectral divergence ``sum_c i k_c Psi_c`` of a vector field, Nyquist planes dropped.

    Parameters
    ----------
    displacement : ndarray, shape (3, n, n, n)
        Vector field [Mpc/h].
    box_size : float
        Box side [Mpc/h].

    Returns
    -------
    ndarray, shape (n, n, n), float64
        ``div Psi``, dimensionless for Psi in Mpc/h.
    """
    psi = check_displacement(displacement, "displacement")
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    n = psi.shape[1]
    kvec = wavevectors(n, box)
    mask = nyquist_mask(n)
    div_k = np.zeros((n, n, n // 2 + 1), dtype=np.complex128)
    for c in range(3):
        div_k += (1j * kvec[c]) * scipy.fft.rfftn(psi[c].astype(np.float64, copy=False))
    return scipy.fft.irfftn(div_k * mask, s=(n, n, n))
