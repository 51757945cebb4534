"""Linear matter power spectrum providers, P(k) at z = 0.

A provider is any object with ``__call__(k_h_mpc) -> P`` (k in h/Mpc, P in (Mpc/h)^3, z = 0) and a
``cosmology`` attribute (a :class:`~emu_backend.cosmology.Cosmology` or ``None`` when unknown); see
:class:`LinearPower`. Two providers need no optional dependency:

* :class:`TabulatedPower`: a table (arrays or a two-column text file), interpolated linearly in
  log P versus log k; asking outside the table is an error unless power-law extrapolation is enabled.
* :class:`EisensteinHuPower`: the Eisenstein & Hu (1998) fitting formula, with or without baryon
  wiggles, normalised to ``cosmology.sigma8``.

:func:`sigma_r` is the rms linear density contrast in a top-hat sphere, by Simpson's rule in ln k.
:func:`eisenstein_hu_power` is the same EH98 spectrum as a function of the cosmological parameters, for NumPy
arrays or torch tensors (then differentiable in k and in every parameter, the sigma8 normalisation by the
same Simpson rule): the linear power of the differentiable forward model.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..checks import check_positive
from ..errors import ComputationError, FileFormatError, InputError
from . import _eisenstein_hu
from .params import Cosmology

__all__ = ["LinearPower", "TabulatedPower", "EisensteinHuPower", "eisenstein_hu_power", "sigma_r", "tophat_window"]

logger = logging.getLogger(__name__)

#: Integration range [h/Mpc] of :func:`sigma_r` for providers without a finite ``k_range``.
_SIGMA_K_RANGE_H_MPC = (1e-6, 1e4)
#: Simpson points in ln k for :func:`sigma_r` (1e-10 relative accuracy on EH98 sigma8 versus adaptive quad,
#: the same as with twice the points; 2049 points give 6e-9).
_SIGMA_N_POINTS = 4097


@runtime_checkable
class LinearPower(Protocol):
    """Interface of a linear power spectrum at z = 0.

    Attributes
    ----------
    cosmology : Cosmology or None
        The cosmology the spectrum belongs to, where known.
    k_range : tuple of float
        ``(k_min, k_max)`` [h/Mpc] where the provider is defined (``(0, inf)`` if everywhere).
    """

    cosmology: Cosmology | None
    k_range: tuple[float, float]

    def __call__(self, k_h_mpc: np.ndarray) -> np.ndarray:
        """Linear P(k) at z = 0 [(Mpc/h)^3] for wavenumbers ``k_h_mpc`` [h/Mpc], same shape."""
        ...


def _as_positive_k(k_h_mpc) -> np.ndarray:
    k = np.asarray(k_h_mpc, dtype=np.float64)
    if k.size and (not np.all(np.isfinite(k)) or np.any(k <= 0)):
        bad = k[~np.isfinite(k) | (k <= 0)].ravel()[0]
        raise InputError(f"wavenumbers k [h/Mpc] must be finite and > 0, got {bad!r}")
    return k


class TabulatedPower:
    """Linear P(k) at z = 0 from a table, interpolated linearly in log P versus log k.

    Parameters
    ----------
    k_h_mpc : array_like, shape (m,)
        Wavenumbers [h/Mpc], m >= 2, strictly increasing and > 0.
    power_mpc_h3 : array_like, shape (m,)
        P(k) [(Mpc/h)^3], finite and > 0.
    extrapolate : bool
        If False (default), asking for k outside ``[k[0], k[-1]]`` raises :class:`InputError`. If
        True, the first and last table segments are continued as power laws.
    cosmology : Cosmology or None
        The cosmology of the table, if known.

    Notes
    -----
    Table points are reproduced exactly: ``P(k) = P_j exp(s_j (ln k - ln k_j))`` with ``j`` the table
    point at or below ``k`` and ``s_j`` the log-log slope of the segment starting at ``j``.

    Examples
    --------
    >>> p = TabulatedPower([0.01, 0.1, 1.0], [1e4, 1e3, 1e1])
    >>> float(p(np.array([0.1]))[0])
    1000.0
    >>> round(float(p(np.array([np.sqrt(0.1)]))[0]), 6)
    100.0
    """

    def __init__(self, k_h_mpc, power_mpc_h3, *, extrapolate: bool = False, cosmology: Cosmology | None = None):
        k = np.array(k_h_mpc, dtype=np.float64)
        p = np.array(power_mpc_h3, dtype=np.float64)
        if k.ndim != 1 or p.shape != k.shape or k.size < 2:
            raise InputError(
                f"the P(k) table needs two 1-d arrays of equal length >= 2, got shapes {k.shape} and {p.shape}"
            )
        if not np.all(np.isfinite(k)) or np.any(k <= 0):
            raise InputError(f"table k [h/Mpc] must be finite and > 0; got min {float(np.nanmin(k))!r}")
        if np.any(np.diff(k) <= 0):
            i = int(np.argmax(np.diff(k) <= 0))
            raise InputError(f"table k must be strictly increasing; k[{i}]={float(k[i])!r} >= k[{i + 1}]={float(k[i + 1])!r}")
        if not np.all(np.isfinite(p)) or np.any(p <= 0):
            i = int(np.argmax(~np.isfinite(p) | (p <= 0)))
            raise InputError(f"table P [(Mpc/h)^3] must be finite and > 0; got P[{i}]={float(p[i])!r}")
        if cosmology is not None and not isinstance(cosmology, Cosmology):
            raise InputError(f"cosmology must be a Cosmology or None, got {type(cosmology).__name__}")
        k.flags.writeable = False
        p.flags.writeable = False
        self._k = k
        self._p = p
        self._ln_k = np.log(k)
        self._ln_p = np.log(p)
        slope = np.diff(self._ln_p) / np.diff(self._ln_k)
        self._slope = np.append(slope, slope[-1])  # the last point continues the last segment
        self.extrapolate = bool(extrapolate)
        self.cosmology = cosmology

    @classmethod
    def from_file(cls, path, *, extrapolate: bool = False, cosmology: Cosmology | None = None) -> "TabulatedPower":
        """Read a whitespace-separated two-column text file: k [h/Mpc], P [(Mpc/h)^3].

        Lines starting with ``#`` are comments. Raises :class:`FileFormatError` if the file is
        missing or not two numeric columns.
        """
        path = Path(path)
        if not path.is_file():
            raise FileFormatError(f"P(k) table file {str(path)!r} does not exist")
        try:
            with warnings.catch_warnings():  # an empty file is reported below, not as a UserWarning
                warnings.simplefilter("ignore", UserWarning)
                table = np.loadtxt(path, dtype=np.float64, ndmin=2)
        except ValueError as exc:
            raise FileFormatError(f"P(k) table file {str(path)!r} is not numeric text: {exc}") from exc
        if table.ndim != 2 or table.shape[1] != 2:
            raise FileFormatError(f"P(k) table file {str(path)!r} must have 2 columns (k, P), got shape {table.shape}")
        logger.debug("read %d P(k) rows from %s", table.shape[0], path)
        try:
            return cls(table[:, 0], table[:, 1], extrapolate=extrapolate, cosmology=cosmology)
        except InputError as exc:
            raise FileFormatError(f"P(k) table file {str(path)!r}: {exc}") from exc

    @property
    def k(self) -> np.ndarray:
        """Table wavenumbers [h/Mpc], shape (m,), read-only."""
        return self._k

    @property
    def power(self) -> np.ndarray:
        """Table P(k) [(Mpc/h)^3], shape (m,), read-only."""
        return self._p

    @property
    def k_range(self) -> tuple[float, float]:
        """``(k_min, k_max)`` [h/Mpc] where P is defined: the table ends, or (0, inf) if extrapolating."""
        if self.extrapolate:
            return (0.0, float("inf"))
        return (float(self._k[0]), float(self._k[-1]))

    def __call__(self, k_h_mpc) -> np.ndarray:
        k = _as_positive_k(k_h_mpc)
        if not self.extrapolate and k.size:
            lo, hi = float(k.min()), float(k.max())
            if lo < self._k[0] or hi > self._k[-1]:
                raise InputError(
                    f"k = {lo if lo < self._k[0] else hi!r} h/Mpc is outside the P(k) table range "
                    f"[{self._k[0]!r}, {self._k[-1]!r}]; extend the table or pass extrapolate=True"
                )
        ln_k = np.log(k)
        j = np.clip(np.searchsorted(self._ln_k, ln_k, side="right") - 1, 0, self._k.size - 1)
        return self._p[j] * np.exp(self._slope[j] * (ln_k - self._ln_k[j]))

    def __repr__(self) -> str:
        return (
            f"TabulatedPower({self._k.size} points, k in [{self._k[0]:.3g}, {self._k[-1]:.3g}] h/Mpc, "
            f"extrapolate={self.extrapolate})"
        )


def tophat_window(x) -> np.ndarray:
    """Fourier transform of a unit top-hat sphere, ``W(x) = 3 (sin x - x cos x) / x^3``.

    Uses the series ``1 - x^2/10 + x^4/280`` below x = 1e-2 to avoid cancellation.
    """
    x = np.asarray(x, dtype=np.float64)
    small = np.abs(x) < 1e-2
    xs = np.where(small, 1.0, x)
    full = 3.0 * (np.sin(xs) - xs * np.cos(xs)) / xs**3
    return np.where(small, 1.0 - x**2 / 10.0 + x**4 / 280.0, full)


def _simpson_ln_k(k_lo: float, k_hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Wavenumbers [h/Mpc] and composite-Simpson weights of ``int f dln k`` on ``_SIGMA_N_POINTS`` points
    uniform in ln k (an odd count: ``h/3 (1, 4, 2, 4, ..., 2, 4, 1)``)."""
    ln_k = np.linspace(np.log(k_lo), np.log(k_hi), _SIGMA_N_POINTS)
    weights = np.full(_SIGMA_N_POINTS, 2.0)
    weights[1::2] = 4.0
    weights[[0, -1]] = 1.0
    return np.exp(ln_k), weights * (ln_k[1] - ln_k[0]) / 3.0


