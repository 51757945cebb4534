"""FFT power spectrum and cross-correlation of real fields on a periodic cubic mesh.

Convention: with numpy's unnormalised DFT ``F_k = sum_x f(x) e^{-ik.x}`` of an (N, N, N) field in a
box of volume ``V = L^3``, each mode carries ``P_k = Re(F_k G_k^*) V / N^6`` [(Mpc/h)^3 for L in
Mpc/h], so a Gaussian field with power spectrum ``P_in`` gives ``<P_k> = P_in(|k|)`` and Parseval
reads ``mean(f^2) = sum_{all k} P_k / V``. A bin averages ``P_k`` over the modes of the full FFT grid
whose ``|k|`` falls in it. Only the rfft half-space is transformed; modes on the ``k_z = 0`` and (even N)
``k_z`` Nyquist planes are their own partners' half-space images and count once, the others stand
for themselves and their conjugate ``-k`` and count twice. The k = 0 mode is excluded.

Vector fields (displacement, velocity, momentum; shape (3, N, N, N)) use the trace of the spectral tensor,
``P(k) = sum_c P_cc(k)`` (:func:`vector_power`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.fft

from ..checks import check_positive
from ..errors import InputError

__all__ = [
    "PowerSpectrum",
    "CrossCorrelation",
    "power_spectrum",
    "cross_correlation",
    "vector_power",
    "vector_cross_correlation",
    "default_k_edges",
    "check_cubic_field",
    "check_k_edges",
    "mode_grid",
    "bin_modes",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class PowerSpectrum:
    """Binned power spectrum (auto or cross).

    Attributes
    ----------
    k : ndarray, shape (n_bins,)
        Mean ``|k|`` of the modes in each bin [h/Mpc]; NaN for an empty bin.
    power : ndarray, shape (n_bins,)
        Bin-averaged P(k) [(Mpc/h)^3]; NaN for an empty bin.
    n_modes : ndarray, shape (n_bins,), int64
        Number of Fourier modes in the bin, counting ``k`` and ``-k`` separately (full FFT grid).
    k_edges : ndarray, shape (n_bins + 1,)
        Bin edges [h/Mpc]; a mode is in bin i if ``k_edges[i] <= |k| < k_edges[i+1]``.
    box_size : float
        Box side [Mpc/h].
    """

    k: np.ndarray
    power: np.ndarray
    n_modes: np.ndarray
    k_edges: np.ndarray
    box_size: float


@dataclass(frozen=True, eq=False)
class CrossCorrelation:
    """Cross-correlation coefficient ``r(k) = P_ab / sqrt(P_aa P_bb)`` with its ingredients."""

    k: np.ndarray
    r: np.ndarray
    n_modes: np.ndarray
    p_ab: PowerSpectrum
    p_aa: PowerSpectrum
    p_bb: PowerSpectrum


def check_cubic_field(field, name: str = "field") -> np.ndarray:
    """``field`` as an array if it is a real, finite, cubic (N, N, N) mesh with N >= 2, else :class:`InputError`.

    The check of every estimator of :mod:`emu_backend.validation` (the box side is checked with
    :func:`emu_backend.checks.check_positive`).
    """
    arr = np.asarray(field)
    if arr.ndim != 3 or len(set(arr.shape)) != 1 or arr.shape[0] < 2:
        raise InputError(f"{name} must be a cubic array of shape (N, N, N) with N >= 2, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{name} must be real-valued, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains non-finite values")
    return arr


def default_k_edges(n: int, box_size: float) -> np.ndarray:
    """Linear bins of width ``k_f = 2 pi / L`` centred on ``k_f, 2 k_f, ...`` up to the grid corner.

    Edges ``(i + 1/2) k_f`` for i = 0 ... ceil(sqrt(3) N/2); the k = 0 mode falls below the first edge.
    """
    kf = 2.0 * np.pi / box_size
    i_max = int(np.ceil(np.sqrt(3.0) * (n // 2)))
    return (np.arange(i_max + 1) + 0.5) * kf


def mode_grid(n: int, box_size: float):
    """|k| [h/Mpc] and half-space weights on the rfft grid, both flattened."""
    kf = 2.0 * np.pi / box_size
    k_full = np.fft.fftfreq(n, d=1.0 / n) * kf
    k_half = np.fft.rfftfreq(n, d=1.0 / n) * kf
    kmag = np.sqrt(k_full[:, None, None] ** 2 + k_full[None, :, None] ** 2 + k_half[None, None, :] ** 2)
    weight = np.full(k_half.size, 2, dtype=np.int64)
    weight[0] = 1
    if n % 2 == 0:
        weight[-1] = 1
    weight = np.broadcast_to(weight[None, None, :], kmag.shape)
    return kmag.ravel(), weight.ravel()


def check_k_edges(k_edges, n: int, box: float) -> np.ndarray:
    """Validated float64 bin edges [h/Mpc]; :func:`default_k_edges` when ``None``."""
    try:
        edges = default_k_edges(n, box) if k_edges is None else np.asarray(k_edges, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"k_edges must be a finite, strictly increasing 1-d array of >= 2 edges, got {k_edges!r}") from exc
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise InputError(f"k_edges must be a finite, strictly increasing 1-d array of >= 2 edges, got {k_edges!r}")
    return edges


def bin_modes(n: int, box: float, edges: np.ndarray, per_mode: list, kmag=None, weight=None):
    """Mode-weighted bin means of per-mode values given on the rfft half-space grid.

    Parameters
    ----------
    per_mode : list of ndarray, each of n * n * (n//2 + 1) values (any shape; flattened)
        Per-mode quantities (e.g. ``P_k`` or ``P_k L_l(mu)``).
    kmag, weight : ndarray, optional
        Output of :func:`mode_grid` when the caller already has it.

    Returns
    -------
    k_mean : ndarray, shape (n_bins,)
        Mean |k| per bin [h/Mpc], NaN if empty.
    means : list of ndarray, shape (n_bins,)
        Mean of each per-mode array per bin, NaN if empty.
    n_modes : ndarray, shape (n_bins,), int64
        Modes per bin, ``k`` and ``-k`` counted separately.
    """
    if kmag is None or weight is None:
        kmag, weight = mode_grid(n, box)
    keep = (kmag > 0) & (kmag >= edges[0]) & (kmag < edges[-1])
    idx = np.searchsorted(edges, kmag[keep], side="right") - 1
    nb = edges.size - 1
    w = weight[keep]
    n_modes = np.bincount(idx, weights=w, minlength=nb).astype(np.int64)
    nonempty = n_modes > 0

    def mean(values):
        out = np.full(nb, np.nan)
        total = np.bincount(idx, weights=w * values, minlength=nb)
        out[nonempty] = total[nonempty] / n_modes[nonempty]
        return out

    k_mean = mean(kmag[keep])
    means = [mean(np.asarray(v).ravel()[keep]) for v in per_mode]
    return k_mean, means, n_modes


def power_spectrum(field, box_size: float, k_edges=None, field2=None) -> PowerSpectrum:
    """Binned auto (or cross) power spectrum of real field(s) on a periodic cubic mesh.

    Parameters
    ----------
    field : ndarray, shape (N, N, N)
        Real field (e.g. a density contrast), dimensionless.
    box_size : float
        Box side [Mpc/h].
    k_edges : array_like or None
        Increasing bin edges [h/Mpc]; default :func:`default_k_edges` (width k_f).
    field2 : ndarray, shape (N, N, N) or None
        Second field for the cross spectrum ``Re(F G*) V / N^6``.

    Returns
    -------
    PowerSpectrum

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ps = power_spectrum(rng.standard_normal((16, 16, 16)), box_size=16.0)
    >>> bool(abs(np.nanmean(ps.power) - 1.0) < 0.1)  # white noise: P = var * V / N^3 = 1
    True
    """
    arr = check_cubic_field(field)
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    n = arr.shape[0]
    fk = scipy.fft.rfftn(arr.astype(np.float64, copy=False))
    if field2 is None:
        pk = fk.real**2 + fk.imag**2
    else:
        arr2 = check_cubic_field(field2, "field2")
        if arr2.shape != arr.shape:
            raise InputError(f"field2 shape {arr2.shape} differs from field shape {arr.shape}")
        gk = scipy.fft.rfftn(arr2.astype(np.float64, copy=False))
        pk = (fk * gk.conj()).real
    pk = pk.ravel() * (box**3 / float(n) ** 6)

    edges = check_k_edges(k_edges, n, box)
    k_mean, (p_mean,), n_modes = bin_modes(n, box, edges, [pk])
    logger.debug("power spectrum N=%d L=%g: %d bins, %d empty", n, box, edges.size - 1, int(np.sum(n_modes == 0)))
    return PowerSpectrum(k=k_mean, power=p_mean, n_modes=n_modes, k_edges=edges, box_size=box)


def cross_correlation(a, b, box_size: float, k_edges=None) -> CrossCorrelation:
    """Cross-correlation coefficient ``r(k) = P_ab / sqrt(P_aa P_bb)`` of two real fields.

    Parameters
    ----------
    a, b : ndarray, shape (N, N, N)
        Real fields on the same mesh.
    box_size : float
        Box side [Mpc/h].
    k_edges : array_like or None
        Bin edges [h/Mpc], as :func:`power_spectrum`.

    Returns
    -------
    CrossCorrelation
        ``r`` in [-1, 1] per bin (NaN where a bin is empty or an auto spectrum is zero).
    """
    p_ab = power_spectrum(a, box_size, k_edges, field2=b)
    p_aa = power_spectrum(a, box_size, p_ab.k_edges)
    p_bb = power_spectrum(b, box_size, p_ab.k_edges)
    return _correlation(p_ab, p_aa, p_bb)


def _correlation(p_ab: PowerSpectrum, p_aa: PowerSpectrum, p_bb: PowerSpectrum) -> CrossCorrelation:
    denom = np.sqrt(p_aa.power * p_bb.power)
    ok = np.isfinite(denom) & (denom > 0)
    r = np.full(denom.shape, np.nan)
    r[ok] = p_ab.power[ok] / denom[ok]
    return CrossCorrelation(k=p_ab.k, r=r, n_modes=p_ab.n_modes, p_ab=p_ab, p_aa=p_aa, p_bb=p_bb)


def _check_vector(field, name="field") -> np.ndarray:
    arr = np.asarray(field)
    if arr.ndim != 4 or arr.shape[0] != 3:
        raise InputError(f"{name} must be a vector field of shape (3, N, N, N), got shape {arr.shape}")
    for c in range(3):
        check_cubic_field(arr[c], f"{name}[{c}]")
    return arr


def vector_power(field, box_size: float, k_edges=None, field2=None) -> PowerSpectrum:
    """Binned power spectrum of a vector field: the sum of its component auto (or cross) spectra.

    ``P(k) = sum_c Re(F_c G_c*) V / N^6``, i.e. the trace of the spectral tensor, for displacement
    [(Mpc/h)^2 (Mpc/h)^3], velocity or momentum [(km/s)^2 (Mpc/h)^3] fields. For a curl-free field it is the
    power of the divergence over ``k^2``.

    Parameters
    ----------
    field : ndarray, shape (3, N, N, N)
        Real vector field, component ``c`` along mesh axis ``c``, in any unit ``u``.
    box_size : float
        Box side [Mpc/h].
    k_edges : array_like or None
        Bin edges [h/Mpc], as :func:`power_spectrum`.
    field2 : ndarray, shape (3, N, N, N) or None
        Second vector field for the cross spectrum.

    Returns
    -------
    PowerSpectrum
        ``power`` in ``u^2 (Mpc/h)^3``.

    Examples
    --------
    >>> g = np.random.default_rng(0).standard_normal((3, 16, 16, 16))
    >>> p = vector_power(g, 16.0)
    >>> bool(abs(np.nanmean(p.power) - 3.0) < 0.3)  # three white-noise components of unit power
    True
    """
    arr = _check_vector(field)
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    n = arr.shape[1]
    if field2 is not None:
        arr2 = _check_vector(field2, "field2")
        if arr2.shape != arr.shape:
            raise InputError(f"field2 shape {arr2.shape} differs from field shape {arr.shape}")
    pk = 0.0
    for c in range(3):
        fk = scipy.fft.rfftn(arr[c].astype(np.float64, copy=False))
        if field2 is None:
            pk = pk + (fk.real**2 + fk.imag**2)
        else:
            gk = scipy.fft.rfftn(arr2[c].astype(np.float64, copy=False))
            pk = pk + (fk * gk.conj()).real
    pk = pk.ravel() * (box**3 / float(n) ** 6)
    edges = check_k_edges(k_edges, n, box)
    k_mean, (p_mean,), n_modes = bin_modes(n, box, edges, [pk])
    return PowerSpectrum(k=k_mean, power=p_mean, n_modes=n_modes, k_edges=edges, box_size=box)


def vector_cross_correlation(a, b, box_size: float, k_edges=None) -> CrossCorrelation:
    """Cross-correlation ``r(k) = P_ab / sqrt(P_aa P_bb)`` of two vector fields (spectra of :func:`vector_power`).

    Parameters
    ----------
    a, b : ndarray, shape (3, N, N, N)
        Real vector fields on the same mesh (e.g. emulated and reference displacements).
    box_size : float
        Box side [Mpc/h].
    k_edges : array_like or None
        Bin edges [h/Mpc].

    Returns
    -------
    CrossCorrelation
        ``r`` in [-1, 1] per bin (Cauchy-Schwarz on the summed spectra), NaN where undefined.
    """
    p_ab = vector_power(a, box_size, k_edges, field2=b)
    p_aa = vector_power(a, box_size, p_ab.k_edges)
    p_bb = vector_power(b, box_size, p_ab.k_edges)
    return _correlation(p_ab, p_aa, p_bb)
