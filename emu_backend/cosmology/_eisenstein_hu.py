"""Eisenstein & Hu (1998) fitting formulae for the matter transfer function (private).

Equations of Eisenstein & Hu 1998, ApJ 496, 605 ("EH98"): the full form with baryon acoustic
oscillations (their section 3, eqs. 2-24) and the zero-baryon "no-wiggle" shape (section 4.2, eqs.
26-31). Pure float64 functions of NumPy arrays or, where any argument is a torch tensor, of torch tensors
(differentiable in k and in every cosmological parameter); wavenumbers here are in 1/Mpc (no h), as in the
paper. The public providers, :class:`emu_backend.cosmology.EisensteinHuPower` and
:func:`emu_backend.cosmology.linear_power.eisenstein_hu_power`, convert from h/Mpc.
"""

from __future__ import annotations

import types

import numpy as np
import torch

__all__ = ["T_CMB_K", "transfer_wiggle", "transfer_no_wiggle", "sound_horizon_mpc"]

#: CMB temperature today [K] (Fixsen 2009).
T_CMB_K = 2.7255

_NUMPY = types.SimpleNamespace(log=np.log, sqrt=np.sqrt, exp=np.exp, sinc=np.sinc, cbrt=np.cbrt)
_TORCH = types.SimpleNamespace(log=torch.log, sqrt=torch.sqrt, exp=torch.exp, sinc=torch.sinc,
                               cbrt=lambda x: x ** (1.0 / 3.0))  # every argument of cbrt here is > 0


def _inputs(*values):
    """The math namespace of the arguments and the arguments as float64 (tensors if any is a tensor)."""
    if any(isinstance(v, torch.Tensor) for v in values):
        device = next(v.device for v in values if isinstance(v, torch.Tensor))
        return _TORCH, [torch.as_tensor(v, dtype=torch.float64, device=device) for v in values]
    return _NUMPY, [np.asarray(v, dtype=np.float64) for v in values]


def _tilde_t0(xp, q, alpha_c, beta_c):
    """EH98 eqs. 19-20: the pressureless transfer shape ``T0~(k, alpha_c, beta_c)``."""
    ln_term = xp.log(np.e + 1.8 * beta_c * q)
    c = 14.2 / alpha_c + 386.0 / (1.0 + 69.9 * q**1.08)
    return ln_term / (ln_term + c * q**2)


def _scales(xp, omega_m_h2, omega_b_h2, t_cmb_k):
    """Characteristic scales of EH98 section 2: z_eq, k_eq, z_d, R_eq, R_d, sound horizon s."""
    theta = t_cmb_k / 2.7
    z_eq = 2.50e4 * omega_m_h2 * theta**-4
    k_eq = 7.46e-2 * omega_m_h2 * theta**-2  # 1/Mpc
    b1 = 0.313 * omega_m_h2**-0.419 * (1.0 + 0.607 * omega_m_h2**0.674)
    b2 = 0.238 * omega_m_h2**0.223
    z_d = 1291.0 * omega_m_h2**0.251 / (1.0 + 0.659 * omega_m_h2**0.828) * (1.0 + b1 * omega_b_h2**b2)
    r_eq = 31.5 * omega_b_h2 * theta**-4 * (z_eq / 1e3) ** -1
    r_d = 31.5 * omega_b_h2 * theta**-4 * (z_d / 1e3) ** -1
    s = (
        2.0 / (3.0 * k_eq) * xp.sqrt(6.0 / r_eq)
        * xp.log((xp.sqrt(1.0 + r_d) + xp.sqrt(r_d + r_eq)) / (1.0 + xp.sqrt(r_eq)))
    )  # Mpc
    return z_eq, k_eq, z_d, r_eq, r_d, s


def sound_horizon_mpc(omega_m: float, omega_b: float, h: float, t_cmb_k: float = T_CMB_K) -> float:
    """Sound horizon at the drag epoch, EH98 eq. 6 [Mpc]."""
    return float(_scales(_NUMPY, np.float64(omega_m * h**2), np.float64(omega_b * h**2), t_cmb_k)[5])


