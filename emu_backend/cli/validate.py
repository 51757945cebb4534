"""``emu-backend validate``: the emulator and a 2LPT baseline against a reference N-body snapshot, as a report.

Two sources of truth::

    emu-backend validate --against quijote ROOT [--sim N] [--snapnum S] [--halos DIR]
    emu-backend validate --against jaxpm|pmwd [--seed 42] [-n 32] [--z 0] [--mesh-factor 2]

Builds a :class:`~emu_backend.pipelines.validate.ValidateConfig` from the flags and calls
:func:`emu_backend.pipelines.validate.validate` (see there for what is compared and written).

Exit status: 0 when the first candidate meets every threshold (``--max-pk-error``, ``--min-r`` over
``k <= --k-max``), 1 when it misses one, 2 on bad input (missing/corrupt files, bad flags).

Examples
--------
>>> p = argparse.ArgumentParser(prog="validate"); add_arguments(p)
>>> config_from_args(p.parse_args(["--against", "jaxpm", "--candidates", "2lpt,za"])).candidates
('2lpt', 'za')
"""

from __future__ import annotations

import argparse
import logging

from ..pipelines.validate import AGAINST, CANDIDATES, ValidateConfig, validate
from ._common import (
    EXIT_OK,
    EXIT_THRESHOLD_MISSED,
    add_emulator_arguments,
    on_terminal,
    with_banner,
)

__all__ = ["NAME", "HELP", "add_arguments", "handle", "config_from_args"]

logger = logging.getLogger(__name__)

NAME = "validate"
HELP = ("compare the emulator and 2LPT with a reference N-body snapshot (Quijote, JaxPM, pmwd) "
        "and write a report; exit 1 when a threshold is missed")


