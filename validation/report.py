"""Validation reports: ``report.json``, ``report.md`` and PNG plots of a :func:`~.compare.compare` result.

Files written into ``out_dir`` (each atomically; none replaced unless ``overwrite``)::

    report.json                every statistic, the thresholds, the pass/fail checks and ``package_version``
    report.md                  summary table, pass/fail per threshold, a provenance line
    power_ratio.png            P(k) / P_ref(k)            one line per candidate (baselines dashed)
    cross_correlation.png      r(k)
    transfer.png               T(k) = sqrt(P / P_ref)
    bispectrum_ratio.png       B / B_ref per triangle bin  (when triangles were measured)
    mass_function_ratio.png    n(M) / n_ref(M) with Poisson errors  (when halos were compared)

Provenance: ``result["meta"]`` (the comparison's cosmology, plus what the caller adds: seed, weights
checksum, configuration, versions) is written into report.json, summarised in report.md and stored
in every PNG's ``Description`` text chunk (JSON, with ``Software`` = ``emu_backend <version>``).

matplotlib (Agg canvas of a bare Figure: no pyplot state, no display) is imported only here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter

from .._version import __version__
from ..checks import check_real
from ..datatypes.meta import meta_to_json
from ..errors import InputError
from ..io.atomic import atomic_path, check_overwrite

__all__ = ["Thresholds", "Report", "write_report", "evaluate", "REPORT_FILES"]

logger = logging.getLogger(__name__)

REPORT_FILES = ("report.json", "report.md", "power_ratio.png", "cross_correlation.png", "transfer.png",
                "bispectrum_ratio.png", "mass_function_ratio.png")


@dataclass(frozen=True)
class Thresholds:
    """Accuracy requirements checked on the summary of a comparison (over ``k <= k_max`` of the comparison).

    Parameters
    ----------
    max_pk_error : float or None
        Largest allowed ``|P/P_ref - 1|`` (None: not checked).
    min_r : float or None
        Smallest allowed density cross-correlation ``r(k)`` (None: not checked).
    judged : tuple of str or None
        Candidates held to the thresholds; None: the first candidate of the comparison (the others,
        e.g. a 2LPT baseline, are reported but not judged).

    Examples
    --------
    >>> Thresholds(max_pk_error=0.05, min_r=0.95).min_r
    0.95
    """

    max_pk_error: float | None = 0.05
    min_r: float | None = 0.95
    judged: tuple | None = None

    def __post_init__(self):
        if self.max_pk_error is not None:
            object.__setattr__(self, "max_pk_error", check_real(self.max_pk_error, "threshold max_pk_error", 0.0,
                                                                 what="a finite number >= 0 or None"))
        if self.min_r is not None:
            object.__setattr__(self, "min_r", check_real(self.min_r, "threshold min_r", -1.0, 1.0,
                                                          what="in [-1, 1]"))
        if self.judged is not None:
            if isinstance(self.judged, str) or not all(isinstance(j, str) for j in self.judged):
                raise InputError(f"judged must be a tuple of candidate names, got {self.judged!r}")
            object.__setattr__(self, "judged", tuple(self.judged))


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote and whether the thresholds were met."""

    files: tuple
    passed: bool
    checks: list = field(default_factory=list)


