"""The figure of a run (``emu-backend run``'s ``power.png``): matter P(k) against the realization's own
linear field, the 2LPT baseline, an optional N-body reference and halofit, beside density slices.

The estimator is the validation suite's (:func:`~emu_backend.validation.mesh.density_mesh` and
:func:`~emu_backend.validation.power.power_spectrum`): CIC on a mesh of :data:`MESH_FACTOR` times the
particle grid per side (up to :data:`FINE_MESH_MAX_GRID` particles per side; the grid itself above), interlaced and window-deconvolved, in bins of width ``k_f = 2 pi / L``, plotted up
to :data:`K_MAX_FRACTION` of the particle grid's Nyquist frequency. On a linear field there it is accurate
to :data:`ESTIMATOR_ACCURACY` (``tests/test_first_hour_figure.py``). The reference of the ratio panel is
the realization's own linear power (the ICs' density contrast, same seed) times ``D(z)^2``, so the box's
cosmic variance cancels and the ratio shows the nonlinear evolution alone.

matplotlib draws on a bare ``Figure`` (Agg canvas): no pyplot state, no display, no global backend
change. :func:`png_metadata` reads back the provenance stored in the PNG.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from .._version import __version__
from ..datatypes.meta import meta_to_json
from ..datatypes.snapshot import Snapshot
from ..io.atomic import atomic_path
from ..validation.mesh import density_mesh
from ..validation.power import PowerSpectrum, default_k_edges, power_spectrum

__all__ = ["MESH_FACTOR", "FINE_MESH_MAX_GRID", "plot_mesh", "K_MAX_FRACTION", "ESTIMATOR_ACCURACY", "WINDOW",
           "PowerCurves", "plotted_k_max", "matter_power", "linear_power", "power_curves", "density_slice", "plot_power", "png_metadata"]

logger = logging.getLogger(__name__)

#: Mesh cells per particle per side of the plotted P(k) (grids up to :data:`FINE_MESH_MAX_GRID`).
MESH_FACTOR = 2
#: Largest particle grid painted on the finer mesh; larger runs paint on the particle grid itself (their
#: memory estimate, :func:`~emu_backend.inference.memory.box_bytes`, counts a mesh of the grid's size).
FINE_MESH_MAX_GRID = 64
#: Mass assignment of the plotted P(k) (interlaced and window-deconvolved).
WINDOW = "cic"
#: Largest plotted k, as a fraction of the particle grid's Nyquist frequency ``pi n / L``.
K_MAX_FRACTION = 0.5
#: Relative accuracy of the plotted P(k) of a linear (lattice-like) particle field up to the plotted k_max on
#: the finer mesh: aliasing and the window's residual (measured against the ICs' own power at z = 100 for
#: several seeds; on the particle grid itself, above FINE_MESH_MAX_GRID, it is about 5%).
ESTIMATOR_ACCURACY = 0.025
#: Thickness of the density slices, as a fraction of the box.
SLICE_FRACTION = 0.125


def plot_mesh(grid: int) -> int:
    """Mesh points per side of the plotted P(k) and slices for a ``grid^3`` run."""
    return MESH_FACTOR * grid if grid <= FINE_MESH_MAX_GRID else grid


def plotted_k_max(grid: int, box_size: float) -> float:
    """Largest plotted k [h/Mpc]: :data:`K_MAX_FRACTION` of the particle grid's Nyquist ``pi grid / L``."""
    return K_MAX_FRACTION * np.pi * grid / box_size


def matter_power(snapshot: Snapshot, k_edges=None) -> PowerSpectrum:
    """Matter P(k) [(Mpc/h)^3] of a snapshot with the plotted estimator.

    CIC on a ``plot_mesh(grid)^3`` mesh (:func:`plot_mesh`), interlaced, window-deconvolved; bins of width ``k_f``
    (:func:`~emu_backend.validation.power.default_k_edges` of the particle grid) unless ``k_edges``.
    """
    n_mesh = plot_mesh(snapshot.grid)
    delta = density_mesh(snapshot.positions, snapshot.box_size, n_mesh, window=WINDOW, interlace=True)
    edges = default_k_edges(snapshot.grid, snapshot.box_size) if k_edges is None else k_edges
    return power_spectrum(delta, snapshot.box_size, k_edges=edges)


def linear_power(linear_density, box_size: float, k_edges=None) -> PowerSpectrum:
    """P(k) [(Mpc/h)^3] at z = 0 of the realization's linear density contrast (``InitialConditions.density``)."""
    delta = np.asarray(linear_density)
    edges = default_k_edges(delta.shape[0], box_size) if k_edges is None else k_edges
    return power_spectrum(delta, box_size, k_edges=edges)


