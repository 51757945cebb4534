"""Halo statistics: the mass function with Poisson errors and the halo auto / halo-matter power and bias."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..checks import check_int, check_positive
from ..datatypes.halos import HaloCatalog
from ..errors import InputError
from ..mesh.paint import check_window
from .mesh import density_mesh
from .power import check_k_edges, power_spectrum

__all__ = ["MassFunction", "HaloBias", "default_mass_edges", "mass_function", "halo_bias"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class MassFunction:
    """Binned halo mass function ``dn/dlnM`` with Poisson errors.

    Attributes
    ----------
    mass_edges : ndarray, shape (n_bins + 1,)
        Bin edges [Msun/h]; a halo is in bin i if ``mass_edges[i] <= M < mass_edges[i+1]``.
    mass : ndarray, shape (n_bins,)
        Geometric bin centres ``sqrt(M_i M_{i+1})`` [Msun/h].
    dn_dlnm : ndarray, shape (n_bins,)
        ``counts / (V dlnM)`` [(h/Mpc)^3].
    dn_dlnm_err : ndarray, shape (n_bins,)
        Poisson error ``sqrt(counts) / (V dlnM)`` [(h/Mpc)^3].
    counts : ndarray, shape (n_bins,), int64
        Halos per bin.
    box_size : float
        Box side [Mpc/h].
    """

    mass_edges: np.ndarray
    mass: np.ndarray
    dn_dlnm: np.ndarray
    dn_dlnm_err: np.ndarray
    counts: np.ndarray
    box_size: float


@dataclass(frozen=True, eq=False)
class HaloBias:
    """Halo auto, halo-matter cross and matter power spectra, and the scale-dependent and linear bias.

    Attributes
    ----------
    k : ndarray, shape (n_bins,)
        Mean ``|k|`` per bin [h/Mpc].
    p_hh : ndarray, shape (n_bins,)
        Halo auto power with the Poisson shot noise ``1/n_h`` subtracted [(Mpc/h)^3].
    p_hm : ndarray, shape (n_bins,)
        Halo-matter cross power [(Mpc/h)^3].
    p_mm : ndarray, shape (n_bins,)
        Matter power [(Mpc/h)^3] (no shot noise subtracted).
    bias_k : ndarray, shape (n_bins,)
        ``p_hm / p_mm``, dimensionless.
    b_linear : float
        Mode-count weighted mean of ``bias_k`` over the bins with ``k < k_max``.
    shot_noise : float
        ``1 / n_h = V / N_h`` [(Mpc/h)^3].
    n_modes : ndarray, shape (n_bins,), int64
        Modes per bin.
    k_max : float
        Upper limit of the linear-bias fit [h/Mpc].
    """

    k: np.ndarray
    p_hh: np.ndarray
    p_hm: np.ndarray
    p_mm: np.ndarray
    bias_k: np.ndarray
    b_linear: float
    shot_noise: float
    n_modes: np.ndarray
    k_max: float


def _check_catalog(catalog) -> HaloCatalog:
    if not isinstance(catalog, HaloCatalog):
        raise InputError(f"catalog must be a HaloCatalog, got {type(catalog).__name__}")
    return catalog


def default_mass_edges(catalog: HaloCatalog, dex: float = 0.2) -> np.ndarray:
    """Edges ``min_particles * particle_mass * 10^(dex i)`` [Msun/h] up to past the heaviest halo."""
    lo = catalog.min_particles * catalog.particle_mass
    top = max(float(catalog.mass.max()) if catalog.n_halos else lo, lo)
    n_bins = int(np.floor(np.log10(top / lo) / dex)) + 1
    return lo * 10.0 ** (dex * np.arange(n_bins + 1))


def mass_function(catalog: HaloCatalog, mass_edges=None) -> MassFunction:
    """Halo mass function ``dn/dlnM`` [(h/Mpc)^3] with Poisson errors.

    Parameters
    ----------
    catalog : HaloCatalog
        Halos of one box.
    mass_edges : array_like or None
        Increasing bin edges [Msun/h], > 0; default 0.2 dex bins from ``min_particles * particle_mass``
        (:func:`default_mass_edges`).

    Returns
    -------
    MassFunction

    Examples
    --------
    >>> cat = HaloCatalog(mass=np.array([4e13, 2e13, 2e13]), position=np.zeros((3, 3)), velocity=np.zeros((3, 3)),
    ...                   n_particles=np.array([40, 20, 20]), box_size=100.0, particle_mass=1e12, linking_length=0.2)
    >>> mass_function(cat).counts.tolist()
    [2, 1]
    """
    cat = _check_catalog(catalog)
    if mass_edges is None:
        edges = default_mass_edges(cat)
    else:
        msg = f"mass_edges must be an increasing 1-d array of >= 2 masses > 0 [Msun/h], got {mass_edges!r}"
        try:
            edges = np.asarray(mass_edges, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(msg) from exc
        if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) or edges[0] <= 0:
            raise InputError(msg)
        if np.any(np.diff(edges) <= 0):
            raise InputError(msg)
    idx = np.searchsorted(edges, cat.mass, side="right") - 1
    inside = (idx >= 0) & (idx < edges.size - 1)
    counts = np.bincount(idx[inside], minlength=edges.size - 1).astype(np.int64)
    volume = cat.box_size**3
    dlnm = np.diff(np.log(edges))
    return MassFunction(
        mass_edges=edges,
        mass=np.sqrt(edges[:-1] * edges[1:]),
        dn_dlnm=counts / (volume * dlnm),
        dn_dlnm_err=np.sqrt(counts) / (volume * dlnm),
        counts=counts,
        box_size=cat.box_size,
    )


def halo_bias(
    catalog: HaloCatalog,
    matter_positions,
    box_size: float,
    n_mesh: int,
    k_max: float = 0.1,
    window: str = "cic",
    interlace: bool = True,
    k_edges=None,
) -> HaloBias:
    """Halo and matter power spectra and the bias ``b(k) = P_hm / P_mm``.

    Parameters
    ----------
    catalog : HaloCatalog
        Halos (number-weighted; each halo counts once).
    matter_positions : array_like, shape (N, 3)
        Matter particle positions [Mpc/h] of the same box.
    box_size : float
        Box side [Mpc/h]; must equal ``catalog.box_size``.
    n_mesh : int
        Mesh points per side for both density meshes.
    k_max : float
        The linear bias averages ``bias_k`` over bins with mean ``k < k_max`` [h/Mpc], weighted by mode count.
    window : {"cic", "tsc", "ngp"}
        Mass assignment (deconvolved).
    interlace : bool
        Interlace both meshes (default). Without it, the aliased images of a particle lattice (a snapshot whose
        mesh matches its particle grid) add about 2% to ``P_mm`` at ``k ~ 0.4 k_Nyq`` but not to the halo
        cross power, which biases ``b_linear`` low by as much (measured in ``tests/test_halos.py``).
    k_edges : array_like or None
        Bin edges [h/Mpc]; default width ``k_f`` (:func:`.power.default_k_edges`).

    Returns
    -------
    HaloBias
        ``p_hh`` has the shot noise ``1 / n_h`` subtracted.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> matter = rng.uniform(0, 100.0, (20000, 3))
    >>> cat = HaloCatalog(mass=np.full(500, 1e13), position=matter[:500], velocity=np.zeros((500, 3)),
    ...                   n_particles=np.full(500, 20), box_size=100.0, particle_mass=5e11, linking_length=0.2)
    >>> hb = halo_bias(cat, matter, 100.0, 16, k_max=0.2)
    >>> round(hb.shot_noise, 6)  # 100^3 / 500
    2000.0
    """
    cat = _check_catalog(catalog)
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    if not np.isclose(box, cat.box_size, rtol=1e-12, atol=0):
        raise InputError(f"box_size = {box} Mpc/h differs from the catalog's box_size = {cat.box_size} Mpc/h")
    n = check_int(n_mesh, "n_mesh", 2)
    window = check_window(window)
    k_lim = check_positive(k_max, "k_max", unit="h/Mpc")
    if cat.n_halos == 0:
        raise InputError("catalog holds no halo: the halo power spectrum is undefined")
    edges = check_k_edges(k_edges, n, box)
    d_h = density_mesh(cat.position, box, n, window=window, interlace=interlace)
    d_m = density_mesh(matter_positions, box, n, window=window, interlace=interlace)
    shot = box**3 / cat.n_halos
    p_hh = power_spectrum(d_h, box, edges)
    p_hm = power_spectrum(d_h, box, edges, field2=d_m)
    p_mm = power_spectrum(d_m, box, edges)
    bias_k = np.full(edges.size - 1, np.nan)
    ok = np.isfinite(p_mm.power) & (p_mm.power > 0)
    bias_k[ok] = p_hm.power[ok] / p_mm.power[ok]
    sel = ok & (p_mm.k < k_lim)
    if not np.any(sel):
        raise InputError(
            f"no non-empty k bin below k_max = {k_lim} h/Mpc (fundamental k_f = {2 * np.pi / box:.4g} h/Mpc)"
        )
    b_lin = float(np.sum(bias_k[sel] * p_mm.n_modes[sel]) / np.sum(p_mm.n_modes[sel]))
    return HaloBias(
        k=p_mm.k,
        p_hh=p_hh.power - shot,
        p_hm=p_hm.power,
        p_mm=p_mm.power,
        bias_k=bias_k,
        b_linear=b_lin,
        shot_noise=shot,
        n_modes=p_mm.n_modes,
        k_max=k_lim,
    )
