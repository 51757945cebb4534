"""The P(k) figure of a run (``emu-backend run``): matter power against linear theory and a baseline.

matplotlib draws on a bare ``Figure`` (Agg canvas): no pyplot state, no display, no global backend
change. :func:`png_metadata` reads back the provenance stored in the PNG.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from .._version import __version__
from ..datatypes.meta import meta_to_json
from ..datatypes.snapshot import Snapshot
from ..io.atomic import atomic_path
from ..validation.power import power_spectrum

__all__ = ["matter_power", "plot_power", "png_metadata"]

logger = logging.getLogger(__name__)


def matter_power(snapshot: Snapshot, n_mesh: int | None = None):
    """Matter P(k) [(Mpc/h)^3] of a snapshot: CIC density on a ``n_mesh^3`` mesh (default: the grid).

    Returns
    -------
    PowerSpectrum
        See :func:`emu_backend.validation.power.power_spectrum` (no window deconvolution).
    """
    delta = snapshot.density(n_mesh or snapshot.grid, window="cic")
    return power_spectrum(delta, snapshot.box_size)


def plot_power(path, snapshots: Sequence[Snapshot], baselines: Sequence[Snapshot] | None, power, *,
               label: str = "emulator", baseline_label: str = "2LPT", untrained: bool = False,
               metadata: dict | None = None, overwrite: bool = False) -> Path:
    """Write a PNG of P(k) per snapshot with ``P_lin(k) D(z)^2`` and an optional baseline.

    Parameters
    ----------
    path : str or Path
        Destination ``.png`` (written atomically; refused if it exists unless ``overwrite``).
    snapshots : sequence of Snapshot
        The run's outputs.
    baselines : sequence of Snapshot or None
        Baseline outputs at the same redshifts (e.g. 2LPT from the same ICs).
    power : LinearPower
        Linear P(k) at z = 0 [(Mpc/h)^3] of k [h/Mpc].
    label, baseline_label : str
        Legend names.
    untrained : bool
        Mark the figure as made with untrained (random) weights.
    metadata : dict, optional
        Provenance stored in the PNG's text chunks (JSON).
    overwrite : bool

    Returns
    -------
    Path
    """
    # a bare Figure renders through the Agg canvas: no pyplot state, no display, no global backend change
    fig = Figure(figsize=(7.0, 6.5), layout="constrained")
    ax, rax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1.3))
    colours = [f"C{i}" for i in range(10)]
    for i, snap in enumerate(snapshots):
        c = colours[i % 10]
        ps = matter_power(snap)
        k_nyquist = np.pi * snap.grid / snap.box_size  # corner modes beyond it are aliased
        ok = np.isfinite(ps.power) & (ps.k > 0) & (ps.k <= k_nyquist)
        k = ps.k[ok]
        p_lin = np.asarray(power(k)) * float(snap.cosmology.growth_factor(snap.z)) ** 2
        ax.loglog(k, ps.power[ok], "-", color=c, label=f"{label} z={snap.z:g}")
        ax.loglog(k, p_lin, ":", color=c, label=f"linear z={snap.z:g}")
        rax.semilogx(k, ps.power[ok] / p_lin, "-", color=c)
        if baselines is not None:
            pb = matter_power(baselines[i])
            ax.loglog(k, pb.power[ok], "--", color=c, label=f"{baseline_label} z={snap.z:g}")
            rax.semilogx(k, pb.power[ok] / p_lin, "--", color=c)
    rax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_ylabel(r"$P(k)$ [$(h^{-1}\mathrm{Mpc})^3$]")
    rax.set_ylabel(r"$P / P_\mathrm{lin}$")
    rax.set_xlabel(r"$k$ [$h\,\mathrm{Mpc}^{-1}$]")
    ax.legend(fontsize="small", ncol=2)
    first = snapshots[0]
    title = f"matter P(k), L = {first.box_size:g} Mpc/h, n = {first.grid}, CIC on the particle grid"
    if untrained:
        title = "UNTRAINED (RANDOM) EMULATOR WEIGHTS: NOT PHYSICAL\n" + title
        ax.text(0.5, 0.5, "UNTRAINED WEIGHTS\nNOT PHYSICAL", transform=ax.transAxes, ha="center", va="center",
                fontsize=28, color="red", alpha=0.25, rotation=20)
    fig.suptitle(title, fontsize="medium", color="red" if untrained else "black")

    text = {"Software": f"emu_backend {__version__}",
            "Description": meta_to_json(metadata or {})}
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata=text)
    logger.info("wrote P(k) plot %s", path)
    return path


def png_metadata(path) -> dict:
    """Read back the provenance JSON stored by :func:`plot_power` (for tests and users)."""
    with Image.open(path) as im:
        return json.loads(im.text.get("Description", "{}"))