@dataclass(frozen=True, eq=False)
class PowerCurves:
    """What the P(k) panels of :func:`plot_power` draw, bin by bin, for ``k <= k_max``.

    Attributes
    ----------
    k : ndarray, shape (n_bins,)
        Mean |k| of the bins [h/Mpc].
    z : tuple of float
        Redshift of each row.
    power : ndarray, shape (n_z, n_bins)
        The run's P(k) [(Mpc/h)^3].
    linear : ndarray, shape (n_z, n_bins)
        The realization's own linear P(k) times ``D(z)^2`` [(Mpc/h)^3].
    baseline, reference : ndarray, shape (n_z, n_bins), or None
        P(k) of the baseline (2LPT) and of the N-body reference from the same ICs.
    halofit, halofit_linear : ndarray, shape (n_z, n_bins), or None
        Halofit's nonlinear P(k) and CLASS's linear P(k) at the bins' k [(Mpc/h)^3].
    k_max : float
        Largest plotted k [h/Mpc] (:func:`plotted_k_max`).
    """

    k: np.ndarray
    z: tuple
    power: np.ndarray
    linear: np.ndarray
    baseline: np.ndarray | None
    reference: np.ndarray | None
    halofit: np.ndarray | None
    halofit_linear: np.ndarray | None
    k_max: float


def power_curves(snapshots: Sequence[Snapshot], linear_density, *, baselines: Sequence[Snapshot] | None = None,
                 references: Sequence[Snapshot] | None = None,
                 halofit: Callable[[np.ndarray, float], tuple] | None = None) -> PowerCurves:
    """The plotted P(k) of a run's snapshots and their references.

    Parameters
    ----------
    snapshots : sequence of Snapshot
        The run's outputs (one box, grid and cosmology).
    linear_density : ndarray, shape (n, n, n)
        The realization's linear density contrast at z = 0 (``InitialConditions.density``).
    baselines, references : sequence of Snapshot, optional
        Baseline (2LPT) and N-body outputs from the same ICs, one per snapshot.
    halofit : callable, optional
        ``halofit(k, z) -> (P_nonlinear, P_linear)`` [(Mpc/h)^3] of k [h/Mpc] (CLASS).

    Returns
    -------
    PowerCurves
    """
    first = snapshots[0]
    box, grid = first.box_size, first.grid
    edges = default_k_edges(grid, box)
    k_max = plotted_k_max(grid, box)
    p_lin = linear_power(linear_density, box, k_edges=edges)
    keep = np.isfinite(p_lin.power) & (p_lin.k <= k_max)
    k = p_lin.k[keep]

    def rows(snaps):
        return None if snaps is None else np.stack([matter_power(s, edges).power[keep] for s in snaps])

    zs = tuple(float(s.z) for s in snapshots)
    growth = np.array([float(s.cosmology.growth_factor(s.z)) for s in snapshots])
    hf = hl = None
    if halofit is not None:
        pairs = [halofit(k, z) for z in zs]
        hf = np.stack([np.asarray(p[0], dtype=np.float64) for p in pairs])
        hl = np.stack([np.asarray(p[1], dtype=np.float64) for p in pairs])
    return PowerCurves(k=k, z=zs, power=rows(snapshots), linear=p_lin.power[keep][None, :] * growth[:, None] ** 2,
                       baseline=rows(baselines), reference=rows(references), halofit=hf, halofit_linear=hl,
                       k_max=k_max)


def density_slice(snapshot: Snapshot) -> np.ndarray:
    """``log10(1 + delta)`` of a slab (:data:`SLICE_FRACTION` of the box thick, at z = 0 of the box along
    the third axis), CIC on a ``plot_mesh(grid)^2`` mesh, shape (n_mesh, n_mesh)."""
    n_mesh = plot_mesh(snapshot.grid)
    delta = density_mesh(snapshot.positions, snapshot.box_size, n_mesh, window=WINDOW, deconvolve=False)
    depth = max(1, int(round(SLICE_FRACTION * n_mesh)))
    return np.log10(np.maximum(1.0 + delta[:, :, :depth].mean(axis=2), 1e-3))


