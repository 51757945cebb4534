"""HEALPix maps of a particle lightcone (healpy): shell densities, Born convergence, and the Limber model.

Born convergence of a source at ``chi_s`` [Mpc/h] (flat, ``D_H = c / H0`` [Mpc/h]):

    kappa(n) = (3/2) Om / D_H^2  int_0^chi_s dchi  chi (chi_s - chi) / chi_s  delta(chi n, chi) / a(chi).

With particles of mean comoving density ``nbar``, ``int dchi f(chi) (1 + delta) = sum_p f(chi_p) / (nbar
Omega_pix chi_p^2)`` over the particles of a pixel of solid angle ``Omega_pix``; the mean ``int dchi f`` is
subtracted shell by shell (scipy quadrature). Its Limber power spectrum is

    C_ell = (9/4) Om^2 / D_H^4  int dchi ((chi_s - chi) / chi_s)^2 / a^2  P(k = (ell + 1/2) / chi, z(chi)).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.integrate

from ..checks import check_int
from ..cosmology.distance import HUBBLE_DISTANCE_MPC_H, DistanceTable
from ..errors import InputError, require

__all__ = ["import_healpy", "MapAccumulator", "density_contrast", "lensing_prefactor", "limber_convergence",
           "PowerHistory", "angular_power", "shot_noise_convergence"]


def import_healpy():
    """The healpy module, or MissingDependencyError naming the extra."""
    return require("healpy", "lightcone")


def lensing_prefactor(omega_m: float) -> float:
    """``(3/2) Om / D_H^2`` [(h/Mpc)^2]."""
    return 1.5 * omega_m / HUBBLE_DISTANCE_MPC_H**2


def _born_kernel(chi, chi_s: float, a):
    return np.where(chi < chi_s, chi * (chi_s - chi) / chi_s / a, 0.0)


class MapAccumulator:
    """Particle counts and Born convergence of one shell, accumulated chunk by chunk.

    Parameters
    ----------
    nside : int
        HEALPix resolution (RING order).
    nbar : float
        Mean comoving particle density [(h/Mpc)^3].
    chi_lo, chi_hi : float
        The shell [Mpc/h].
    source_chis : sequence of float
        Source distances [Mpc/h].
    table : DistanceTable
    omega_m : float
    """

    def __init__(self, nside: int, nbar: float, chi_lo: float, chi_hi: float, source_chis, table: DistanceTable,
                 omega_m: float):
        hp = import_healpy()
        self.nside = check_int(nside, "nside", 1)
        if not hp.isnsideok(self.nside):
            raise InputError(f"nside must be a power of 2, got {nside}")
        self.npix = hp.nside2npix(self.nside)
        self.nbar, self.chi_lo, self.chi_hi = nbar, chi_lo, chi_hi
        self.source_chis = [float(c) for c in source_chis]
        self.table, self.prefactor = table, lensing_prefactor(omega_m)
        self.counts = np.zeros(self.npix, np.int64)
        self.kappa = np.zeros((len(self.source_chis), self.npix))

    def add(self, position: np.ndarray, chi: np.ndarray) -> None:
        """Add particles at ``position`` (N, 3) [Mpc/h] from the observer, crossing at ``chi`` (N,) [Mpc/h]."""
        if not len(chi):
            return
        pix = import_healpy().vec2pix(self.nside, position[:, 0], position[:, 1], position[:, 2])
        self.counts += np.bincount(pix, minlength=self.npix)
        a = self.table.scale_factor(chi)
        omega_pix = 4 * math.pi / self.npix
        for j, chi_s in enumerate(self.source_chis):
            w = self.prefactor * _born_kernel(chi, chi_s, a) / (self.nbar * omega_pix * chi**2)
            self.kappa[j] += np.bincount(pix, weights=w, minlength=self.npix)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """``(counts, kappa)``: the mean convergence of the shell is subtracted from every pixel."""
        for j, chi_s in enumerate(self.source_chis):
            hi = min(self.chi_hi, chi_s)
            if hi > self.chi_lo:
                mean = scipy.integrate.quad(lambda c: _born_kernel(c, chi_s, self.table.scale_factor(c)),
                                            self.chi_lo, hi, epsrel=1e-10)[0]
                self.kappa[j] -= self.prefactor * mean
        return self.counts, self.kappa

    @property
    def volume(self) -> float:
        """Full-sky shell volume ``4 pi (chi_hi^3 - chi_lo^3) / 3`` [(Mpc/h)^3]."""
        return 4 * math.pi * (self.chi_hi**3 - self.chi_lo**3) / 3


def density_contrast(counts: np.ndarray, nbar: float, chi_lo: float, chi_hi: float) -> np.ndarray:
    """Projected overdensity of a shell: ``counts / (nbar V_shell / npix) - 1`` per pixel."""
    expected = nbar * 4 * math.pi * (chi_hi**3 - chi_lo**3) / 3 / counts.size
    return counts / expected - 1.0


class PowerHistory:
    """``P(k, chi)`` [(Mpc/h)^3] from spectra measured at output distances, for the Limber integral.

    Linear in ``chi`` between outputs (constant beyond), linear in ``log k`` between the binned values;
    zero below ``k_min`` (no mode of the box) and above ``k_max`` (not resolved).

    Parameters
    ----------
    k : ndarray, shape (nk,)
        Bin wavenumbers [h/Mpc].
    chis : ndarray, shape (nt,)
        Increasing output distances [Mpc/h].
    powers : ndarray, shape (nt, nk)
    k_min, k_max : float
        [h/Mpc].
    """

    def __init__(self, k, chis, powers, k_min: float, k_max: float):
        self.k, self.chis, self.powers = np.asarray(k), np.asarray(chis), np.asarray(powers)
        good = np.isfinite(self.powers).all(axis=0)
        self.k, self.powers = self.k[good], self.powers[:, good]
        self.k_min, self.k_max = k_min, k_max
        order = np.argsort(self.chis)
        self.chis, self.powers = self.chis[order], self.powers[order]

    def __call__(self, k: np.ndarray, chi: np.ndarray) -> np.ndarray:
        """``P`` at ``k`` (nl, nchi) and ``chi`` (nchi,)."""
        logk = np.log(self.k)
        table = np.stack([np.interp(np.log(np.clip(k, 1e-30, None)), logk, p) for p in self.powers])  # (nt, nl, nchi)
        idx = np.clip(np.searchsorted(self.chis, chi) - 1, 0, len(self.chis) - 2) if len(self.chis) > 1 else \
            np.zeros(len(chi), int)
        if len(self.chis) > 1:
            c0, c1 = self.chis[idx], self.chis[idx + 1]
            t = np.clip((chi - c0) / (c1 - c0), 0.0, 1.0)
            cols = np.arange(len(chi))
            out = table[idx, :, cols].T * (1 - t) + table[idx + 1, :, cols].T * t
        else:
            out = table[0]
        return np.where((k >= self.k_min) & (k <= self.k_max), out, 0.0)


def limber_convergence(ell, chi_s: float, chi_min: float, power, table: DistanceTable, omega_m: float,
                       n_chi: int = 2048) -> np.ndarray:
    """Limber convergence ``C_ell`` of a source at ``chi_s`` over lenses in ``[chi_min, chi_s]`` [Mpc/h].

    Parameters
    ----------
    ell : array_like, shape (nl,)
    power : callable
        ``power(k, chi)`` [(Mpc/h)^3], ``k`` of shape (nl, nchi) [h/Mpc], ``chi`` (nchi,) [Mpc/h].
    n_chi : int
        Points of the Simpson rule (scipy) in ``chi``.

    Returns
    -------
    ndarray, shape (nl,)
    """
    ell = np.asarray(ell, dtype=np.float64)
    chi = np.linspace(max(chi_min, 1e-3 * chi_s), chi_s, n_chi)
    a = table.scale_factor(chi)
    k = (ell[:, None] + 0.5) / chi[None, :]
    integrand = ((chi_s - chi) / chi_s) ** 2 / a**2 * power(k, chi)
    return (9.0 / 4.0) * omega_m**2 / HUBBLE_DISTANCE_MPC_H**4 * scipy.integrate.simpson(integrand, x=chi, axis=1)


def shot_noise_convergence(chi_s: float, chi_min: float, nbar: float, table: DistanceTable, omega_m: float) -> float:
    """Poisson shot noise of a particle convergence map: the Limber integral of ``P = 1 / nbar`` (flat in ell)."""
    return float(limber_convergence([1.0], chi_s, chi_min, lambda k, c: np.full(k.shape, 1.0 / nbar), table,
                                    omega_m)[0])


def angular_power(m: np.ndarray, lmax: int | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """``C_ell`` of a HEALPix map (healpy.anafast), divided by the observed sky fraction where masked."""
    hp = import_healpy()
    if mask is None:
        return hp.anafast(m, lmax=lmax)
    fsky = float(np.mean(mask))
    if fsky <= 0:
        raise InputError("the mask leaves no pixel")
    return hp.anafast(np.where(mask, m, 0.0), lmax=lmax) / fsky
