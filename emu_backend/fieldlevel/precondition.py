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
from ..errors import InputError
from .likelihood import FieldLikelihood

__all__ = ["fourier_scale", "hessian_scale", "to_noise", "from_noise", "shell_index"]


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


def shell_index(n: int) -> np.ndarray:
    """|k| in units of the fundamental, rounded: the shell of each mode in ``rfftn``'s layout (n, n, n // 2 + 1)."""
    f = np.fft.fftfreq(n) * n
    h = np.fft.rfftfreq(n) * n
    return np.rint(np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + h[None, None, :] ** 2)).astype(int)


def hessian_scale(lik: FieldLikelihood, noise: np.ndarray, theta: dict | None = None, *, probes: int = 2,
                  step: float = 1e-3, seed: int = 0) -> np.ndarray:
    """The posterior's measured curvature per |k| shell at ``noise``, as the std ``h^(-1/2)`` per mode.

    The nonlinear forward model answers a large-scale mode far more strongly than linear theory (the
    small-scale structure it modulates responds too: measured 68x the linear model's curvature for the
    fundamental mode of a 32^3 box at z = 0.5), so :func:`fourier_scale` under-preconditions exactly the
    stiffest modes. Here the curvature is measured: for ``probes`` white vectors ``v`` the Hessian-vector
    product ``H v`` of ``-log p`` (the parameters fixed at ``theta``) is the central difference of two
    gradients at ``noise +- step v``, and per shell ``h = sum Re(F[Hv] conj F[v]) / sum |F[v]|^2`` over the
    shell's modes and the probes; ``h`` is at least 1 (the prior's curvature: a shell whose estimate falls
    below, from a non-convex likelihood or probe noise, takes the prior's).

    Parameters
    ----------
    lik : FieldLikelihood
    noise : ndarray, shape (N, N, N)
        Where to measure (the MAP, the sampler's starting point).
    theta : dict, optional
        Values of the inferred parameters there (default the model cosmology's).
    probes : int
        Random vectors (each costs two gradients).
    step : float
        Finite-difference step per voxel of the white noise.
    seed : int
        Seed of the probe vectors.

    Returns
    -------
    ndarray, shape (N, N, N // 2 + 1)
        Per mode, ``rfftn`` layout; values in (0, 1].
    """
    n = lik.model.grid
    w = torch.as_tensor(np.asarray(noise, np.float64))
    if tuple(w.shape) != (n,) * 3:
        raise InputError(f"noise must have shape {(n,) * 3}, got {tuple(w.shape)}")

    cosmology = lik.model.cosmology
    at = {k: float(getattr(cosmology, k)) for k in lik.infer} if theta is None else {k: float(v) for k, v in theta.items()}

    def grad(x):
        x = x.clone().requires_grad_(True)
        return torch.autograd.grad(-lik.log_prob(x, **at), x)[0].double().numpy()

    shells = shell_index(n)
    weight = np.ones(shells.shape)
    weight[..., 1:(n + 1) // 2] = 2.0  # rfft: the interior planes stand for two modes each
    num = np.zeros(shells.max() + 1)
    den = np.zeros(shells.max() + 1)
    rng = np.random.default_rng(seed)
    for _ in range(probes):
        v = rng.normal(size=(n,) * 3)
        hv = (grad(w + step * torch.from_numpy(v)) - grad(w - step * torch.from_numpy(v))) / (2 * step)
        fv, fh = np.fft.rfftn(v), np.fft.rfftn(hv)
        num += np.bincount(shells.ravel(), (weight * (fh * fv.conj()).real).ravel(), minlength=num.size)
        den += np.bincount(shells.ravel(), (weight * np.abs(fv) ** 2).ravel(), minlength=den.size)
    h = np.maximum(num / np.maximum(den, 1e-300), 1.0)
    return 1.0 / np.sqrt(h[shells])


def to_noise(u: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``w = A u``: the white noise (..., N, N, N) of preconditioned coordinates ``u`` (same shape)."""
    shape = u.shape[-3:]
    return np.fft.irfftn(np.fft.rfftn(u, axes=(-3, -2, -1)) * scale, s=shape, axes=(-3, -2, -1))


def from_noise(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``u = A^-1 w``: the preconditioned coordinates of a white noise (..., N, N, N)."""
    shape = w.shape[-3:]
    return np.fft.irfftn(np.fft.rfftn(w, axes=(-3, -2, -1)) / scale, s=shape, axes=(-3, -2, -1))
