"""The convergence power of a lightcone map against the Limber integral of the snapshots' P(k) (and CLASS
halofit where classy is installed): the comparison of docs/lightcone.md."""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

import numpy as np

from ..adapters.classy import ClassPower
from ..cosmology.distance import DistanceTable
from ..cosmology.params import Cosmology
from ..errors import InputError
from .maps import PowerHistory, angular_power, import_healpy, limber_convergence, shot_noise_convergence

__all__ = ["compare_convergence", "halofit_power", "check_pixel_window_dir"]


def check_pixel_window_dir(folder, nside: int) -> Path:
    """``folder`` as a Path, if it holds healpy's pixel-window file of ``nside``.

    Raises
    ------
    InputError
        The file ``pixel_window_n<NSIDE>.fits`` is not in ``folder``.
    """
    path = Path(folder) / f"pixel_window_n{nside:04d}.fits"
    if not path.is_file():
        raise InputError(f"pixel_window_dir {str(folder)!r} has no {path.name} (healpy's data file for nside = "
                         f"{nside}); give the folder holding healpy's pixel-window files, or none to compare "
                         f"ell <= nside / 2 without a window")
    return Path(folder)


def _local_pixel_window(hp, nside: int, folder) -> np.ndarray:
    """healpy's pixel window of ``nside`` from its data file in ``folder`` (never downloaded)."""
    return np.asarray(hp.pixwin(nside, datapath=str(check_pixel_window_dir(folder, nside))))

logger = logging.getLogger(__name__)


def compare_convergence(kappa_map, mask, chi_s: float, chi_min: float, shell_data: list, cosmology: Cosmology,
                        box_size: float, grid: int, nside: int, halofit=None, n_bins: int = 12,
                        pixel_window_dir=None) -> dict:
    """The convergence ``C_ell`` of a map against the Limber integral of the snapshots' P(k).

    The model is ``W_pix(ell)^2 C_Limber[P - shot noise] + C_shot`` (healpy's pixel window; Poisson shot noise
    of the particles, flat in ell). The compared range: ``ell_min = k_f chi_s / 2`` (the box's fundamental
    mode at the lensing kernel's middle), ``ell_max = min(2 nside, k_Nyq chi_s / 4)`` (half the particle
    Nyquist frequency there, and the map resolution). Error bars: Gaussian cosmic variance
    ``C sqrt(2 / (f_sky sum_bin (2 ell + 1)))``.

    The pixel window is read with ``healpy.pixwin(nside, datapath=pixel_window_dir)`` from a local copy of
    healpy's data files (``pixel_window_n<NSIDE>.fits``) when ``pixel_window_dir`` is given; nothing is
    downloaded (healpy's wheel does not ship those files, and the package never downloads data at run time).
    Without it the model has no window and the compared range stops at ``ell <= nside / 2``, where the
    window is above 0.99.
    """
    hp = import_healpy()
    om = cosmology.omega_m
    table = DistanceTable(om, float(shell_data[-1]["attrs"]["z_hi"]) * 1.01 + 0.01)
    k = shell_data[0]["power"]["k"]
    shot = box_size**3 / grid**3
    chis = [shell_data[0]["attrs"]["chi_lo"]] + [s["attrs"]["chi_hi"] for s in shell_data]
    powers = [shell_data[0]["power"]["power_lo"]] + [s["power"]["power_hi"] for s in shell_data]
    k_f, k_nyq = 2 * math.pi / box_size, math.pi * grid / box_size
    history = PowerHistory(k, chis, np.asarray(powers) - shot, k_f, k_nyq)
    lmax = 3 * nside - 1
    ell = np.arange(lmax + 1)
    fsky = float(np.mean(mask))
    if not mask.any():
        return {"chi_s": chi_s, "ell_min": None, "ell_max": None, "fsky": 0.0, "bins": [],
                "note": "the opening holds no whole HEALPix pixel: raise nside"}
    cl = angular_power(kappa_map, lmax=lmax, mask=None if fsky == 1 else mask)
    if pixel_window_dir is not None:
        pixwin, window = _local_pixel_window(hp, nside, pixel_window_dir)[: lmax + 1], "healpy"
    else:
        logger.info("no pixel_window_dir: comparing ell <= nside / 2 only, where the pixel window is above 0.99")
        pixwin, window = np.ones(lmax + 1), "none"
    c_shot = shot_noise_convergence(chi_s, chi_min, grid**3 / box_size**3, table, om)
    model = pixwin**2 * limber_convergence(ell, chi_s, chi_min, history, table, om) + c_shot
    ell_min = max(2, int(math.ceil(k_f * chi_s / 2)))
    if fsky < 1:  # a cone of radius theta resolves ell >~ pi / theta
        ell_min = max(ell_min, int(math.ceil(math.pi / math.acos(1 - 2 * fsky))))
    ell_max = int(min(2 * nside if window == "healpy" else nside // 2, k_nyq * chi_s / 4))
    out = {"chi_s": chi_s, "ell_min": ell_min, "ell_max": ell_max, "fsky": fsky, "shot_noise_cl": c_shot,
           "pixel_window": window}
    if ell_max <= ell_min:
        out["bins"] = []
        return out
    edges = np.unique(np.geomspace(ell_min, ell_max + 1, n_bins + 1).astype(int))
    rows = []
    hf = None
    if halofit is not None:
        hf = pixwin**2 * limber_convergence(ell, chi_s, chi_min, halofit, table, om) + c_shot
    for lo, hi in zip(edges[:-1], edges[1:]):
        sl = slice(lo, hi)
        nmodes = float(np.sum(2 * ell[sl] + 1)) * fsky
        m = float(np.sum((2 * ell[sl] + 1) * model[sl]) / np.sum(2 * ell[sl] + 1))
        c = float(np.sum((2 * ell[sl] + 1) * cl[sl]) / np.sum(2 * ell[sl] + 1))
        row = {"ell_lo": int(lo), "ell_hi": int(hi), "ell": float(np.mean(ell[sl])), "cl": c, "limber": m,
               "sigma": m * math.sqrt(2.0 / max(nmodes, 1e-12))}
        if hf is not None:
            row["halofit"] = float(np.sum((2 * ell[sl] + 1) * hf[sl]) / np.sum(2 * ell[sl] + 1))
        rows.append(row)
    pulls = np.array([(r["cl"] - r["limber"]) / r["sigma"] for r in rows])
    out.update(bins=rows, chi2=float(np.sum(pulls**2)), n_bins=len(rows),
               max_abs_pull=float(np.abs(pulls).max()),
               full={"ell": ell.tolist(), "cl": cl.tolist(), "limber": model.tolist()})
    return out


def halofit_power(cosmology: Cosmology, z_max: float):
    """``P(k, chi)`` of CLASS halofit, or None where classy is not installed."""
    if importlib.util.find_spec("classy") is None:
        return None
    power = ClassPower.from_cosmology(cosmology, extra_params={"non_linear": "halofit"}, k_max_h_mpc=50.0,
                                      z_max=z_max + 0.1)
    table = DistanceTable(cosmology.omega_m, z_max * 1.01 + 0.01)

    def pk(k, chi):
        z = table.redshift(chi)
        out = np.empty_like(k)
        for j, zj in enumerate(z):
            kk = k[:, j]
            ok = kk <= 50.0
            out[:, j] = 0.0
            out[ok, j] = power.nonlinear(kk[ok], float(zj))
        return out
    return pk
