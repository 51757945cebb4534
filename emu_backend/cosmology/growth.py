"""Linear growth, growth rate and Hubble rate of flat matter + Lambda cosmologies.

These are the closed forms the published emulators were trained with (SPEC section 3): radiation
and neutrinos are neglected, the growth factor is normalised to ``D(z=0) = 1``. All functions are
pure, vectorised over ``z`` and ``omega_m`` (NumPy broadcasting), and computed in float64.

The same functions take torch tensors for ``omega_m`` (and ``z``): they then return float64 tensors whose
gradients are exact, the Gauss hypergeometric function differentiating as
``d/dx 2F1(a, b; c; x) = (a b / c) 2F1(a+1, b+1; c+1; x)`` (to any order), so the differentiable
forward model (:mod:`emu_backend.differentiable`) uses the emulator's own D(z, Omega_m).
"""

from __future__ import annotations

import numpy as np
import scipy.special
import torch

from ..errors import InputError

__all__ = [
    "growth_factor",
    "growth_rate",
    "hubble",
    "scale_factor",
    "check_omega_m",
    "hyp2f1",
]


class _Hyp2F1(torch.autograd.Function):
    """``2F1(a, b; c; x)`` of a float64 tensor ``x`` (scipy's values) with its exact derivative in ``x``."""

    @staticmethod
    def forward(ctx, x, a, b, c):
        ctx.save_for_backward(x)
        ctx.abc = (a, b, c)
        return torch.from_numpy(np.asarray(scipy.special.hyp2f1(a, b, c, x.detach().cpu().numpy()))).to(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        a, b, c = ctx.abc
        return grad * (a * b / c) * hyp2f1(a + 1.0, b + 1.0, c + 1.0, x), None, None, None


def hyp2f1(a: float, b: float, c: float, x):
    """The Gauss hypergeometric function of ``x`` (NumPy: scipy's; torch: differentiable in ``x``)."""
    if isinstance(x, torch.Tensor):
        return _Hyp2F1.apply(x.to(torch.float64), float(a), float(b), float(c))
    return scipy.special.hyp2f1(a, b, c, x)


def _as_float64(value, name: str, bad):
    """``value`` as float64 (tensor kept a tensor), refused with InputError where ``bad`` of its values."""
    if isinstance(value, torch.Tensor):
        arr = value.to(torch.float64)
        values = arr.detach().cpu().numpy()
    else:
        arr = values = np.asarray(value, dtype=np.float64)
    if np.any(~np.isfinite(values)) or np.any(bad(values)):
        raise InputError(f"{name}, got {value!r}")
    return arr


def _inputs(z, omega_m):
    """``(a, omega_m)`` checked, as float64 tensors if either input is a tensor, else NumPy float64."""
    om, a = check_omega_m(omega_m), scale_factor(z)
    if isinstance(om, torch.Tensor) or isinstance(a, torch.Tensor):
        ref = om if isinstance(om, torch.Tensor) else a
        om, a = (torch.as_tensor(v, dtype=torch.float64, device=ref.device) for v in (om, a))
    return a, om


def check_omega_m(omega_m):
    """``omega_m`` as float64 (array or tensor), or InputError unless every value lies in (0, 1]."""
    return _as_float64(omega_m, "omega_m must lie in (0, 1]", lambda v: (v <= 0) | (v > 1))


def scale_factor(z):
    """``a = 1 / (1 + z)`` as float64 (array or tensor), or InputError unless z is finite and > -1."""
    return 1.0 / (1.0 + _as_float64(z, "redshift z must be finite and > -1", lambda v: v <= -1))


def growth_factor(z, omega_m):
    """Linear growth factor ``D(z)`` normalised to ``D(0) = 1``.

    ``D = a 2F1(1, 1/3; 11/6; -(OL/Om) a^3) / 2F1(1, 1/3; 11/6; -OL/Om)`` with ``OL = 1 - Om``.

    Parameters
    ----------
    z : float or array_like
        Redshift.
    omega_m : float or array_like
        Matter density parameter today, in (0, 1].

    Returns
    -------
    float or ndarray
        Dimensionless growth factor, broadcast shape of the inputs.
    """
    a, om = _inputs(z, omega_m)
    ratio = (1.0 - om) / om
    return a * hyp2f1(1.0, 1.0 / 3.0, 11.0 / 6.0, -ratio * a**3) / hyp2f1(
        1.0, 1.0 / 3.0, 11.0 / 6.0, -ratio
    )


def growth_rate(z, omega_m):
    """Logarithmic growth rate ``f = dlnD/dlna``.

    ``f = 1 - (6/11) x 2F1(2, 4/3; 17/6; -x) / 2F1(1, 1/3; 11/6; -x)`` with ``x = OL a^3 / Om``.

    Parameters
    ----------
    z, omega_m : float or array_like
        Redshift and matter density parameter.

    Returns
    -------
    float or ndarray
        Dimensionless growth rate.
    """
    a, om = _inputs(z, omega_m)
    x = (1.0 - om) * a**3 / om
    return 1.0 - 6.0 / 11.0 * x * hyp2f1(2.0, 4.0 / 3.0, 17.0 / 6.0, -x) / hyp2f1(
        1.0, 1.0 / 3.0, 11.0 / 6.0, -x
    )


def hubble(z, omega_m):
    """Hubble rate ``H(z) = 100 sqrt(Om a^-3 + 1 - Om)`` in h km/s/Mpc.

    Parameters
    ----------
    z, omega_m : float or array_like
        Redshift and matter density parameter.

    Returns
    -------
    float or ndarray
        Hubble rate [h km/s/Mpc].
    """
    a, om = _inputs(z, omega_m)
    return 100.0 * (om / a**3 + 1.0 - om) ** 0.5
