"""Seeded Gaussian white noise on the particle grid, with Quijote-style fixed and paired variants.

The noise is the random input of the linear field (:mod:`emu_backend.ics.linear`): unit-variance
float32 values on an (n, n, n) grid, drawn from ``np.random.Generator(np.random.PCG64(seed))``. NumPy
guarantees that stream for a given seed and version of the bit generator, so a seed reproduces the
same field across runs and machines.

* ``fixed_amplitude=True``: every Fourier amplitude is set to its rms, ``|noise_k| = n^1.5`` (numpy's
  unnormalised DFT), keeping the phases; the k = 0 mode is set to 0 (Quijote "fixed" ICs, Angulo &
  Pontzen 2016).
* ``paired=True``: the field is multiplied by -1, i.e. every phase shifted by pi (Quijote "paired").

:func:`zero_central_planes` reproduces the reference generator's real-space plane zeroing (SPEC 4.2
step 5); it is separate because it is not a Fourier Nyquist cut.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.fft

from ..checks import check_int
from ..errors import InputError
from .grid import check_field

__all__ = ["white_noise", "fix_amplitude", "zero_central_planes"]

logger = logging.getLogger(__name__)


def white_noise(
    n: int,
    seed: int,
    *,
    fixed_amplitude: bool = False,
    paired: bool = False,
    zero_planes: bool = False,
) -> np.ndarray:
    """Unit-variance Gaussian white noise on an (n, n, n) grid, reproducible for a given seed.

    Parameters
    ----------
    n : int
        Cells per side, >= 2.
    seed : int
        Non-negative seed of the PCG64 bit generator.
    fixed_amplitude : bool
        Set every Fourier amplitude to its rms (phases kept, k = 0 mode zeroed); see
        :func:`fix_amplitude`.
    paired : bool
        Return the phase-flipped partner, ``-noise``.
    zero_planes : bool
        Apply :func:`zero_central_planes` last (the reference generator's habit).

    Returns
    -------
    ndarray, shape (n, n, n), float32
        The noise field.

    Examples
    --------
    >>> a = white_noise(8, seed=1)
    >>> b = white_noise(8, seed=1, paired=True)
    >>> bool(np.all(a + b == 0)), a.dtype.name
    (True, 'float32')
    """
    n = check_int(n, "grid size n", 2)
    rng = np.random.Generator(np.random.PCG64(check_int(seed, "seed", 0)))
    noise = rng.standard_normal((n,) * 3, dtype=np.float32)
    if fixed_amplitude:
        noise = fix_amplitude(noise)
    if paired:
        noise = -noise
    if zero_planes:
        noise = zero_central_planes(noise)
    logger.debug("white noise n=%d seed=%d fixed=%s paired=%s", n, seed, fixed_amplitude, paired)
    return noise


def fix_amplitude(noise) -> np.ndarray:
    """Set every Fourier amplitude of a unit-variance noise field to its rms, keeping the phases.

    ``noise_k -> n^1.5 noise_k / |noise_k|`` for k != 0 (``n^3`` is ``<|noise_k|^2>`` of unit-variance
    white noise under numpy's unnormalised DFT); the k = 0 mode is set to 0. Self-conjugate modes
    (real coefficients) keep their sign. Computed in float64.

    Parameters
    ----------
    noise : ndarray, shape (n, n, n)
        Real noise field.

    Returns
    -------
    ndarray, shape (n, n, n), float32
    """
    arr = check_field(noise, "noise")
    n = arr.shape[0]
    noise_k = scipy.fft.rfftn(arr.astype(np.float64))
    amp = np.abs(noise_k)
    if np.any(amp.ravel()[1:] == 0):
        raise InputError("noise has a Fourier mode of exactly zero amplitude; its phase is undefined")
    amp.ravel()[0] = 1.0
    noise_k *= n**1.5 / amp
    noise_k.ravel()[0] = 0.0
    return scipy.fft.irfftn(noise_k, s=arr.shape).astype(np.float32)


def zero_central_planes(noise) -> np.ndarray:
    """Return a copy with the real-space planes ``[n//2,:,:]``, ``[:,n//2,:]``, ``[:,:,n//2]`` set to 0.

    This is what the reference generator does to its noise before ``pk_to_dis`` (SPEC 4.2 step 5),
    apparently meant as a Nyquist cut but done in configuration space. Needed to reproduce reference
    fields; not recommended otherwise (it removes ~3/n of the variance and correlates modes).

    Parameters
    ----------
    noise : ndarray, shape (n, n, n)

    Returns
    -------
    ndarray, shape (n, n, n), same dtype
    """
    out = np.array(check_field(noise, "noise"), copy=True)
    c = out.shape[0] // 2
    out[c, :, :] = 0
    out[:, c, :] = 0
    out[:, :, c] = 0
    return out
