"""Bias of a field-level reconstruction against the truth of synthetic data (issue #17's model mismatch).

When the observed mesh carries its truth -- the true initial white noise (``DensityMesh.initial_noise``)
and the cosmology that made it (``DensityMesh.cosmology``) -- the report of ``emu-backend reconstruct`` and
``benchmarks/model_mismatch.py`` state:

* per inferred parameter: the estimate (posterior mean, or the MAP value where there are no draws), the
  true value, ``bias = estimate - truth`` and, with a posterior std, ``bias / std``;
* per reconstructed noise field (the MAP, the posterior mean): ``r(k)`` with the true white noise per k bin,
  the bins where ``r > 0.9``, the largest such k and the largest k up to which every bin has ``r > 0.9``;
* the simulator backend that made the data, where its metadata records it (``"emulator"``: the closed loop;
  ``"pmwd"``, ``"jaxpm"``: PM data, a model mismatch).

Without the true white noise the section says so (``available`` False with the reason) and holds no numbers.
"""

from __future__ import annotations

import math

import numpy as np

from ..checks import check_real
from ..errors import InputError
from ..io.density_mesh import DensityMesh
from ..validation.power import cross_correlation

__all__ = ["R_THRESHOLD", "bias_line", "bias_section", "data_backend", "parameter_bias", "r_summary",
           "table_cell"]

#: r(k) above which a scale counts as reconstructed.
R_THRESHOLD = 0.9


def data_backend(mesh: DensityMesh) -> str | None:
    """The simulator backend that made ``mesh``, where its metadata records it, else None.

    Looks at ``meta["backend"]`` (written by
    :func:`~emu_backend.fieldlevel.observations.synthetic_observation`) and then at
    ``meta["snapshot"]["backend"]`` (the snapshot's provenance kept by
    :func:`~emu_backend.fieldlevel.observations.observe`).
    """
    meta = mesh.meta or {}
    name = meta.get("backend")
    if name is None and isinstance(meta.get("snapshot"), dict):
        name = meta["snapshot"].get("backend")
    return None if name is None else str(name)


def parameter_bias(estimate: float, truth: float | None, std: float | None = None, *,
                   estimator: str = "posterior_mean") -> dict:
    """``estimate - truth`` and, with a posterior std, that difference in std units.

    Parameters
    ----------
    estimate : float
        The estimate of the parameter (posterior mean or MAP value).
    truth : float or None
        The value that made the data (None: unknown, no bias).
    std : float, optional
        Posterior standard deviation (None for a MAP without draws).
    estimator : {"posterior_mean", "map"}

    Returns
    -------
    dict
        ``estimator``, ``estimate``, ``truth``, ``bias``, ``std``, ``bias_over_std`` (None where undefined:
        no truth, no std, or a zero std).
    """
    if estimator not in ("posterior_mean", "map"):
        raise InputError(f"estimator must be 'posterior_mean' or 'map', got {estimator!r}")
    estimate = check_real(estimate, "estimate")
    truth = None if truth is None else check_real(truth, "truth")
    std = None if std is None else check_real(std, "std", 0.0)
    bias = None if truth is None else estimate - truth
    ratio = bias / std if bias is not None and std is not None and std > 0 else None
    return {"estimator": estimator, "estimate": estimate, "truth": truth, "bias": bias, "std": std,
            "bias_over_std": ratio}


def r_summary(k, r, threshold: float = R_THRESHOLD) -> dict:
    """The scales where ``r > threshold``.

    Parameters
    ----------
    k : array (n_bins,)
        Bin centres [h/Mpc] (NaN for empty bins), increasing.
    r : array (n_bins,)
        Cross-correlation coefficient per bin (NaN where undefined).
    threshold : float
        In (-1, 1).

    Returns
    -------
    dict
        ``r`` (list), ``k_above`` (bin centres with ``r > threshold``), ``k_max_above`` (the largest of them,
        None if none) and ``k_max_contiguous`` (the largest k up to which every non-empty bin has
        ``r > threshold``; None if the first bin does not).
    """
    threshold = check_real(threshold, "threshold", -1.0, 1.0, lo_open=True, hi_open=True)
    k, r = np.asarray(k, dtype=np.float64), np.asarray(r, dtype=np.float64)
    if k.shape != r.shape or k.ndim != 1:
        raise InputError(f"k and r must be 1-d arrays of the same length, got shapes {k.shape} and {r.shape}")
    ok = np.isfinite(k) & np.isfinite(r)
    above = ok & (r > threshold)
    k_above = [float(x) for x in k[above]]
    contiguous = None
    for ki, good, defined in zip(k, above, ok):
        if not defined:
            continue
        if not good:
            break
        contiguous = float(ki)
    return {"r": [float(x) for x in r], "k_above": k_above, "k_max_above": max(k_above) if k_above else None,
            "k_max_contiguous": contiguous}


