"""Compare candidate snapshots (emulator, 2LPT, ...) with a reference N-body snapshot, statistic by statistic.

:func:`compare` is a pure function: snapshots in, a JSON-serialisable dict out (arrays as lists, NaN as
``None``). Layout of the result::

    {"meta":       box, grid, mesh, a, z, k_max, k_nyquist, cosmology, candidate names, settings,
     "truth":      {"power": {k, power, n_modes}, "multipoles": {...}, "bispectrum": {...},
                    "mass_function": {...} or None, "n_halos": int},
     "candidates": {name: {"power", "power_ratio", "transfer", "r",                  density, mesh n_mesh
                           "displacement": {"r", "power_ratio", "error_power_ratio", "rms_error"},
                           "velocity":     {... same, rms_error in km/s},              Lagrangian grid
                           "momentum":     {"r", "power_ratio"},                      mesh n_mesh
                           "multipoles":   {"poles", "ratio"},                         redshift space
                           "bispectrum":   {"B", "Q", "ratio"},                        equilateral + squeezed
                           "mass_function": {"dn_dlnm", "ratio", "ratio_err"} or None}},
     "summary":    {name: {"max_abs_pk_ratio_minus_1", "min_r", "max_abs_transfer_minus_1",
                           "min_r_displacement", "rms_displacement_error_mpc_h",
                           "rms_velocity_error_km_s", "max_abs_bispectrum_ratio_minus_1",
                           "max_abs_mass_function_ratio_minus_1"}}}

Every summary scalar is taken over the bins with ``k <= k_max`` (the bispectrum: all three sides).
"""

from __future__ import annotations

import importlib.util
import logging
import math

import numpy as np

from ..checks import check_int, check_positive
from ..datatypes.snapshot import Snapshot, check_matching_snapshots
from ..errors import InputError
from .bispectrum import bispectrum, equilateral_triangles, squeezed_triangles
from .halo_stats import mass_function
from .halos import find_halos_in_snapshot
from .mesh import density_mesh, momentum_mesh, transfer_function
from .power import cross_correlation, default_k_edges, power_spectrum, vector_cross_correlation, vector_power
from .rsd import multipoles

__all__ = ["compare", "default_triangles", "summary_keys"]

logger = logging.getLogger(__name__)


def _list(values) -> list:
    """Array -> list of floats with non-finite values as None (strict JSON)."""
    arr = np.asarray(values, dtype=np.float64)
    out = arr.tolist()

    def fix(x):
        if isinstance(x, list):
            return [fix(v) for v in x]
        return x if math.isfinite(x) else None

    return fix(out)


def _ratio(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=np.isfinite(a) & np.isfinite(b) & (b != 0))
    return out


def _max_abs_dev(values, mask) -> float | None:
    v = np.asarray(values, np.float64)[mask]
    v = v[np.isfinite(v)]
    return float(np.max(np.abs(v - 1.0))) if v.size else None


def _min(values, mask) -> float | None:
    v = np.asarray(values, np.float64)[mask]
    v = v[np.isfinite(v)]
    return float(np.min(v)) if v.size else None


def default_triangles(box_size: float, n_mesh: int, k_max: float) -> tuple[np.ndarray, float]:
    """Equilateral and squeezed triangle bins up to ``k_max`` (at most ~30), and their shell width [h/Mpc].

    Equilateral: ``k = 2 k_f, 3 k_f, ...`` (at most 15 bins, spacing widened to fit); squeezed:
    ``(k_s, k_s, 2 k_f)`` for ``k_s = 4 k_f, ...`` (at most 15). Shell width ``k_f = 2 pi / L``.
    """
    kf = 2.0 * np.pi / box_size
    k_top = min(k_max, np.pi * n_mesh / box_size) - 0.5 * kf
    tris = []
    if k_top >= 2 * kf:
        step = kf * max(1, math.ceil((k_top - 2 * kf) / kf / 14))
        tris.append(equilateral_triangles(2 * kf, k_top, step))
    if k_top >= 4 * kf:
        step = kf * max(1, math.ceil((k_top - 4 * kf) / kf / 14))
        tris.append(squeezed_triangles(2 * kf, np.arange(4 * kf, k_top + 1e-9 * kf, step)))
    return (np.concatenate(tris) if tris else np.zeros((0, 3))), kf