def evaluate(result: dict, thresholds: Thresholds) -> list[dict]:
    """The threshold checks of a comparison: one dict per (judged candidate, threshold).

    Each check has ``candidate``, ``statistic``, ``value``, ``limit``, ``kind`` ("max" or "min") and
    ``passed`` (a missing value fails).
    """
    if not isinstance(thresholds, Thresholds):
        raise InputError(f"thresholds must be a Thresholds, got {type(thresholds).__name__}")
    summary = result.get("summary", {}) if isinstance(result, dict) else {}
    names = list(result.get("meta", {}).get("candidates", summary)) if isinstance(result, dict) else []
    if not names:
        raise InputError("result holds no candidates; pass the dict returned by compare()")
    judged = thresholds.judged if thresholds.judged is not None else (names[0],)
    unknown = [j for j in judged if j not in summary]
    if unknown:
        raise InputError(f"judged candidate(s) {unknown} are not in the comparison {names}")
    checks = []
    for name in judged:
        for stat, limit, kind in (("max_abs_pk_ratio_minus_1", thresholds.max_pk_error, "max"),
                                  ("min_r", thresholds.min_r, "min")):
            if limit is None:
                continue
            value = summary[name].get(stat)
            ok = value is not None and (value <= limit if kind == "max" else value >= limit)
            checks.append({"candidate": name, "statistic": stat, "value": value, "limit": limit, "kind": kind,
                           "passed": bool(ok)})
    return checks


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _markdown(result: dict, checks: list, thresholds: Thresholds) -> str:
    meta = result["meta"]
    names = meta["candidates"]
    lines = ["# Validation report", "",
             f"Reference: `{meta.get('truth_source') or meta.get('truth_backend') or 'snapshot'}` "
             f"at z = {meta['z']:.4g}, "
             f"L = {meta['box_size_mpc_h']:g} Mpc/h, n = {meta['grid']}^3 particles, mesh {meta['n_mesh']}^3; "
             f"summaries over k <= {meta['k_max_h_mpc']:.4g} h/Mpc (k_Nyquist = {meta['k_nyquist_h_mpc']:.4g}).", ""]
    if meta.get("untrained"):
        lines += ["**WARNING: the emulator ran UNTRAINED (random) weights: its results are NOT physical.**", ""]
    passed = all(c["passed"] for c in checks)
    lines += [f"**Result: {'PASS' if passed else 'FAIL'}**", "", "| candidate | statistic | value | limit | result |",
              "|---|---|---|---|---|"]
    for c in checks:
        op = "<=" if c["kind"] == "max" else ">="
        lines.append(f"| {c['candidate']} | {c['statistic']} | {_fmt(c['value'])} | {op} {c['limit']:g} | "
                     f"{'pass' if c['passed'] else '**FAIL**'} |")
    if not checks:
        lines.append("| (no thresholds) | | | | |")
    keys = list(next(iter(result["summary"].values())).keys())
    lines += ["", "## Summary", "", "| statistic | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_fmt(result["summary"][n].get(key)) for n in names) + " |")
    truth = result["truth"]
    if truth.get("n_halos") is not None:
        lines += ["", "Halos (FoF b = 0.2): reference " + str(truth["n_halos"]) + ", " + ", ".join(
            f"{n} {result['candidates'][n].get('n_halos')}" for n in names) + "."]
    lines += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in _plots(result)) + ".", "",
              f"Thresholds: {json.dumps(asdict(thresholds))}. Every statistic is in report.json.", ""]

    lines += [f"Provenance: emu_backend {__version__}; seed {meta.get('seed')}; weights checksum "
              f"{meta.get('checksum')}; cosmology {json.dumps(meta.get('cosmology'), sort_keys=True)}; "
              "the configuration is in report.json (`meta`).", ""]
    return "\n".join(lines)


def _plots(result: dict) -> list[str]:
    names = ["power_ratio.png", "cross_correlation.png", "transfer.png"]
    if result["truth"].get("bispectrum") is not None:
        names.append("bispectrum_ratio.png")
    if result["truth"].get("mass_function") is not None:
        names.append("mass_function_ratio.png")
    return names