def sigma_r(power, r_mpc_h: float, *, k_range_h_mpc: tuple[float, float] | None = None) -> float:
    """rms linear density contrast in a top-hat sphere of radius ``r_mpc_h`` at z = 0.

    ``sigma^2(R) = 1/(2 pi^2) int k^3 P(k) W^2(kR) dln k``, by composite Simpson's rule on 4097 points
    uniform in ln k, P evaluated in one vectorised call.

    Parameters
    ----------
    power : LinearPower
        P(k) provider [(Mpc/h)^3].
    r_mpc_h : float
        Radius [Mpc/h], > 0.
    k_range_h_mpc : (float, float) or None
        Integration limits [h/Mpc]; default: ``power.k_range`` clipped to [1e-6, 1e4].

    Returns
    -------
    float
        sigma(R), dimensionless.

    Examples
    --------
    >>> from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    >>> round(sigma_r(EisensteinHuPower(QUIJOTE_FIDUCIAL), 8.0), 4)
    0.834
    """
    if not callable(power):
        raise InputError(f"power must be a callable P(k) provider, got {type(power).__name__}")
    r_mpc_h = check_positive(r_mpc_h, "radius r_mpc_h")
    if k_range_h_mpc is None:
        lo, hi = getattr(power, "k_range", (0.0, float("inf")))
        k_range_h_mpc = (max(lo, _SIGMA_K_RANGE_H_MPC[0]), min(hi, _SIGMA_K_RANGE_H_MPC[1]))
    k_lo, k_hi = (float(v) for v in k_range_h_mpc)
    if not (0 < k_lo < k_hi < float("inf")):
        raise InputError(f"k_range_h_mpc must satisfy 0 < k_min < k_max < inf, got {k_range_h_mpc!r}")
    k, weights = _simpson_ln_k(k_lo, k_hi)
    integrand = k**3 * np.asarray(power(k), dtype=np.float64) * tophat_window(k * float(r_mpc_h)) ** 2
    if not np.all(np.isfinite(integrand)):
        raise ComputationError(f"sigma_r: P(k) is not finite on [{k_lo!r}, {k_hi!r}] h/Mpc")
    return float(np.sqrt(integrand @ weights / (2.0 * np.pi**2)))


