"""Convergence of a PM N-body configuration: the same ICs run with two settings, compared in P(k).

The training set is only as good as its N-body runs. This module measures how far a run with the
shipped settings (e.g. JaxPM mesh factor 2, ODE tolerance 1e-4) is from a finer reference (finer
force mesh, tighter tolerance) run from *the same* initial conditions, so the comparison carries no
sample variance: every difference is the discretisation error of the coarser run.

Statistics compared (all on the same k bins, width the fundamental ``2 pi / L``):

* the matter power spectrum of the particles, CIC-painted on a mesh of ``2 n`` cells per side (so
  that aliasing stays far above the k of interest) and deconvolved by the CIC window;
* the cross-correlation ``r(k)`` of the two density fields;
* the power of the displacement and of the velocity fields on the Lagrangian grid (sum over the
  three components), the emulator's actual targets.

:func:`compare_snapshots` returns a :class:`ConvergenceRow` with the largest ``|P_run / P_ref - 1|``
over the bins with ``k <= k_max``. The benchmark ``benchmarks/convergence_pm.py`` runs the study and
``docs/training_data.md`` records its table.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.fft

from ..checks import check_int, check_positive
from ..datatypes.snapshot import Snapshot, check_matching_snapshots
from ..errors import InputError
from ..validation.power import PowerSpectrum, cross_correlation, power_spectrum

__all__ = ["ConvergenceRow", "density_power", "field_power", "compare_snapshots", "markdown_table"]

logger = logging.getLogger(__name__)


def _cic_window(n: int) -> np.ndarray:
    """CIC window ``prod_i sinc^2(k_i H / 2)`` on the rfft grid of an ``n^3`` mesh."""
    f_full = np.fft.fftfreq(n)
    f_half = np.fft.rfftfreq(n)
    w = [np.sinc(f) ** 2 for f in (f_full, f_full, f_half)]
    return w[0][:, None, None] * w[1][None, :, None] * w[2][None, None, :]


def _deconvolved_density(snapshot: Snapshot, n_mesh: int) -> np.ndarray:
    """CIC overdensity on ``n_mesh^3`` with the CIC window divided out, shape (n_mesh,)*3, float64."""
    delta = snapshot.density(n_mesh, window="cic")
    dk = scipy.fft.rfftn(delta) / _cic_window(n_mesh)
    return scipy.fft.irfftn(dk, s=delta.shape)


def _mesh_size(n_mesh, grid: int) -> int:
    """The density mesh: ``n_mesh`` checked, or twice the particle grid when None."""
    return 2 * grid if n_mesh is None else check_int(n_mesh, "n_mesh", 2)


def density_power(snapshot: Snapshot, *, n_mesh: int | None = None, k_edges=None):
    """Matter P(k) of a snapshot: CIC on ``n_mesh^3`` (default ``2 n``), window-deconvolved.

    Parameters
    ----------
    snapshot : Snapshot
    n_mesh : int, optional
        Mesh cells per side; default twice the particle grid.
    k_edges : array_like, optional
        Bin edges [h/Mpc]; default width ``2 pi / L`` (:func:`emu_backend.validation.default_k_edges`).

    Returns
    -------
    PowerSpectrum
        k [h/Mpc], P [(Mpc/h)^3] (shot noise not subtracted).
    """

    if not isinstance(snapshot, Snapshot):
        raise InputError(f"snapshot must be a Snapshot, got {type(snapshot).__name__}")
    mesh = _mesh_size(n_mesh, snapshot.grid)
    return power_spectrum(_deconvolved_density(snapshot, mesh), snapshot.box_size, k_edges)


def field_power(field, box_size: float, k_edges=None):
    """Power of a vector field on the Lagrangian grid, summed over its 3 components.

    Parameters
    ----------
    field : ndarray, shape (3, n, n, n)
        E.g. a displacement [Mpc/h] or a velocity [km/s].
    box_size : float
        Box side [Mpc/h].
    k_edges : array_like, optional
        Bin edges [h/Mpc].

    Returns
    -------
    PowerSpectrum
        ``sum_c P_c(k)`` [(unit)^2 (Mpc/h)^3].
    """

    arr = np.asarray(field)
    if arr.ndim != 4 or arr.shape[0] != 3:
        raise InputError(f"field must have shape (3, n, n, n), got {arr.shape}")
    parts = [power_spectrum(arr[c], box_size, k_edges) for c in range(3)]
    total = parts[0].power + parts[1].power + parts[2].power
    return PowerSpectrum(k=parts[0].k, power=total, n_modes=parts[0].n_modes, k_edges=parts[0].k_edges,
                         box_size=parts[0].box_size)


@dataclass(frozen=True)
class ConvergenceRow:
    """Deviation of one run from the reference at one redshift, over ``k <= k_max``.

    Attributes
    ----------
    label : str
        Name of the tested configuration.
    z : float
        Redshift.
    k_max : float
        Largest k compared [h/Mpc].
    density : float
        ``max |P_run / P_ref - 1|`` of the matter power spectrum.
    density_half : float
        The same over ``k <= k_max / 2`` (NaN if no bin).
    one_minus_r : float
        ``max (1 - r(k))`` of the two density fields.
    displacement : float
        ``max |P_run / P_ref - 1|`` of the displacement power.
    velocity : float
        ``max |P_run / P_ref - 1|`` of the velocity power.
    ratio_at_k_max : float
        ``P_run / P_ref`` of the density in the last bin below ``k_max`` (sign of the error).
    """

    label: str
    z: float
    k_max: float
    density: float
    density_half: float
    one_minus_r: float
    displacement: float
    velocity: float
    ratio_at_k_max: float


def _max_dev(run, ref, k, k_max) -> float:
    sel = np.isfinite(k) & (k <= k_max) & np.isfinite(run) & np.isfinite(ref) & (ref != 0)
    if not sel.any():
        return math.nan
    return float(np.max(np.abs(run[sel] / ref[sel] - 1.0)))


def compare_snapshots(run: Snapshot, reference: Snapshot, *, k_max: float = 1.0, label: str = "",
                      n_mesh: int | None = None) -> ConvergenceRow:
    """Compare a run with a reference made from the same ICs (same grid, box and z).

    Parameters
    ----------
    run, reference : Snapshot
        The tested and the reference snapshot.
    k_max : float
        Largest k [h/Mpc] compared, > 0.
    label : str
        Name of the run in the table.
    n_mesh : int, optional
        Density mesh (default ``2 n``).

    Returns
    -------
    ConvergenceRow

    Examples
    --------
    >>> from emu_backend.cosmology import QUIJOTE_FIDUCIAL as C
    >>> from emu_backend import InitialConditions, simulate
    >>> ics = InitialConditions.from_noise(16, None, C, seed=0)
    >>> a, b = (simulate(ics, C, z=1.0, backend=name)[0] for name in ("za", "2lpt"))
    >>> row = compare_snapshots(a, b, k_max=1.0, label="ZA vs 2LPT")
    >>> bool(row.density > 0)
    True
    """
    check_matching_snapshots(run, reference, "run", "reference", box_rtol=1e-9, a_rtol=1e-9)
    k_max = check_positive(k_max, "k_max", unit="h/Mpc")
    mesh = _mesh_size(n_mesh, run.grid)
    box = run.box_size
    d_run, d_ref = _deconvolved_density(run, mesh), _deconvolved_density(reference, mesh)
    cc = cross_correlation(d_run, d_ref, box)
    p_run, p_ref, k = cc.p_aa.power, cc.p_bb.power, cc.k
    sel = np.isfinite(k) & (k <= k_max)
    if not sel.any():
        raise InputError(f"no k bin at or below k_max = {k_max!r} h/Mpc (fundamental {2 * np.pi / box:.4g} h/Mpc)")
    last = int(np.flatnonzero(sel)[-1]) if sel.any() else 0
    dis = [field_power(s.displacement_field(), box) for s in (run, reference)]
    vel = [field_power(s.velocity_field(), box) for s in (run, reference)]
    row = ConvergenceRow(
        label=str(label), z=float(run.z), k_max=float(k_max),
        density=_max_dev(p_run, p_ref, k, k_max),
        density_half=_max_dev(p_run, p_ref, k, k_max / 2),
        one_minus_r=float(np.nanmax(1.0 - cc.r[sel])),
        displacement=_max_dev(dis[0].power, dis[1].power, dis[0].k, k_max),
        velocity=_max_dev(vel[0].power, vel[1].power, vel[0].k, k_max),
        ratio_at_k_max=float(p_run[last] / p_ref[last]),
    )
    logger.info("convergence %s z=%g: |dP/P| <= %.2e (k <= %g), 1-r <= %.1e", label, row.z, row.density, k_max,
                row.one_minus_r)
    return row


def markdown_table(rows, *, timings: dict | None = None) -> str:
    """A Markdown table of :class:`ConvergenceRow` (percentages), with wall times per label if given."""
    head = ("| run | z | max\\|dP/P\\| k<=k_max | k<=k_max/2 | P ratio at k_max | max(1-r) | "
            "displacement P | velocity P |" + (" wall time [s] |" if timings else ""))
    sep = "|---" * (8 + bool(timings)) + "|"
    lines = [head, sep]
    for r in rows:
        cells = [r.label, f"{r.z:g}", f"{100 * r.density:.2f}%", f"{100 * r.density_half:.2f}%",
                 f"{r.ratio_at_k_max:.4f}", f"{r.one_minus_r:.1e}", f"{100 * r.displacement:.2f}%",
                 f"{100 * r.velocity:.2f}%"]
        if timings:
            t = timings.get(r.label)
            cells.append("" if t is None else f"{t:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
