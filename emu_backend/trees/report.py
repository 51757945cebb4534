"""The merger-tree report: Markdown tables and a four-panel figure (matplotlib's Agg canvas of a bare Figure).

Panels: median main-branch mass accretion history per final-mass bin (both backends, the first with its
16-84 % band); the cumulative distribution of formation redshifts per bin; the mean number of progenitors
per final halo against redshift; the formation redshifts of final halos matched between the backends by
particle IDs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..io.atomic import atomic_path

__all__ = ["markdown", "figure"]


def _fmt(v, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def _bin_label(rng) -> str:
    lo, hi = rng
    return f">= {lo:.2e}" if hi is None else f"{lo:.2e}-{hi:.2e}"


def markdown(report: dict) -> str:
    """The Markdown report of :func:`emu_backend.pipelines.trees.trees`'s JSON report."""
    cfg = report["config"]
    lines = ["# Merger trees", "",
             f"emu_backend {report['package_version']}; {cfg['grid']}^3 particles, box "
             f"{cfg['box_size'] if cfg['box_size'] is not None else 1000.0 * cfg['grid'] / 512:g} Mpc/h, seed "
             f"{cfg['seed']}; {len(cfg['z'])} output times z = {', '.join(f'{z:g}' for z in cfg['z'])}; FoF b = "
             f"{cfg['linking_length']:g}, >= {cfg['min_particles']} particles; links: shared fraction >= "
             f"{cfg['min_shared_fraction']:g}, skip one output {cfg['skip_one_output']}.", "",
             "## Halos, links and timings", "",
             "| backend | halos (all outputs) | at last output | links | mergers | fly-bys | bridged gaps | "
             "orphans | new halos | trees | simulate [s] | FoF [s] | link [s] | write [s] | trees / simulate |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, b in report["backends"].items():
        c, s = b["counts"], b["seconds"]
        lines.append(f"| {name} | {c['halos']} | {c['trees_at_last_output']} | {c['links']} | {c['mergers']} | "
                     f"{c['flybys']} | {c['bridged_gaps']} | {c['orphans']} | {c['new_halos']} | {c['trees']} | "
                     f"{s['simulate']:.1f} | {s['fof']:.2f} | {s['link']:.3f} | {s['write']:.3f} | "
                     f"{_fmt(s['trees_over_simulate'])} |")
    lines += ["", "Halos per output (earliest first):", ""]
    for name, b in report["backends"].items():
        lines.append(f"- {name}: {b['counts']['halos_per_output']}")
    lines += ["", "## Formation redshifts and accretion histories per final-mass bin", "",
              "| backend | final mass [Msun/h] | halos | unresolved | censored | z_form 16% | 50% | 84% | "
              "median M/M0 at z = " + f"{cfg['z'][len(cfg['z']) // 2]:g} |", "|---|---|---|---|---|---|---|---|---|"]
    mid = len(cfg["z"]) // 2
    for name, b in report["backends"].items():
        for bin_ in b["statistics"]["bins"]:
            q = bin_["z_form_q16_q50_q84"]
            lines.append(f"| {name} | {_bin_label(bin_['mass_range_msun_h'])} | {bin_['n']} | {bin_['n_unresolved']} | "
                         f"{bin_['n_censored']} | {_fmt(q[0])} | {_fmt(q[1])} | {_fmt(q[2])} | "
                         f"{_fmt(bin_['mah_median'][mid])} |")
    comp = report.get("comparison")
    if comp:
        names = list(report["backends"])
        lines += ["", f"## {names[0]} against {names[1]}", "",
                  "| final mass [Msun/h] | halos | with z_form | KS statistic | KS p-value | median z_form difference "
                  "| max abs difference of median MAH |", "|---|---|---|---|---|---|---|"]
        for e in comp["bins"]:
            lines.append(f"| {_bin_label(e['mass_range_msun_h'])} | {e['n'][0]} / {e['n'][1]} | {e['n_z_form'][0]} / "
                         f"{e['n_z_form'][1]} | {_fmt(e['ks_statistic'])} | {_fmt(e['ks_pvalue'])} | "
                         f"{_fmt(e['z_form_median_difference'])} | {_fmt(e['mah_median_max_abs_difference'])} |")
        m = comp["matched_final_halos"]
        lines += ["", f"Final halos matched by particle IDs (mutual best match): {m['pairs']} pairs, "
                      f"{m['with_z_form']} with both formation redshifts; median final mass ratio "
                      f"{_fmt(m['final_mass_ratio_median'])}; median |z_form difference| "
                      f"{_fmt(m['z_form_median_abs_difference'])}; Pearson r {_fmt(m['z_form_pearson_r'])}."]
    return "\n".join(lines) + "\n"


def figure(path: Path, report: dict, stats: dict) -> None:
    """Write the four-panel PNG of the report (atomically)."""
    fig = Figure(figsize=(12, 9))
    ax = fig.subplots(2, 2)
    styles = ["-", "--", ":"]
    colours = ["C0", "C1", "C2", "C3", "C4", "C5"]
    for s_i, (name, st) in enumerate(stats.items()):
        ls = styles[s_i % len(styles)]
        z = st.z
        for k, bin_ in enumerate(st.bins):
            if not bin_["n"]:
                continue
            lab = f"{name} {_bin_label(bin_['mass_range_msun_h'])} ({bin_['n']})"
            med = np.array([np.nan if v is None else v for v in bin_["mah_median"]])
            ax[0, 0].plot(z, med, ls, color=colours[k % 6], label=lab)
            if s_i == 0:
                lo = np.array([np.nan if v is None else v for v in bin_["mah_q16"]])
                hi = np.array([np.nan if v is None else v for v in bin_["mah_q84"]])
                ax[0, 0].fill_between(z, lo, hi, color=colours[k % 6], alpha=0.15)
            lo_m, hi_m = bin_["mass_range_msun_h"]
            hi_m = np.inf if hi_m is None else hi_m
            sel = (st.final_mass >= lo_m) & (st.final_mass < hi_m) & np.isfinite(st.z_form)
            zf = np.sort(st.z_form[sel])
            if zf.size:
                ax[0, 1].step(zf, np.arange(1, zf.size + 1) / zf.size, ls, where="post", color=colours[k % 6],
                              label=lab)
            prog = np.array([np.nan if v is None else v for v in bin_["progenitors_mean"]])
            ax[1, 0].plot(z, prog, ls, color=colours[k % 6], label=lab)
    ax[0, 0].set(xlabel="z", ylabel="main-branch M(z) / M(z_last)", title="mass accretion histories (median)")
    ax[0, 1].set(xlabel="formation redshift z_form", ylabel="cumulative fraction", title="formation redshifts")
    ax[1, 0].set(xlabel="z", ylabel="mean halos in the tree", yscale="log", title="progenitor counts")
    matched = (report.get("comparison") or {}).get("matched_final_halos")
    if matched and matched["with_z_form"]:
        names = list(stats)
        za, zb = matched["z_form"]
        ax[1, 1].scatter(zb, za, s=8)
        top = max(max(za), max(zb)) * 1.05
        ax[1, 1].plot([0, top], [0, top], "k--", lw=0.8)
        ax[1, 1].set(xlabel=f"z_form {names[1]}", ylabel=f"z_form {names[0]}",
                     title=f"matched final halos ({matched['with_z_form']})")
    else:
        ax[1, 1].text(0.5, 0.5, "no matched halos with formation redshifts", ha="center", va="center")
    for a in (ax[0, 0], ax[0, 1], ax[1, 0]):
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
