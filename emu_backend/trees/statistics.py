"""Statistics of merger trees: main-branch mass accretion histories, formation redshifts, progenitor counts,
in bins of final mass, and their comparison between two runs of the same initial conditions.

Definitions (docs/merger_trees.md)
----------------------------------
* **Main branch** of a halo at the last output: the halo, its main progenitor, that one's main progenitor,
  and so on. Its mass at output ``j`` is ``M(z_j)``; NaN where the branch skips output ``j`` (a relinked
  fly-by or a bridged gap) and 0 before the branch starts (the progenitor is below the resolution
  ``M_min = min_particles * particle_mass`` or was not linked).
* **Mass accretion history** (MAH): ``M(z_j) / M(z_last)``.
* **Formation redshift** ``z_f``: where the main branch falls to ``fraction`` (0.5) of the final mass, with
  ``M`` linearly interpolated in ``z`` between the first output (going back in time) where
  ``M <= fraction * M_0`` and the later output before it. Before the branch starts the mass is taken as
  ``M_min``, its upper bound. ``z_f`` is defined only for ``M_0 >= M_min / fraction`` (else the half-mass
  progenitor is unresolvable: ``unresolved``), and is *censored* (NaN, counted) when the branch is still
  above half its mass at the earliest output.
* **Progenitor counts**: the number of halos at output ``j`` in the tree of each final halo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.stats import ks_2samp

from ..checks import check_real
from ..errors import InputError
from .halos import OutputHalos
from .links import MergerTrees, best_matches, contingency_table

__all__ = ["main_branch_masses", "formation_redshifts", "progenitor_counts", "TreeStatistics",
           "tree_statistics", "compare_statistics", "match_final_halos", "DEFAULT_BIN_EDGES_MIN_PARTICLES"]

logger = logging.getLogger(__name__)

#: Default final-mass bin edges in units of the resolution limit ``min_particles * particle_mass``: from twice
#: it (the smallest final mass whose half-mass progenitor is resolved) up.
DEFAULT_BIN_EDGES_MIN_PARTICLES = (2.0, 5.0, 15.0, np.inf)


def main_branch_masses(trees: MergerTrees) -> tuple[np.ndarray, np.ndarray]:
    """Main-branch masses of the halos of the last output.

    Returns
    -------
    roots : ndarray, shape (R,), int64
        Global indices of the halos at the last output (catalog order).
    mass : ndarray, shape (R, n_outputs)
        ``M(z_j)`` [Msun/h]: NaN where the branch skips output ``j``, 0 before it starts.
    """
    if not isinstance(trees, MergerTrees):
        raise InputError(f"trees must be MergerTrees, got {type(trees).__name__}")
    n_out = trees.n_outputs
    roots = np.flatnonzero(trees.output == n_out - 1)
    mass = np.full((roots.size, n_out), np.nan)
    p = roots.copy()
    for j in range(n_out - 1, -1, -1):
        alive = p >= 0
        here = alive & (trees.output[np.maximum(p, 0)] == j)
        mass[here, j] = trees.mass[p[here]]
        p[here] = trees.main_progenitor[p[here]]
        mass[~alive, j] = 0.0
    return roots, mass


def formation_redshifts(trees: MergerTrees, fraction: float = 0.5):
    """Formation redshift of every halo of the last output (definition in the module docstring).

    Parameters
    ----------
    trees : MergerTrees
    fraction : float
        Of the final mass, in (0, 1).

    Returns
    -------
    z_form : ndarray, shape (R,)
        NaN where censored or unresolved.
    censored : ndarray, shape (R,), bool
        Above ``fraction`` of the final mass at the earliest output.
    unresolved : ndarray, shape (R,), bool
        ``M_0 < M_min / fraction``.
    """
    fraction = check_real(fraction, "fraction", 0.0, 1.0, lo_open=True, hi_open=True)
    _, mass = main_branch_masses(trees)
    z = trees.z
    m_min = trees.min_particles * trees.particle_mass
    m0 = mass[:, -1]
    target = fraction * m0
    unresolved = m0 < m_min / fraction
    z_form = np.full(m0.size, np.nan)
    done = unresolved.copy()
    prev_z = np.full(m0.size, z[-1])
    prev_m = m0.copy()
    for j in range(trees.n_outputs - 2, -1, -1):
        m = mass[:, j]
        m = np.where(m == 0.0, m_min, m)  # before the branch starts: below the resolution
        valid = ~np.isnan(m) & ~done
        cross = valid & (m <= target)
        w = (prev_m[cross] - target[cross]) / (prev_m[cross] - m[cross])
        z_form[cross] = prev_z[cross] + w * (z[j] - prev_z[cross])
        done |= cross
        keep = valid & ~cross
        prev_z[keep], prev_m[keep] = z[j], m[keep]
    censored = ~done
    return z_form, censored, unresolved


def progenitor_counts(trees: MergerTrees) -> np.ndarray:
    """Number of halos at each output in the tree of each halo of the last output, shape (R, n_outputs)."""
    roots = np.flatnonzero(trees.output == trees.n_outputs - 1)
    pos = np.full(trees.n_halos, -1, dtype=np.int64)
    pos[roots] = np.arange(roots.size)
    r = pos[trees.roots()]
    inside = r >= 0
    counts = np.zeros((roots.size, trees.n_outputs), dtype=np.int64)
    np.add.at(counts, (r[inside], trees.output[inside]), 1)
    return counts


@dataclass(frozen=True)
class TreeStatistics:
    """Per-halo statistics of the final halos of one run and their summaries in bins of final mass.

    Attributes
    ----------
    z : ndarray, shape (n_outputs,)
    final_mass : ndarray, shape (R,)
        [Msun/h].
    mah : ndarray, shape (R, n_outputs)
        ``M(z_j) / M_0`` (NaN where the branch skips an output, 0 before it starts).
    z_form, censored, unresolved : ndarray, shape (R,)
        As :func:`formation_redshifts`.
    progenitors : ndarray, shape (R, n_outputs)
    bin_edges : ndarray, shape (n_bins + 1,)
        Final-mass bin edges [Msun/h].
    bins : list of dict
        Per bin: ``mass_range_msun_h`` (upper edge None for no limit), ``n``, ``z_form`` quantiles (16, 50,
        84 %), ``n_censored``, ``mah`` quantiles per output, mean progenitor count per output.
    """

    z: np.ndarray
    final_mass: np.ndarray
    mah: np.ndarray
    z_form: np.ndarray
    censored: np.ndarray
    unresolved: np.ndarray
    progenitors: np.ndarray
    bin_edges: np.ndarray
    bins: list

    def summary(self) -> dict:
        """JSON-serialisable summary (the bins)."""
        edges = [float(e) if np.isfinite(e) else None for e in self.bin_edges]
        return {"z": self.z.tolist(), "bin_edges_msun_h": edges, "n_final_halos": int(self.final_mass.size),
                "bins": self.bins}


def _quantiles(x: np.ndarray) -> list:
    x = x[np.isfinite(x)]
    return [float(v) for v in np.percentile(x, [16, 50, 84])] if x.size else [None, None, None]


def tree_statistics(trees: MergerTrees, bin_edges_msun_h=None, fraction: float = 0.5) -> TreeStatistics:
    """MAHs, formation redshifts and progenitor counts of the final halos, in bins of final mass.

    Parameters
    ----------
    trees : MergerTrees
    bin_edges_msun_h : sequence of float, optional
        Increasing final-mass bin edges [Msun/h] (default :data:`DEFAULT_BIN_EDGES_MIN_PARTICLES` times the
        resolution limit ``min_particles * particle_mass``: 40, 100, 300 particles and up for 20).
    fraction : float
        Of the final mass for the formation redshift.
    """
    m_min = trees.min_particles * trees.particle_mass
    edges = (np.asarray(DEFAULT_BIN_EDGES_MIN_PARTICLES) * m_min if bin_edges_msun_h is None
             else np.asarray(bin_edges_msun_h, dtype=np.float64))
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0) or np.isnan(edges).any():
        raise InputError(f"bin_edges_msun_h must be at least two increasing numbers, got {edges.tolist()}")
    _, mass = main_branch_masses(trees)
    m0 = mass[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mah = mass / m0[:, None]
    z_form, censored, unresolved = formation_redshifts(trees, fraction)
    progs = progenitor_counts(trees)
    which = np.digitize(m0, edges) - 1
    bins = []
    for k in range(edges.size - 1):
        sel = which == k
        res = sel & ~unresolved
        hi = float(edges[k + 1]) if np.isfinite(edges[k + 1]) else None  # None: no upper edge (JSON has no inf)
        entry = {"mass_range_msun_h": [float(edges[k]), hi], "n": int(sel.sum()),
                 "n_unresolved": int((sel & unresolved).sum()), "n_censored": int((res & censored).sum()),
                 "z_form_q16_q50_q84": _quantiles(z_form[res & ~censored]),
                 "mah_median": [], "mah_q16": [], "mah_q84": [], "progenitors_mean": []}
        for j in range(trees.n_outputs):
            q = _quantiles(mah[sel, j])
            entry["mah_q16"].append(q[0])
            entry["mah_median"].append(q[1])
            entry["mah_q84"].append(q[2])
            entry["progenitors_mean"].append(float(progs[sel, j].mean()) if sel.any() else None)
        bins.append(entry)
    return TreeStatistics(trees.z.copy(), m0, mah, z_form, censored, unresolved, progs, edges, bins)


def compare_statistics(a: TreeStatistics, b: TreeStatistics) -> list:
    """Per mass bin: the two-sample KS test of the formation redshifts (``scipy.stats.ks_2samp``), the
    difference of their medians, and the largest difference of the median MAHs over the outputs.

    Both must share output times and bin edges. Returns a list of dicts, one per bin.
    """
    if not (np.allclose(a.z, b.z) and np.allclose(a.bin_edges, b.bin_edges)):
        raise InputError("compare_statistics needs the same output times and mass bins")
    out = []
    for k, (ba, bb) in enumerate(zip(a.bins, b.bins)):
        lo, hi = a.bin_edges[k], a.bin_edges[k + 1]
        za = a.z_form[(a.final_mass >= lo) & (a.final_mass < hi) & np.isfinite(a.z_form)]
        zb = b.z_form[(b.final_mass >= lo) & (b.final_mass < hi) & np.isfinite(b.z_form)]
        entry = {"mass_range_msun_h": ba["mass_range_msun_h"], "n": [ba["n"], bb["n"]],
                 "n_z_form": [int(za.size), int(zb.size)], "ks_statistic": None, "ks_pvalue": None,
                 "z_form_median_difference": None, "mah_median_max_abs_difference": None}
        if za.size and zb.size:
            ks = ks_2samp(za, zb)
            entry.update(ks_statistic=float(ks.statistic), ks_pvalue=float(ks.pvalue),
                         z_form_median_difference=float(np.median(za) - np.median(zb)))
        ma = np.array([np.nan if v is None else v for v in ba["mah_median"]])
        mb = np.array([np.nan if v is None else v for v in bb["mah_median"]])
        diff = np.abs(ma - mb)
        if np.isfinite(diff).any():
            entry["mah_median_max_abs_difference"] = float(np.nanmax(diff))
        out.append(entry)
    return out


def match_final_halos(a: OutputHalos, b: OutputHalos, min_shared_fraction: float = 0.5):
    """Pairs of halos of two runs of the same particles (same Lagrangian IDs) that are each other's best match.

    A pair ``(h, g)`` has ``g`` the halo of ``b`` holding most of ``h``'s members and ``h`` the halo of ``a``
    holding most of ``g``'s, each share at least ``min_shared_fraction`` of the halo's members.

    Returns
    -------
    index_a, index_b : ndarray, int64
        Catalog indices of the matched halos.
    """
    f = check_real(min_shared_fraction, "min_shared_fraction", 0.0, 1.0, lo_open=True)
    if a.halo_of_id.size != b.halo_of_id.size:
        raise InputError(f"the runs hold {a.halo_of_id.size} and {b.halo_of_id.size} particles")
    na, nb = a.catalog.n_halos, b.catalog.n_halos
    table = contingency_table(a.halo_of_id, b.halo_of_id, na, nb)
    ra, ca, cnt_a = best_matches(table)
    rb, cb, cnt_b = best_matches(table.T.tocsr())
    back = np.full(nb, -1, dtype=np.int64)
    okb = cnt_b >= f * b.catalog.n_particles[rb]
    back[rb[okb]] = cb[okb]
    oka = (cnt_a >= f * a.catalog.n_particles[ra]) & (back[ca] == ra)
    return ra[oka], ca[oka]