def summary_keys() -> tuple[str, ...]:
    """Names of the per-candidate summary scalars."""
    return ("max_abs_pk_ratio_minus_1", "min_r", "max_abs_transfer_minus_1", "min_r_displacement",
            "rms_displacement_error_mpc_h", "rms_velocity_error_km_s", "max_abs_bispectrum_ratio_minus_1",
            "max_abs_mass_function_ratio_minus_1")


def _check(truth, candidates, n_mesh, k_max):
    if not isinstance(truth, Snapshot):
        raise InputError(f"truth must be a Snapshot, got {type(truth).__name__}")
    if not isinstance(candidates, dict) or not candidates:
        raise InputError(f"candidates must be a non-empty dict name -> Snapshot, got {candidates!r}")
    for name, snap in candidates.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"candidate names must be non-empty strings, got {name!r}")
        check_matching_snapshots(snap, truth, f"candidate {name!r}", "the truth", box_rtol=1e-6, a_rtol=1e-5)
    n_mesh = check_int(truth.grid if n_mesh is None else n_mesh, "n_mesh", 4, 2048)
    k_nyq = np.pi * n_mesh / truth.box_size
    k_max = 0.5 * k_nyq if k_max is None else check_positive(k_max, "k_max", unit="h/Mpc")
    return n_mesh, k_max, k_nyq


def _pair_stats(field_c, field_t, box, edges, vector):
    """r(k), power ratio, error power ratio and rms error of a candidate field against the truth field."""
    cc = (vector_cross_correlation if vector else cross_correlation)(field_c, field_t, box, edges)
    err = np.asarray(field_c, np.float64) - np.asarray(field_t, np.float64)
    p_err = (vector_power if vector else power_spectrum)(err, box, edges)
    return {"k": _list(cc.k), "r": _list(cc.r), "power_ratio": _list(_ratio(cc.p_aa.power, cc.p_bb.power)),
            "error_power_ratio": _list(_ratio(p_err.power, cc.p_bb.power)),
            "rms_error": float(np.sqrt(np.mean(np.sum(err**2, axis=0) if vector else err**2)))}, cc


def _halo_stats(snapshot, catalog, halos, min_particles):
    if catalog is not None or not halos:
        return catalog

    return find_halos_in_snapshot(snapshot, b=0.2, min_particles=min_particles)