def transfer_wiggle(k_mpc, omega_m: float, omega_b: float, h: float, t_cmb_k: float = T_CMB_K):
    """Full EH98 transfer function with baryon acoustic oscillations.

    Parameters
    ----------
    k_mpc : ndarray or Tensor
        Wavenumbers [1/Mpc], any shape, > 0.
    omega_m, omega_b, h : float or 0-d Tensor
        Matter and baryon density today, dimensionless Hubble constant.
    t_cmb_k : float
        CMB temperature [K].

    Returns
    -------
    ndarray or Tensor
        ``T(k)``, same shape as ``k_mpc``, normalised to 1 as k -> 0 (a float64 tensor if any argument is one).
    """
    xp, (k, omega_m, omega_b, h) = _inputs(k_mpc, omega_m, omega_b, h)
    om_h2 = omega_m * h**2
    ob_h2 = omega_b * h**2
    f_b = omega_b / omega_m
    f_c = 1.0 - f_b
    z_eq, k_eq, z_d, r_eq, r_d, s = _scales(xp, om_h2, ob_h2, t_cmb_k)
    k_silk = 1.6 * ob_h2**0.52 * om_h2**0.73 * (1.0 + (10.4 * om_h2) ** -0.95)  # eq. 7, 1/Mpc
    q = k / (13.41 * k_eq)  # eq. 10

    # cold dark matter, eqs. 9-12 and 17-18
    a1 = (46.9 * om_h2) ** 0.670 * (1.0 + (32.1 * om_h2) ** -0.532)
    a2 = (12.0 * om_h2) ** 0.424 * (1.0 + (45.0 * om_h2) ** -0.582)
    alpha_c = a1**-f_b * a2 ** (-(f_b**3))
    bb1 = 0.944 / (1.0 + (458.0 * om_h2) ** -0.708)
    bb2 = (0.395 * om_h2) ** -0.0266
    beta_c = 1.0 / (1.0 + bb1 * (f_c**bb2 - 1.0))
    ks = k * s
    f = 1.0 / (1.0 + (ks / 5.4) ** 4)
    t_c = f * _tilde_t0(xp, q, 1.0, beta_c) + (1.0 - f) * _tilde_t0(xp, q, alpha_c, beta_c)

    # baryons, eqs. 14-15 and 21-24
    y = (1.0 + z_eq) / (1.0 + z_d)
    sq = xp.sqrt(1.0 + y)
    g_y = y * (-6.0 * sq + (2.0 + 3.0 * y) * xp.log((sq + 1.0) / (sq - 1.0)))
    alpha_b = 2.07 * k_eq * s * (1.0 + r_d) ** -0.75 * g_y
    beta_node = 8.41 * om_h2**0.435
    beta_b = 0.5 + f_b + (3.0 - 2.0 * f_b) * xp.sqrt((17.2 * om_h2) ** 2 + 1.0)
    s_tilde = s / xp.cbrt(1.0 + (beta_node / ks) ** 3)
    t_b = (
        _tilde_t0(xp, q, 1.0, 1.0) / (1.0 + (ks / 5.2) ** 2)
        + alpha_b / (1.0 + (beta_b / ks) ** 3) * xp.exp(-((k / k_silk) ** 1.4))
    ) * xp.sinc(k * s_tilde / np.pi)  # sinc(x) = sin(pi x)/(pi x) in both, so this is j0(k s~)
    return f_b * t_b + f_c * t_c


def transfer_no_wiggle(k_mpc, omega_m: float, omega_b: float, h: float, t_cmb_k: float = T_CMB_K):
    """EH98 zero-baryon-oscillation ("no-wiggle") transfer function, eqs. 26-31.

    Parameters and return value as in :func:`transfer_wiggle`.
    """
    xp, (k, omega_m, omega_b, h) = _inputs(k_mpc, omega_m, omega_b, h)
    om_h2 = omega_m * h**2
    ob_h2 = omega_b * h**2
    f_b = omega_b / omega_m
    theta = t_cmb_k / 2.7
    s = 44.5 * xp.log(9.83 / om_h2) / xp.sqrt(1.0 + 10.0 * ob_h2**0.75)  # eq. 26, Mpc
    alpha_gamma = 1.0 - 0.328 * xp.log(431.0 * om_h2) * f_b + 0.38 * xp.log(22.3 * om_h2) * f_b**2
    gamma_eff = omega_m * h * (alpha_gamma + (1.0 - alpha_gamma) / (1.0 + (0.43 * k * s) ** 4))
    q = (k / h) * theta**2 / gamma_eff  # eq. 28 with k in h/Mpc
    l0 = xp.log(2.0 * np.e + 1.8 * q)
    c0 = 14.2 + 731.0 / (1.0 + 62.5 * q)
    return l0 / (l0 + c0 * q**2)