def _arr(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _figure(result: dict, plot: str):

    meta = result["meta"]
    fig = Figure(figsize=(6.5, 4.8))  # fixed margins: a layout engine costs seconds per figure
    ax = fig.subplots()
    k = _arr(result["truth"]["power"]["k"])
    baseline = {"2lpt", "za"}
    for i, name in enumerate(meta["candidates"]):
        cand = result["candidates"][name]
        style = dict(color=f"C{i % 10}", ls="--" if name.lower() in baseline else "-", label=name)
        if plot in ("power_ratio.png", "cross_correlation.png", "transfer.png"):
            key = {"power_ratio.png": "power_ratio", "cross_correlation.png": "r", "transfer.png": "transfer"}[plot]
            ok = k <= meta["k_nyquist_h_mpc"] * (1 + 1e-9)  # corner modes beyond Nyquist are aliased
            ax.semilogx(k[ok], _arr(cand[key])[ok], marker=".", **style)

            ax.xaxis.set_minor_formatter(NullFormatter())
            kk = k[ok & np.isfinite(k)]
            if kk.size:
                ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10) if kk.min() <= t <= kk.max()]
                ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        elif plot == "bispectrum_ratio.png":
            ax.plot(np.arange(len(cand["bispectrum"]["ratio"])), _arr(cand["bispectrum"]["ratio"]), marker="o", **style)
        else:
            mf = result["truth"]["mass_function"]
            m = _arr(mf["mass"])
            ax.errorbar(m * (1 + 0.02 * i), _arr(cand["mass_function"]["ratio"]),
                        yerr=_arr(cand["mass_function"]["ratio_err"]), marker="o", capsize=2, **style)
            ax.set_xscale("log")
            # a narrow mass range gets labelled minor ticks that overlap: label 1, 2, 5 x 10^n only
            ax.xaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False))
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axhline(1.0, color="0.5", lw=0.8)
    if plot != "bispectrum_ratio.png" and plot != "mass_function_ratio.png":
        ax.axvline(meta["k_max_h_mpc"], color="0.5", lw=0.8, ls=":",
                   label=rf"$k_\mathrm{{max}}$ = {meta['k_max_h_mpc']:.3g} $h\,\mathrm{{Mpc}}^{{-1}}$ (checks)")
        ax.set_xlabel(r"$k$ [$h\,\mathrm{Mpc}^{-1}$]")
    labels = {"power_ratio.png": r"$P(k) / P_\mathrm{ref}(k)$", "cross_correlation.png": r"$r(k)$",
              "transfer.png": r"$T(k) = \sqrt{P / P_\mathrm{ref}}$", "bispectrum_ratio.png": r"$B / B_\mathrm{ref}$",
              "mass_function_ratio.png": r"$n(M) / n_\mathrm{ref}(M)$"}
    ax.set_ylabel(labels[plot])
    if plot == "bispectrum_ratio.png":
        b = result["truth"]["bispectrum"]
        ax.set_xlabel("triangle bin (k1, k2, k3) [h/Mpc]")
        ticks = np.arange(len(b["k1"]))
        ax.set_xticks(ticks, [f"{a:.2f}, {c:.2f}, {d:.2f}" for a, c, d in zip(b["k1"], b["k2"], b["k3"])],
                      rotation=90, fontsize="x-small")
    if plot == "mass_function_ratio.png":
        ax.set_xlabel(r"$M$ [$h^{-1} M_\odot$]")
    ax.legend(fontsize="small")
    title = f"z = {meta['z']:.3g}, L = {meta['box_size_mpc_h']:g} Mpc/h, n = {meta['grid']}"
    if meta.get("untrained"):
        title = "UNTRAINED EMULATOR WEIGHTS: NOT PHYSICAL\n" + title
    fig.suptitle(title, fontsize="medium", color="red" if meta.get("untrained") else "black")
    fig.subplots_adjust(left=0.13, right=0.97, top=0.86, bottom=0.3 if plot == "bispectrum_ratio.png" else 0.12)
    return fig


def write_report(result: dict, out_dir, *, thresholds: Thresholds, overwrite: bool = False) -> Report:
    """Write the JSON, Markdown and PNG files of a comparison and check the thresholds.

    Parameters
    ----------
    result : dict
        The output of :func:`~emu_backend.validation.compare.compare` (``meta`` may carry extra
        provenance, e.g. ``untrained``).
    out_dir : str or Path
        Output folder (created).
    thresholds : Thresholds
    overwrite : bool
        Replace existing report files; otherwise every target is checked before anything is written.

    Returns
    -------
    Report
        Files written, ``passed`` (all checks met) and the checks.
    """
    if not isinstance(result, dict) or not {"meta", "truth", "candidates", "summary"} <= set(result):
        raise InputError("result must be the dict returned by compare() (keys meta, truth, candidates, summary)")
    checks = evaluate(result, thresholds)
    out = Path(out_dir)
    targets = [out / "report.json", out / "report.md"] + [out / p for p in _plots(result)]
    for path in targets:  # refuse before writing anything
        check_overwrite(path, overwrite)

    out.mkdir(parents=True, exist_ok=True)
    passed = all(c["passed"] for c in checks)
    doc = {"passed": passed, "package_version": __version__, "checks": checks, "thresholds": asdict(thresholds),
           **result}
    try:
        text = json.dumps(doc, indent=1, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"result is not JSON-serialisable (strict JSON, no NaN): {exc}") from exc
    with atomic_path(targets[0], overwrite=overwrite) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    with atomic_path(targets[1], overwrite=overwrite) as tmp:
        tmp.write_text(_markdown(result, checks, thresholds), encoding="utf-8")
    png_text = {"Software": f"emu_backend {__version__}",
                "Description": meta_to_json({**result["meta"], "package_version": __version__,
                                             "thresholds": asdict(thresholds)})}
    for path in targets[2:]:
        fig = _figure(result, path.name)
        with atomic_path(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format="png", dpi=100, metadata=png_text)
    logger.info("wrote validation report (%s) to %s", "PASS" if passed else "FAIL", out)
    return Report(files=tuple(targets), passed=passed, checks=checks)