def _names(text: str) -> list[str]:
    names = [v.strip() for v in text.replace(" ", ",").split(",") if v.strip()]
    bad = [v for v in names if v not in CANDIDATES]
    if not names or bad or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct names from {list(CANDIDATES)} separated by "
                                         f"commas, got {text!r}")
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``emu-backend validate``."""
    p.add_argument("--against", required=True, choices=AGAINST, help="source of the reference snapshot")
    p.add_argument("root", nargs="?", metavar="ROOT",
                   help="Quijote folder: the download root or Snapshots/<set> (with --sim), or one simulation folder")
    q = p.add_argument_group("Quijote")
    q.add_argument("--sim", type=int, metavar="N", help="simulation index under ROOT (latin-hypercube row N)")
    q.add_argument("--snapnum", type=int, metavar="S", help="snapshot number (default: the last snapdir_XXX)")
    q.add_argument("--halos", dest="halos_dir", metavar="DIR",
                   help="folder holding the FoF catalogue's groups_XXX/ (default: searched in the simulation "
                        "folder and the download's Halos/FoF_id, Halos/FoF trees)")
    q.add_argument("--no-2lpt-correction", dest="correct_2lpt", action="store_false",
                   help="take the ICs' displacement / D(127) without removing its 2LPT part")
    pm = p.add_argument_group("PM reference (jaxpm, pmwd)")
    pm.add_argument("--seed", type=int, default=42, help="white-noise seed (default 42)")
    pm.add_argument("-n", "--grid", type=int, default=32, metavar="N", help="particles per side (default 32)")
    pm.add_argument("--box-size", dest="box_size", type=float, metavar="MPC_H", help="box [Mpc/h] (default 1000 N/512)")
    pm.add_argument("--cosmology", metavar="PRESET", default="quijote", help="preset: quijote (default), planck18")
    pm.add_argument("--omega-m", dest="omega_m", type=float, metavar="X", help="override Omega_m of the preset")
    pm.add_argument("--z", type=float, default=0.0, help="redshift of the comparison (default 0)")
    pm.add_argument("--mesh-factor", dest="mesh_factor", type=int, default=2,
                    help="PM mesh cells per particle per side (default 2)")
    pm.add_argument("--a-start", dest="a_start", type=float, help="scale factor of the PM run's LPT start")
    e = p.add_argument_group("candidates")
    e.add_argument("--candidates", type=_names, default=["emulator", "2lpt"],
                   help="comma-separated; the first is judged, the others are baselines (default emulator,2lpt)")
    add_emulator_arguments(e, batch_size_default=1, device_default="cpu", extrapolation_default=False,
                           device_help="torch device (default cpu)")
    s = p.add_argument_group("statistics and thresholds")
    s.add_argument("--n-mesh", dest="n_mesh", type=int, help="mesh per side for P(k), B, RSD (default: the grid)")
    s.add_argument("--k-max", dest="k_max", type=float, help="largest k [h/Mpc] of the checks (default k_Nyq/2)")
    s.add_argument("--max-pk-error", dest="max_pk_error", type=float, default=0.05,
                   help="largest allowed |P/P_ref - 1| for k <= k_max (default 0.05)")
    s.add_argument("--min-r", dest="min_r", type=float, default=0.95,
                   help="smallest allowed r(k) for k <= k_max (default 0.95)")
    s.add_argument("--no-halos", dest="halos", action="store_false", help="skip FoF halos and mass functions")
    p.add_argument("-o", "--out", metavar="DIR", default="validate_out", help="report folder (default validate_out)")
    p.add_argument("--overwrite", action="store_true", help="replace existing report files")


#: Flags that are ValidateConfig keys of the same name (``dest``).
_KEYS = ("against", "root", "sim", "snapnum", "correct_2lpt", "seed", "grid", "box_size", "cosmology", "omega_m",
         "z", "mesh_factor", "a_start", "candidates", "weights", "tile_size", "batch_size", "device",
         "allow_extrapolation", "n_mesh", "k_max", "max_pk_error", "min_r", "halos", "halos_dir", "out", "overwrite")


def config_from_args(args: argparse.Namespace) -> ValidateConfig:
    """The :class:`ValidateConfig` of parsed ``validate`` flags."""
    return ValidateConfig(**{k: getattr(args, k) for k in _KEYS})


def handle(args: argparse.Namespace) -> int:
    """Run ``emu-backend validate``, print the summary; 0 (pass) or 1 (a threshold missed)."""
    config = config_from_args(args)
    outcome = validate(config, progress=on_terminal())
    report, meta = outcome.report, outcome.comparison["meta"]
    lines = [f"emu-backend validate --against {config.against}: z = {meta['z']:.4g}, n = {meta['grid']}, "
             f"L = {meta['box_size_mpc_h']:g} Mpc/h, k <= {meta['k_max_h_mpc']:.4g} h/Mpc, "
             f"{meta['wall_seconds']:.1f} s"]
    judged = {}
    for c in report.checks:
        value = "n/a" if c["value"] is None else f"{c['value']:.4g}"
        op = "<=" if c["kind"] == "max" else ">="
        judged.setdefault(c["candidate"], []).append(
            f"{_STATISTICS.get(c['statistic'], c['statistic'])} = {value} (limit {op} {c['limit']:g}): {'pass' if c['passed'] else 'FAIL'}")
    for name, summ in outcome.comparison["summary"].items():
        if name in judged:
            lines.append(f"  {name}: " + "; ".join(judged[name]))
        else:
            lines.append(f"  {name} (baseline): max|P/P_ref-1| = {_fmt(summ['max_abs_pk_ratio_minus_1'])}, "
                         f"min r = {_fmt(summ['min_r'])}")
    lines.append(f"{'PASS' if report.passed else 'FAIL'}; wrote {len(report.files)} file(s) to {config.out}")
    weights = meta.get("weights") or {}
    if weights:
        lines.append(f"weights: {weights['label']}")
    if not report.passed and weights.get("accuracy") is not None:
        lines.append("  (expected with the demo weights: they do not meet the default thresholds; their measured "
                     f"accuracy is in {weights.get('doc')}. Pass --weights PATH for published weights.)")
    print(with_banner(lines, bool(meta.get("untrained"))))
    return EXIT_OK if outcome.passed else EXIT_THRESHOLD_MISSED


#: Short names of the summary statistics in the printed summary.
_STATISTICS = {"max_abs_pk_ratio_minus_1": "max|P/P_ref-1|", "min_r": "min r"}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"
