"""The ICs' grid conventions: input validation of cubic fields and the rfft wavenumber grid and Nyquist mask.

Fourier conventions used throughout :mod:`emu_backend.ics`: ``scipy.fft.rfftn`` / ``irfftn`` with
the default ("backward") normalisation over the three axes of an (n, n, n) real field, so the last
axis holds the n//2 + 1 non-negative frequencies. Wavenumbers are ``2 pi / L`` times the integer
frequency [h/Mpc]. "Nyquist plane" means the modes with ``|k_c| = n/2`` (even n only) along any axis.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["check_field", "check_displacement", "wavevectors", "nyquist_mask"]


def check_field(field, name: str = "field") -> np.ndarray:
    """Validate a real cubic scalar field of shape (n, n, n) with n >= 2 and finite values."""
    arr = np.asarray(field)
    if arr.ndim != 3 or len(set(arr.shape)) != 1:
        raise InputError(f"{name} must be a cubic array of shape (n, n, n), got shape {arr.shape}")
    _check_common(arr, name)
    return arr


def check_displacement(field, name: str = "displacement") -> np.ndarray:
    """Validate a real cubic vector field of shape (3, n, n, n) with n >= 2 and finite values."""
    arr = np.asarray(field)
    if arr.ndim != 4 or arr.shape[0] != 3 or len(set(arr.shape[1:])) != 1:
        raise InputError(f"{name} must have shape (3, n, n, n), got shape {arr.shape}")
    _check_common(arr, name)
    return arr


def _check_common(arr: np.ndarray, name: str) -> None:
    if arr.shape[-1] < 2:
        raise InputError(f"{name} needs n >= 2 cells per side, got n = {arr.shape[-1]}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains {int(np.count_nonzero(~np.isfinite(arr)))} non-finite value(s)")


def wavevectors(n: int, box_size: float, dtype=np.float64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable wavevector components [h/Mpc] of the rfftn grid of an (n, n, n) field.

    Returns
    -------
    kx, ky, kz : ndarray
        Shapes (n, 1, 1), (1, n, 1), (1, 1, n//2 + 1). ``kx`` and ``ky`` follow ``fftfreq`` (the Nyquist
        entry of even n is negative); ``kz`` is ``rfftfreq`` (Nyquist entry positive).
    """
    kf = 2.0 * np.pi / box_size
    k_full = (np.fft.fftfreq(n, d=1.0 / n) * kf).astype(dtype)
    k_half = (np.fft.rfftfreq(n, d=1.0 / n) * kf).astype(dtype)
    return k_full[:, None, None], k_full[None, :, None], k_half[None, None, :]


def nyquist_mask(n: int) -> np.ndarray:
    """Boolean rfftn-grid mask, shape (n, n, n//2 + 1): True off every Nyquist plane.

    For odd n there is no Nyquist frequency and the mask is all True.
    """
    full = np.ones(n, dtype=bool)
    half = np.ones(n // 2 + 1, dtype=bool)
    if n % 2 == 0:
        full[n // 2] = False
        half[-1] = False
    return full[:, None, None] & full[None, :, None] & half[None, None, :]
