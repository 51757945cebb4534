"""White noise -> linear density and Zel'dovich displacement at z = 0, in torch, differentiably.

The torch twin of :func:`emu_backend.ics.linear_field` in its ``"fourier"`` convention (float64 wavenumbers,
every Nyquist-plane mode and the k = 0 mode set to zero), with gradients flowing to the noise and to the
parameters of the power spectrum. With ``L`` the box [Mpc/h], ``n`` cells per side, ``dV = (L/n)^3`` and
``noise_k = rfftn(noise) / n^1.5``::

    delta_k = sqrt(P(|k|) L^3) noise_k / dV,    Psi_k = i k delta_k / |k|^2

The wavevector grid and the Nyquist mask are those of :mod:`emu_backend.ics.grid`; the tests compare the
fields with :func:`emu_backend.ics.linear_field` to float64 round-off.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..ics.grid import nyquist_mask, wavevectors

__all__ = ["linear_fields"]


def linear_fields(noise: torch.Tensor, power: Callable[[torch.Tensor], torch.Tensor], box_size: float, *,
                  density: bool = True, displacement: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Linear density contrast and ZA displacement at z = 0 of white noise with the power spectrum ``power``.

    Parameters
    ----------
    noise : Tensor, shape (n, n, n)
        Unit-variance white noise (float32 or float64); gradients flow to it.
    power : callable
        ``power(k)`` -> P(k) at z = 0 [(Mpc/h)^3] for a 1-d tensor of wavenumbers k [h/Mpc], in torch ops
        (e.g. :func:`emu_backend.cosmology.linear_power.eisenstein_hu_power` with tensor parameters), so that gradients flow to its
        parameters.
    box_size : float
        Box side [Mpc/h].
    density : bool
        Also return the density contrast (one more inverse FFT).
    displacement : bool
        Return the displacement (three inverse FFTs); False: ``Psi`` is None.

    Returns
    -------
    (Tensor or None, Tensor or None)
        ``delta`` (n, n, n), dimensionless, and ``Psi`` (3, n, n, n) [Mpc/h], in the noise's dtype.
    """
    n = noise.shape[0]
    dtype, device = noise.dtype, noise.device
    box = float(box_size)
    kvec = [torch.from_numpy(np.broadcast_to(k, (n, n, n // 2 + 1)).copy()).to(device) for k in wavevectors(n, box)]
    k2 = kvec[0] ** 2 + kvec[1] ** 2 + kvec[2] ** 2
    keep = torch.from_numpy(nyquist_mask(n)).to(device)
    keep[0, 0, 0] = False
    k2 = torch.where(keep, k2, torch.ones_like(k2))
    amplitude = torch.zeros(k2.shape, dtype=torch.float64, device=device)
    dv = (box / n) ** 3
    p = power(torch.sqrt(k2[keep]))
    amplitude = amplitude.masked_scatter(keep, torch.sqrt(p * box**3) / (n**1.5 * dv))
    delta_k = torch.fft.rfftn(noise.to(torch.float64)) * amplitude
    psi = None
    if displacement:
        phi_k = delta_k * (1j / k2)  # i delta_k / |k|^2
        psi = torch.stack([torch.fft.irfftn(k * phi_k, s=(n, n, n)) for k in kvec]).to(dtype)
    delta = torch.fft.irfftn(delta_k, s=(n, n, n)).to(dtype) if density else None
    return delta, psi
