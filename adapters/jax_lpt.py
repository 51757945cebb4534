"""The spectral operators of our ICs and 2LPT in ``jax.numpy``, for differentiable JAX pipelines.

JAX twins of :func:`emu_backend.ics.linear.divergence`, :func:`emu_backend.ics.displacement_from_density`
and :func:`emu_backend.ics.lpt.second_order_displacement`, with the same conventions: ``rfftn`` over the
three axes, wavevectors and Nyquist mask from :mod:`emu_backend.ics.grid`, every Nyquist-plane mode and
the k = 0 mode dropped. They compute in the inputs' float dtype (float64 under JAX's x64) and are
differentiable to any order. The tests compare them with the NumPy functions to float64 round-off.
"""

from __future__ import annotations

import numpy as np

from ..ics.grid import nyquist_mask, wavevectors
from .jax_bridge import jax_module

__all__ = ["divergence", "displacement_from_density", "second_order_displacement"]

_PAIRS = ((0, 1), (0, 2), (1, 2))


def _spectral(n: int, box_size: float, dtype):
    """Wavevectors [h/Mpc] (broadcastable), |k|^2 with k = 0 set to 1, and the float mask of kept modes."""
    jnp = jax_module().numpy
    k_np = wavevectors(n, float(box_size))
    k2 = k_np[0] ** 2 + k_np[1] ** 2 + k_np[2] ** 2
    k2[0, 0, 0] = 1.0
    keep = nyquist_mask(n).astype(np.float64)
    keep[0, 0, 0] = 0.0
    return [jnp.asarray(k, dtype=dtype) for k in k_np], jnp.asarray(k2, dtype=dtype), jnp.asarray(keep, dtype=dtype)


def divergence(displacement, box_size: float):
    """Spectral ``div Psi`` (dimensionless) of a (3, n, n, n) field [Mpc/h], Nyquist planes dropped.

    Unlike the NumPy twin, the k = 0 mode is dropped too (it is zero for any periodic field).
    """
    jnp = jax_module().numpy
    psi = jnp.asarray(displacement)
    n = psi.shape[-1]
    kvec, _, keep = _spectral(n, box_size, psi.dtype)
    div_k = sum(1j * kvec[c] * jnp.fft.rfftn(psi[c]) for c in range(3))
    return jnp.fft.irfftn(div_k * keep, s=(n, n, n))


def displacement_from_density(density, box_size: float):
    """ZA displacement ``Psi_k = i k delta_k / |k|^2`` [Mpc/h], shape (3, n, n, n), of a density contrast."""
    jnp = jax_module().numpy
    delta = jnp.asarray(density)
    n = delta.shape[-1]
    kvec, k2, keep = _spectral(n, box_size, delta.dtype)
    phi_k = jnp.fft.rfftn(delta) * keep * (1j / k2)
    return jnp.stack([jnp.fft.irfftn(kvec[c] * phi_k, s=(n, n, n)) for c in range(3)])


def second_order_displacement(displacement, box_size: float):
    """2LPT displacement ``Psi2 = grad phi2`` [Mpc/h], ``lap phi2 = sum_{i<j} (phi_ii phi_jj - phi_ij^2)``.

    Normalised as :func:`emu_backend.ics.lpt.second_order_displacement` (``x = q + D Psi1 + D2 Psi2``),
    quadratic in the (3, n, n, n) first-order displacement ``Psi1`` [Mpc/h].
    """
    jnp = jax_module().numpy
    psi = jnp.asarray(displacement)
    n = psi.shape[-1]
    kvec, k2, keep = _spectral(n, box_size, psi.dtype)
    delta_k = -sum(1j * kvec[c] * jnp.fft.rfftn(psi[c]) for c in range(3)) * keep / k2

    def phi(i, j):
        return jnp.fft.irfftn(kvec[i] * kvec[j] * delta_k, s=(n, n, n))

    diag = [phi(c, c) for c in range(3)]
    source = diag[0] * diag[1] + diag[0] * diag[2] + diag[1] * diag[2]
    for i, j in _PAIRS:
        source = source - phi(i, j) ** 2
    phi2_k = jnp.fft.rfftn(source) * keep / -k2
    return jnp.stack([jnp.fft.irfftn(1j * kvec[c] * phi2_k, s=(n, n, n)) for c in range(3)])