def bias_section(mesh: DensityMesh, fields: dict, estimates: dict, k_edges, *,
                 threshold: float = R_THRESHOLD) -> dict:
    """The "bias" section of a reconstruction report.

    Parameters
    ----------
    mesh : DensityMesh
        The data; its ``initial_noise`` and ``cosmology`` are the truth.
    fields : dict of str -> array (N, N, N)
        Reconstructed white-noise fields by name (``"map"``, ``"posterior_mean"``).
    estimates : dict of str -> dict
        Per inferred parameter: ``{"value": float, "std": float or None, "estimator": "posterior_mean" or
        "map"}``.
    k_edges : array (n_bins + 1,)
        Bin edges of r(k) [h/Mpc].
    threshold : float
        r(k) threshold of the scale summary (0.9).

    Returns
    -------
    dict
        ``available`` (bool), ``data_backend``, and either ``reason`` (no truth) or ``parameters`` (name ->
        :func:`parameter_bias`), ``truth_cosmology`` and ``r_k`` (``k``, ``n_modes``, ``threshold`` and
        per field :func:`r_summary`).
    """
    if not isinstance(mesh, DensityMesh):
        raise InputError(f"mesh must be a DensityMesh, got {type(mesh).__name__}")
    section = {"available": False, "data_backend": data_backend(mesh)}
    if mesh.initial_noise is None:
        section["reason"] = ("the data carries no true white noise (initial_noise): the bias against the truth "
                             "is not known for it")
        return section
    truth = np.asarray(mesh.initial_noise, dtype=np.float64)
    for name, f in fields.items():
        if np.shape(f) != truth.shape:
            section["reason"] = (f"the reconstructed field {name!r} has shape {np.shape(f)} but the true white "
                                 f"noise {truth.shape}: the model grid differs from the data's ICs grid")
            return section
    parameters = {}
    for name, e in estimates.items():
        true_value = getattr(mesh.cosmology, name, None)
        parameters[name] = parameter_bias(e["value"], true_value, e.get("std"),
                                          estimator=e.get("estimator", "posterior_mean"))
    r_k = {"k": None, "n_modes": None, "threshold": float(threshold), "fields": {}}
    for name, f in fields.items():
        cc = cross_correlation(np.asarray(f, dtype=np.float64), truth, mesh.box_size, k_edges)
        r_k["k"], r_k["n_modes"] = [float(x) for x in cc.k], [int(x) for x in cc.n_modes]
        r_k["fields"][name] = r_summary(cc.k, cc.r, threshold)
    section.update(available=True, truth_cosmology=mesh.cosmology.to_dict(), parameters=parameters, r_k=r_k)
    return section


def bias_line(section: dict) -> str:
    """One line summarising a :func:`bias_section` (the CLI's): data backend, the scale up to which r > 0.9
    per field, each parameter's bias and its size in posterior stds.

    Examples
    --------
    >>> bias_line({"available": False, "data_backend": None, "reason": "no truth"})
    'bias against the truth: not known (no truth)'
    """
    if not section["available"]:
        return f"bias against the truth: not known ({section['reason']})"
    r_k = section["r_k"]
    scales = ", ".join(f"{name.replace('_', ' ')} {table_cell(f['k_max_contiguous'], '.3f')}"
                       for name, f in r_k["fields"].items())
    params = "; ".join(f"{name} {table_cell(b['bias'], '+.4f')}"
                       + ("" if b["bias_over_std"] is None else f" ({b['bias_over_std']:+.2f} std)")
                       for name, b in section["parameters"].items())
    return (f"bias against the truth (data: {section['data_backend'] or 'backend not recorded'}): "
            f"r > {r_k['threshold']:g} up to k [h/Mpc] {scales}" + (f"; {params}" if params else ""))


def table_cell(value, spec: str = ".4f") -> str:
    """``value`` formatted with ``spec``, or ``"-"`` for None/NaN (report tables)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)