def compare(truth: Snapshot, candidates: dict, *, n_mesh: int | None = None, k_max: float | None = None,
            window: str = "cic", interlace: bool = True, los: int = 2, triangles=None,
            truth_halos=None, halos: bool | None = None, min_particles: int = 20, mass_edges=None) -> dict:
    """Every validation statistic of each candidate snapshot against a reference snapshot.

    Parameters
    ----------
    truth : Snapshot
        Reference (N-body) snapshot.
    candidates : dict of str -> Snapshot
        Snapshots to test (e.g. ``{"emulator": ..., "2lpt": ...}``), same grid, box and ``a``.
    n_mesh : int, optional
        Mesh for density, momentum, RSD and bispectrum (default: the particle grid ``n``).
    k_max : float, optional
        Largest k [h/Mpc] of the summary scalars (default half the mesh Nyquist ``pi n_mesh / 2L``).
    window, interlace : str, bool
        Mass assignment of the meshes (window deconvolved).
    los : int
        Line of sight axis of the RSD multipoles.
    triangles : array_like, shape (M, 3), optional
        Bispectrum bins [h/Mpc]; default :func:`default_triangles`.
    truth_halos : HaloCatalog, optional
        Halos of the truth (e.g. its FoF catalogue from files); otherwise FoF on the truth.
    halos : bool, optional
        Compare halo mass functions (FoF b = 0.2 with halotools on every candidate, and on the truth
        unless ``truth_halos`` is given). Default: True when halotools is installed.
    min_particles : int
        Smallest FoF group kept.
    mass_edges : array_like, optional
        Halo mass bin edges [Msun/h]; default 8 log bins from ``min_particles`` particle masses to
        the largest truth halo.

    Returns
    -------
    dict
        JSON-serialisable (module docstring for the layout).

    Examples
    --------
    >>> from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    >>> from emu_backend import InitialConditions, simulate
    >>> ics = InitialConditions.from_noise(16, None, QUIJOTE_FIDUCIAL, seed=1)
    >>> truth, za = (simulate(ics, QUIJOTE_FIDUCIAL, z=0.0, backend=b)[0] for b in ("2lpt", "za"))
    >>> res = compare(truth, {"za": za}, halos=False)
    >>> 0.9 < res["summary"]["za"]["min_r"] <= 1.0
    True
    """
    n_mesh, k_max, k_nyq = _check(truth, candidates, n_mesh, k_max)
    box = truth.box_size
    if halos is None:  # FoF on the candidates needs halotools

        halos = importlib.util.find_spec("halotools") is not None
        if not halos:
            logger.warning("halotools is not installed: halo mass functions are skipped")
    edges = default_k_edges(n_mesh, box)
    grid_edges = default_k_edges(truth.grid, box)
    om = truth.cosmology.omega_m

    def dens(s):
        return density_mesh(s.positions, box, n_mesh, window=window, interlace=interlace)

    def mom(s):
        return momentum_mesh(s.positions, s.velocities, box, n_mesh, window=window, interlace=interlace)

    def rsd(s):
        return multipoles(s.positions, s.velocities, box, n_mesh, s.a, om, los=los, window=window,
                          interlace=interlace, k_edges=edges)

    if triangles is None:
        tri, width = default_triangles(box, n_mesh, k_max)
    else:
        tri, width = np.asarray(triangles, np.float64), None

    def bis(delta):
        return bispectrum(delta, box, tri, k_width=width) if len(tri) else None

    d_t, mom_t = dens(truth), mom(truth)
    p_t = power_spectrum(d_t, box, edges)
    mp_t = rsd(truth)
    b_t = bis(d_t)
    dis_t, vel_t = truth.displacement_field(), truth.velocity_field()
    cat_t = _halo_stats(truth, truth_halos, halos, min_particles)
    mf_t = None
    if cat_t is not None:

        if mass_edges is None and len(cat_t.mass):
            lo = min_particles * cat_t.particle_mass
            hi = max(float(np.max(cat_t.mass)) * 1.0001, lo * 2)
            mass_edges = np.geomspace(lo, hi, 9)
        mf_t = mass_function(cat_t, mass_edges=mass_edges) if mass_edges is not None else None

    kmask = np.isfinite(p_t.k) & (p_t.k <= k_max)
    result = {
        "meta": {"box_size_mpc_h": box, "grid": truth.grid, "n_mesh": n_mesh, "a": truth.a, "z": truth.z,
                 "k_max_h_mpc": k_max, "k_nyquist_h_mpc": k_nyq, "window": window, "interlace": bool(interlace),
                 "los": int(los), "cosmology": truth.cosmology.to_dict(), "candidates": list(candidates),
                 "truth_backend": truth.meta.get("backend"), "halos": bool(halos)},
        "truth": {
            "power": {"k": _list(p_t.k), "power": _list(p_t.power), "n_modes": p_t.n_modes.tolist()},
            "multipoles": {"k": _list(mp_t.k), "ells": list(mp_t.ells), "poles": _list(mp_t.poles)},
            "bispectrum": None if b_t is None else {"k1": _list(b_t.k1), "k2": _list(b_t.k2), "k3": _list(b_t.k3),
                                                    "B": _list(b_t.B), "Q": _list(b_t.Q),
                                                    "n_triangles": b_t.n_triangles.tolist()},
            "n_halos": None if cat_t is None else int(len(cat_t.mass)),
            "mass_function": None if mf_t is None else {
                "mass_edges": _list(mf_t.mass_edges), "mass": _list(mf_t.mass), "dn_dlnm": _list(mf_t.dn_dlnm),
                "dn_dlnm_err": _list(mf_t.dn_dlnm_err), "counts": np.asarray(mf_t.counts).tolist()},
        },
        "candidates": {},
        "summary": {},
    }
    for name, snap in candidates.items():
        d_c = dens(snap)
        cc = cross_correlation(d_c, d_t, box, edges)
        p_c = cc.p_aa
        t_k = transfer_function(p_c, p_t)
        ratio = _ratio(p_c.power, p_t.power)
        dis, dis_cc = _pair_stats(snap.displacement_field(), dis_t, box, grid_edges, True)
        vel, _ = _pair_stats(snap.velocity_field(), vel_t, box, grid_edges, True)
        mom_cc = vector_cross_correlation(mom(snap), mom_t, box, edges)
        mp_c = rsd(snap)
        b_c = bis(d_c)
        entry = {
            "power": _list(p_c.power), "power_ratio": _list(ratio), "transfer": _list(t_k), "r": _list(cc.r),
            "displacement": dis, "velocity": vel,
            "momentum": {"r": _list(mom_cc.r), "power_ratio": _list(_ratio(mom_cc.p_aa.power, mom_cc.p_bb.power))},
            "multipoles": {"poles": _list(mp_c.poles), "ratio": _list(_ratio(mp_c.poles, mp_t.poles))},
            "bispectrum": None if b_c is None else {"B": _list(b_c.B), "Q": _list(b_c.Q),
                                                    "ratio": _list(_ratio(b_c.B, b_t.B))},
            "mass_function": None,
            "n_halos": None,
        }
        mf_dev = None
        if mf_t is not None:

            cat_c = _halo_stats(snap, None, True, min_particles)
            mf_c = mass_function(cat_c, mass_edges=mf_t.mass_edges)
            r_mf = _ratio(mf_c.dn_dlnm, mf_t.dn_dlnm)
            rel = np.sqrt(_ratio(mf_c.dn_dlnm_err, mf_c.dn_dlnm) ** 2 + _ratio(mf_t.dn_dlnm_err, mf_t.dn_dlnm) ** 2)
            entry["mass_function"] = {"dn_dlnm": _list(mf_c.dn_dlnm), "dn_dlnm_err": _list(mf_c.dn_dlnm_err),
                                      "counts": np.asarray(mf_c.counts).tolist(), "ratio": _list(r_mf),
                                      "ratio_err": _list(r_mf * rel)}
            entry["n_halos"] = int(len(cat_c.mass))
            mf_dev = _max_abs_dev(r_mf, np.ones(r_mf.shape, bool))
        b_dev = None
        if b_c is not None:
            bmask = np.max(np.stack([b_t.k1, b_t.k2, b_t.k3]), axis=0) <= k_max
            b_dev = _max_abs_dev(_ratio(b_c.B, b_t.B), bmask)
        gk = np.asarray(dis_cc.k)
        gmask = np.isfinite(gk) & (gk <= k_max)
        result["candidates"][name] = entry
        result["summary"][name] = {
            "max_abs_pk_ratio_minus_1": _max_abs_dev(ratio, kmask),
            "min_r": _min(cc.r, kmask),
            "max_abs_transfer_minus_1": _max_abs_dev(t_k, kmask),
            "min_r_displacement": _min(dis_cc.r, gmask),
            "rms_displacement_error_mpc_h": dis["rms_error"],
            "rms_velocity_error_km_s": vel["rms_error"],
            "max_abs_bispectrum_ratio_minus_1": b_dev,
            "max_abs_mass_function_ratio_minus_1": mf_dev,
        }
        logger.info("compare %s: max|P/P_ref - 1| = %s, min r = %s (k <= %.3g h/Mpc)", name,
                    result["summary"][name]["max_abs_pk_ratio_minus_1"], result["summary"][name]["min_r"], k_max)
    return result