class EisensteinHuPower:
    """Eisenstein & Hu (1998) linear P(k) at z = 0, normalised to ``cosmology.sigma8``.

    ``P(k) = A k^n_s T(k)^2`` with the EH98 transfer function (``wiggles=True``: with baryon acoustic
    oscillations; ``False``: the smooth "no-wiggle" form), and ``A`` such that
    ``sigma_r(self, 8) == cosmology.sigma8``.

    Parameters
    ----------
    cosmology : Cosmology
        Flat LambdaCDM parameters; must carry ``sigma8`` (an ``A_s`` normalisation needs CLASS).
    wiggles : bool
        Include baryon acoustic oscillations (default True).

    Examples
    --------
    >>> from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    >>> p = EisensteinHuPower(QUIJOTE_FIDUCIAL)
    >>> p(np.array([0.1])).shape
    (1,)
    """

    k_range = (0.0, float("inf"))

    def __init__(self, cosmology: Cosmology, *, wiggles: bool = True):
        if not isinstance(cosmology, Cosmology):
            raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
        if cosmology.sigma8 is None:
            raise InputError(
                f"EisensteinHuPower is normalised by sigma8, but cosmology {cosmology.name!r} gives "
                f"A_s={cosmology.A_s!r}; an A_s normalisation needs the CLASS provider (extra 'class')"
            )
        if wiggles and cosmology.omega_b <= 0:
            raise InputError(
                f"the EH98 wiggle transfer function needs omega_b > 0, got {cosmology.omega_b!r}; "
                "use wiggles=False for a baryon-free spectrum"
            )
        self.cosmology = cosmology
        self.wiggles = bool(wiggles)
        self._amplitude = 1.0
        sigma8_unit = sigma_r(self, 8.0)
        if not np.isfinite(sigma8_unit) or sigma8_unit <= 0:  # pragma: no cover - defensive
            raise ComputationError(f"sigma8 integral of the EH98 spectrum failed: {sigma8_unit!r}")
        self._amplitude = (cosmology.sigma8 / sigma8_unit) ** 2
        logger.debug("EH98 amplitude %.6e for %s (wiggles=%s)", self._amplitude, cosmology.name, wiggles)

    @property
    def amplitude(self) -> float:
        """Normalisation ``A`` in ``P = A k^n_s T^2`` [(Mpc/h)^(3 + n_s)]."""
        return self._amplitude

    def transfer(self, k_h_mpc) -> np.ndarray:
        """EH98 transfer function T(k), dimensionless, T -> 1 as k -> 0; k in h/Mpc."""
        c = self.cosmology
        return _eh_transfer(_as_positive_k(k_h_mpc), c.omega_m, c.omega_b, c.h, self.wiggles)

    def __call__(self, k_h_mpc) -> np.ndarray:
        c = self.cosmology
        return self._amplitude * _eh_shape(_as_positive_k(k_h_mpc), c.omega_m, c.omega_b, c.h, c.n_s, self.wiggles)

    def __repr__(self) -> str:
        return f"EisensteinHuPower({self.cosmology.name!r}, wiggles={self.wiggles})"


