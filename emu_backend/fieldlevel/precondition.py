"""A Fourier-space preconditioner of the white noise for NUTS: the linear model's posterior std per mode.

The white noise's posterior is badly conditioned in its own coordinates: a large-scale Fourier mode that
the data pin down has a posterior std of ``(1 + a_k^2 / sigma^2)^(-1/2)`` (a few per cent at z ~ 0 for
noise 0.5 per cell), a noise-dominated one a std of ~1, and NUTS's diagonal mass matrix (one number per
voxel) cannot tell them apart: the step size follows the narrowest modes and the trajectories the widest,
hundreds of gradients per draw. Sampling ``u`` with ``w = A u``, ``A`` the Fourier multiplier ``s_k``
equal to the linear model's posterior std of mode ``k``, makes the linear model's posterior an identity
in ``u``; the emulator's is close to it on the scales where it is close to linear. The density of ``u``
is the prior of ``w = A u`` times ``|det A|``, a constant (``s_k`` is fixed at the model's cosmology), so
the posterior of ``w`` is unchanged: the change of coordinates only changes how NUTS moves. This is a
mass matrix diagonal in Fourier space (as in BORG's HMC, Jasche & Wandelt 2013), written as a
reparametrisation because numpyro's adaptation learns diagonal or dense matrices only; its diagonal
adaptation still runs on ``u``.

``a_k`` is measured, not written out: the linear model's response to a unit impulse (it is a Fourier
multiplier: ``delta_k = a_k w_k``), at the forward model's cosmology, redshift and linear P(k). The data
enter as the mean inverse noise variance over the observed voxels times the observed fraction (a mask or a
noise map makes the true posterior non-diagonal in Fourier space; the preconditioner is then approximate,
still exact in what it samples), scaled from the data's mesh to the particle grid.
"""

from __future__ import annotations

import numpy as np
import torch

from ..differentiable import ForwardModel
from .likelihood import FieldLikelihood

__all__ = ["fourier_scale", "to_noise", "from_noise"]


def fourier_scale(lik: FieldLikelihood) -> np.ndarray:
    """The linear model's posterior std ``s_k = (1 + f a_k^2 <1/sigma^2> (n_mesh / N)^3)^(-1/2)`` per mode.

    Parameters
    ----------
    lik : FieldLikelihood

    Returns
    -------
    ndarray, shape (N, N, N // 2 + 1)
        In ``numpy.fft.rfftn``'s layout for the (N, N, N) white noise; values in (0, 1].
    """
    fm = lik.model
    n = fm.grid
    linear = ForwardModel(n, fm.box_size, fm.zs[0], dynamics="linear", cosmology=fm.cosmology, power=fm.power)
    impulse = torch.zeros((n,) * 3, dtype=torch.float64)
    impulse[0, 0, 0] = 1.0
    with torch.no_grad():
        response = linear(impulse).double().numpy()
    a2 = np.abs(np.fft.rfftn(response)) ** 2
    observed = lik.mask
    inv_var = np.broadcast_to(1.0 / np.asarray(lik.noise_sigma, np.float64) ** 2, observed.shape)[observed]
    weight = observed.mean() * (inv_var.mean() if inv_var.size else 0.0) * (fm.n_mesh / n) ** 3
    return 1.0 / np.sqrt(1.0 + weight * a2)


def to_noise(u: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``w = A u``: the white noise (..., N, N, N) of preconditioned coordinates ``u`` (same shape)."""
    shape = u.shape[-3:]
    return np.fft.irfftn(np.fft.rfftn(u, axes=(-3, -2, -1)) * scale, s=shape, axes=(-3, -2, -1))


def from_noise(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``u = A^-1 w``: the preconditioned coordinates of a white noise (..., N, N, N)."""
    shape = w.shape[-3:]
    return np.fft.irfftn(np.fft.rfftn(w, axes=(-3, -2, -1)) / scale, s=shape, axes=(-3, -2, -1))