def plot_power(path, curves: PowerCurves, slices: Mapping[str, np.ndarray] | None = None, *,
               label: str = "emulator", baseline_label: str = "2LPT", reference_label: str = "N-body",
               weights_label: str | None = None, box_size: float | None = None, grid: int | None = None,
               untrained: bool = False, metadata: dict | None = None, overwrite: bool = False) -> Path:
    """Write the run's figure: P(k), P / P_lin(realization), and density slices.

    Parameters
    ----------
    path : str or Path
        Destination ``.png`` (written atomically; refused if it exists unless ``overwrite``).
    curves : PowerCurves
        From :func:`power_curves`.
    slices : mapping of str to ndarray, optional
        Density slices by name (:func:`density_slice`), drawn side by side with one colour scale.
    label, baseline_label, reference_label : str
        Legend names.
    weights_label : str, optional
        The emulator's weights (a path, or the shipped weights' description and checksum prefix).
    box_size, grid : float, int, optional
        For the title [Mpc/h, particles per side].
    untrained : bool
        Mark the figure as made with untrained (random) weights.
    metadata : dict, optional
        Provenance stored in the PNG's text chunks (JSON).
    overwrite : bool

    Returns
    -------
    Path
    """
    n_slices = len(slices) if slices else 0
    fig = Figure(figsize=(7.5 + 3.6 * min(n_slices, 1), 7.0), layout="constrained")
    grid_spec = fig.add_gridspec(3, 1 + (1 if n_slices else 0), width_ratios=(2.1, 1) if n_slices else None,
                                 height_ratios=(3, 1.6, 0.25))
    ax = fig.add_subplot(grid_spec[0, 0])
    rax = fig.add_subplot(grid_spec[1, 0], sharex=ax)
    k = curves.k
    for i, z in enumerate(curves.z):
        c = f"C{i % 10}"
        ax.loglog(k, curves.power[i], "-", color=c, label=f"{label} z={z:g}")
        ax.loglog(k, curves.linear[i], ":", color=c, label=f"linear (this realization) z={z:g}")
        rax.semilogx(k, curves.power[i] / curves.linear[i], "-", color=c)
        if curves.baseline is not None:
            ax.loglog(k, curves.baseline[i], "--", color=c, label=f"{baseline_label} z={z:g}")
            rax.semilogx(k, curves.baseline[i] / curves.linear[i], "--", color=c)
        if curves.reference is not None:
            ax.loglog(k, curves.reference[i], "-", color=c, lw=2.5, alpha=0.4, label=f"{reference_label} z={z:g}")
            rax.semilogx(k, curves.reference[i] / curves.linear[i], "-", color=c, lw=2.5, alpha=0.4)
        if curves.halofit is not None:
            ax.loglog(k, curves.halofit[i], "-.", color=c, lw=0.9, label=f"halofit z={z:g}")
            rax.semilogx(k, curves.halofit[i] / curves.halofit_linear[i], "-.", color=c, lw=0.9)
    rax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_ylabel(r"$P(k)$ [$(h^{-1}\mathrm{Mpc})^3$]")
    rax.set_ylabel(r"$P / P_\mathrm{lin}$ (this realization)")
    rax.set_xlabel(r"$k$ [$h\,\mathrm{Mpc}^{-1}$]")
    ax.legend(fontsize="x-small", ncol=2)
    ax.tick_params(labelbottom=False)
    note = fig.add_subplot(grid_spec[2, :])
    note.axis("off")
    mesh = plot_mesh(grid) if grid else None
    estimator = (f"{WINDOW.upper()}{f' on a {mesh}^3 mesh' if mesh else ''}, interlaced, window-deconvolved; "
                 f"k <= {K_MAX_FRACTION:g} k_Nyquist = {curves.k_max:.3g} h/Mpc")
    note.text(0.0, 0.5, f"weights: {weights_label or 'n/a'}\nP(k): {estimator}", fontsize="small", va="center",
              transform=note.transAxes, color="red" if untrained else "black")
    if n_slices:
        sub = grid_spec[0:2, 1].subgridspec(n_slices, 1)
        images = list(slices.items())
        lo = min(float(np.percentile(img, 1)) for _, img in images)
        hi = max(float(np.percentile(img, 99.5)) for _, img in images)
        extent = (0, box_size or 1, 0, box_size or 1)
        for j, (name, img) in enumerate(images):
            sax = fig.add_subplot(sub[j, 0])
            mappable = sax.imshow(img.T, origin="lower", cmap="magma", vmin=lo, vmax=hi, extent=extent)
            sax.set_title(name, fontsize="small")
            sax.tick_params(labelsize="x-small")
            if j == n_slices - 1:
                sax.set_xlabel(r"[$h^{-1}$Mpc]", fontsize="small")
        fig.colorbar(mappable, ax=fig.axes[-n_slices:], label=r"$\log_{10}(1+\delta)$, slab", shrink=0.8)
    title = f"matter P(k), L = {box_size:g} Mpc/h, n = {grid}" if box_size and grid else "matter P(k)"
    if untrained:
        title = "UNTRAINED (RANDOM) EMULATOR WEIGHTS: NOT PHYSICAL\n" + title
        ax.text(0.5, 0.5, "UNTRAINED WEIGHTS\nNOT PHYSICAL", transform=ax.transAxes, ha="center", va="center",
                fontsize=28, color="red", alpha=0.25, rotation=20)
    fig.suptitle(title, fontsize="medium", color="red" if untrained else "black")

    text = {"Software": f"emu_backend {__version__}", "Description": meta_to_json(metadata or {})}
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata=text)
    logger.info("wrote P(k) plot %s", path)
    return path


def png_metadata(path) -> dict:
    """Read back the provenance JSON stored by :func:`plot_power` (for tests and users)."""
    with Image.open(path) as im:
        return json.loads(im.text.get("Description", "{}"))