def _eh_transfer(k_h_mpc, omega_m, omega_b, h, wiggles: bool):
    """EH98 T(k) of k [h/Mpc] (NumPy or torch)."""
    transfer = _eisenstein_hu.transfer_wiggle if wiggles else _eisenstein_hu.transfer_no_wiggle
    return transfer(k_h_mpc * h, omega_m, omega_b, h)


def _eh_shape(k_h_mpc, omega_m, omega_b, h, n_s, wiggles: bool):
    """The unnormalised EH98 spectrum ``k^n_s T(k)^2`` of k [h/Mpc] (NumPy or torch)."""
    return k_h_mpc**n_s * _eh_transfer(k_h_mpc, omega_m, omega_b, h, wiggles) ** 2


def eisenstein_hu_power(k_h_mpc, omega_m, omega_b, h, n_s, sigma8, *, wiggles: bool = True):
    """EH98 linear P(k) at z = 0 [(Mpc/h)^3] as a function of the cosmological parameters.

    The spectrum of :class:`EisensteinHuPower` (``A k^n_s T(k)^2`` with ``sigma(8 Mpc/h) = sigma8``) for
    NumPy arrays or torch tensors: where any argument is a tensor the result is a float64 tensor,
    differentiable in ``k`` and in every parameter (sigma8 normalisation by the Simpson rule of
    :func:`sigma_r`, so both agree to round-off).

    Parameters
    ----------
    k_h_mpc : ndarray or Tensor
        Wavenumbers [h/Mpc], > 0.
    omega_m, omega_b, h, n_s, sigma8 : float or 0-d Tensor
        Matter and baryon density today, dimensionless Hubble constant, spectral index, and the rms
        linear density contrast in 8 Mpc/h spheres.
    wiggles : bool
        Baryon acoustic oscillations (default) or the smooth "no-wiggle" form.

    Returns
    -------
    ndarray or Tensor
        P(k), shape of ``k_h_mpc``.

    Examples
    --------
    >>> from emu_backend.cosmology import QUIJOTE_FIDUCIAL as c
    >>> p = eisenstein_hu_power(np.array([0.1]), c.omega_m, c.omega_b, c.h, c.n_s, c.sigma8)
    >>> bool(np.isclose(p[0], EisensteinHuPower(c)(np.array([0.1]))[0], rtol=1e-12))
    True
    """
    tensors = any(isinstance(v, torch.Tensor) for v in (k_h_mpc, omega_m, omega_b, h, n_s, sigma8))
    k_q, quadrature = _SIGMA8_QUADRATURE
    if tensors:
        device = next(v.device for v in (k_h_mpc, omega_m, omega_b, h, n_s, sigma8) if isinstance(v, torch.Tensor))
        k_q, quadrature = (torch.tensor(v, device=device) for v in (k_q, quadrature))
        k_h_mpc = torch.as_tensor(k_h_mpc, dtype=torch.float64, device=device)
    else:
        k_h_mpc = _as_positive_k(k_h_mpc)

    sigma8_unit2 = (_eh_shape(k_q, omega_m, omega_b, h, n_s, wiggles) * quadrature).sum()
    return sigma8**2 / sigma8_unit2 * _eh_shape(k_h_mpc, omega_m, omega_b, h, n_s, wiggles)


def _sigma8_quadrature() -> tuple[np.ndarray, np.ndarray]:
    """Nodes k [h/Mpc] of :func:`sigma_r`'s rule on its default range and the factors that turn P(k_i) into
    sigma(8 Mpc/h)^2 by a dot product: ``k^3 W^2(8 k) w / (2 pi^2)`` (read-only; computed once)."""
    k_q, weights = _simpson_ln_k(*_SIGMA_K_RANGE_H_MPC)
    factors = k_q**3 * tophat_window(k_q * 8.0) ** 2 * weights / (2.0 * np.pi**2)
    for v in (k_q, factors):
        v.flags.writeable = False
    return k_q, factors


_SIGMA8_QUADRATURE = _sigma8_quadrature()
