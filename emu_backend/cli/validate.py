"""``emu-backend validate``: the emulator and a 2LPT baseline against a reference N-body snapshot, as a report.

Two sources of truth::

    emu-backend validate --against quijote ROOT [--sim N] [--snapnum S]
    emu-backend validate --against jaxpm|pmwd [--seed 42] [-n 32] [--z 0] [--mesh-factor 2]

With Quijote the ICs (z = 127) give the linear displacement (:func:`~emu_backend.io.quijote.
linear_displacement_from_ics`), the latin-hypercube row the cosmology and ``snapdir_XXX`` the truth
(and ``groups_XXX`` its FoF halos). With a PM backend the truth is run from seeded ICs. The candidates
(default: emulator, then 2LPT) run from the same ICs at the truth's redshift; :func:`~emu_backend.
validation.compare.compare` measures every statistic and :func:`~emu_backend.validation.report.
write_report` writes ``report.json``, ``report.md`` and the PNG plots into ``--out``.

Exit status: 0 when the first candidate meets every threshold (``--max-pk-error``, ``--min-r`` over
``k <= --k-max``), 1 when it misses one, 2 on bad input (missing/corrupt files, bad flags).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ..errors import InputError

__all__ = ["add_validate_arguments", "handle_validate", "execute_validate", "EXIT_THRESHOLD_MISSED"]

logger = logging.getLogger(__name__)

EXIT_THRESHOLD_MISSED = 1
AGAINST = ("quijote", "jaxpm", "pmwd")
_KNOWN_CANDIDATES = ("emulator", "2lpt", "za")


def _names(text: str) -> list[str]:
    names = [v.strip() for v in text.replace(" ", ",").split(",") if v.strip()]
    bad = [v for v in names if v not in _KNOWN_CANDIDATES]
    if not names or bad or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct names from {list(_KNOWN_CANDIDATES)} separated by "
                                         f"commas, got {text!r}")
    return names


def add_validate_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``emu-backend validate``."""
    p.add_argument("--against", required=True, choices=AGAINST, help="source of the reference snapshot")
    p.add_argument("root", nargs="?", metavar="ROOT",
                   help="Quijote folder: the latin hypercube (with --sim) or one simulation folder")
    q = p.add_argument_group("Quijote")
    q.add_argument("--sim", type=int, metavar="N", help="simulation index under ROOT (latin-hypercube row N)")
    q.add_argument("--snapnum", type=int, metavar="S", help="snapshot number (default: the last snapdir_XXX)")
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
    e.add_argument("--weights", metavar="PATH", help="emulator checkpoint (default: the package default)")
    e.add_argument("--tile", type=int, help="emulator tile size, a multiple of 8 (default: automatic)")
    e.add_argument("--batch", type=int, default=1, help="tiles per network call (default 1)")
    e.add_argument("--device", help="torch device (default cpu)")
    e.add_argument("--allow-extrapolation", dest="allow_extrapolation", action="store_true", default=None,
                   help="let the emulator run outside its training domain (with a warning)")
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


def _reference_quijote(args):
    from ..ics import InitialConditions
    from ..io.quijote import QuijoteSimulation, linear_displacement_from_ics

    if args.root is None:
        raise InputError("--against quijote needs the Quijote folder ROOT")
    sim = QuijoteSimulation.open(args.root, args.sim)
    snapnums = sim.snapnums()
    snapnum = args.snapnum if args.snapnum is not None else (snapnums[-1] if snapnums else None)
    if snapnum is None:
        raise InputError(f"{str(sim.folder)!r} holds no snapdir_XXX folder")
    cosmo = sim.cosmology()
    ics_snapshot = sim.read_ics(cosmo)
    psi = linear_displacement_from_ics(ics_snapshot, cosmo, correct_2lpt=args.correct_2lpt)
    ics = InitialConditions.from_linear_displacement(
        psi, ics_snapshot.box_size, seed=sim.seed(),
        provenance={"source": "quijote", "folder": str(sim.folder), "sim": sim.sim, "correct_2lpt": args.correct_2lpt})
    truth = sim.read_snapshot(snapnum, cosmo)
    halos = sim.read_halos(snapnum, truth) if args.halos and sim.has_halos(snapnum) else None
    source = {"against": "quijote", "folder": str(sim.folder), "sim": sim.sim, "snapnum": snapnum,
              "halos_from": "groups files" if halos is not None else ("fof" if args.halos else None)}
    return cosmo, ics, truth, halos, source


def _reference_pm(args):
    from ..cosmology.params import Cosmology
    from ..ics import InitialConditions
    from ..simulator import simulate

    cosmo = Cosmology.preset(args.cosmology)
    if args.omega_m is not None:
        cosmo = cosmo.clone(omega_m=args.omega_m, name="custom")
    ics = InitialConditions.from_noise(args.grid, args.box_size, cosmo, seed=args.seed)
    options = {"mesh_factor": args.mesh_factor}
    if args.a_start is not None:
        options["a_start"] = args.a_start
    truth = simulate(ics, cosmo, z=args.z, backend=args.against, **options)[0]
    source = {"against": args.against, "seed": args.seed, "grid": args.grid, "box_size_mpc_h": ics.box_size,
              "backend_options": options, "halos_from": "fof" if args.halos else None}
    return cosmo, ics, truth, None, source


def execute_validate(args: argparse.Namespace, *, progress: bool = False):
    """Run the comparison described by parsed ``validate`` flags and write the report.

    Returns
    -------
    (Report, dict)
        The written report and the comparison result.
    """
    from ..io.atomic import check_overwrite
    from ..simulator import get_backend, simulate
    from ..validation.compare import compare
    from ..validation.report import REPORT_FILES, Thresholds, write_report

    t0 = time.perf_counter()
    thresholds = Thresholds(max_pk_error=args.max_pk_error, min_r=args.min_r, judged=(args.candidates[0],))
    for name in REPORT_FILES:  # refuse before computing anything
        check_overwrite(Path(args.out) / name, args.overwrite)
    if args.against != "quijote" and (args.root is not None or args.sim is not None or args.snapnum is not None):
        raise InputError(f"ROOT, --sim and --snapnum apply to --against quijote, not --against {args.against}")
    cosmo, ics, truth, halos, source = (_reference_quijote if args.against == "quijote" else _reference_pm)(args)
    candidates, meta = {}, {}
    for name in args.candidates:
        options = {}
        if name == "emulator":
            options = {"weights": args.weights, "tile_size": args.tile, "batch_size": args.batch,
                       "device": args.device, "allow_extrapolation": args.allow_extrapolation, "progress": progress}
        snap = simulate(ics, cosmo, z=truth.z, backend=get_backend(name, **options))[0]
        candidates[name] = snap
        if name == "emulator":
            meta = {"untrained": bool(snap.meta.get("untrained")), "checksum": snap.meta.get("checksum"),
                    "weights_source": snap.meta.get("weights_source")}
    result = compare(truth, candidates, n_mesh=args.n_mesh, k_max=args.k_max, truth_halos=halos,
                     halos=args.halos)
    from .run import versions

    config = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
    result["meta"].update({"reference": source, "truth_source": args.against, "seed": ics.seed, **meta,
                           "package_version": versions()["emu_backend"], "config": config,
                           "versions": versions(), "wall_seconds": round(time.perf_counter() - t0, 3)})
    report = write_report(result, args.out, thresholds=thresholds, overwrite=args.overwrite)
    return report, result


def handle_validate(args: argparse.Namespace) -> int:
    """CLI handler: run, print the summary, return 0 (pass) or 1 (a threshold missed)."""
    from .main import BANNER, EXIT_OK

    report, result = execute_validate(args, progress=sys.stderr.isatty())
    meta = result["meta"]
    lines = [f"emu-backend validate --against {args.against}: z = {meta['z']:.4g}, n = {meta['grid']}, "
             f"L = {meta['box_size_mpc_h']:g} Mpc/h, k <= {meta['k_max_h_mpc']:.4g} h/Mpc, "
             f"{meta['wall_seconds']:.1f} s"]
    for c in report.checks:
        value = "n/a" if c["value"] is None else f"{c['value']:.4g}"
        op = "<=" if c["kind"] == "max" else ">="
        lines.append(f"  {c['candidate']}: {c['statistic']} = {value} (limit {op} {c['limit']:g}): "
                     f"{'pass' if c['passed'] else 'FAIL'}")
    for name, summ in result["summary"].items():
        lines.append(f"  {name}: max|P/P_ref-1| = {summ['max_abs_pk_ratio_minus_1']}, min r = {summ['min_r']}")
    lines.append(f"{'PASS' if report.passed else 'FAIL'}; wrote {len(report.files)} file(s) to {args.out}")
    if meta.get("untrained"):
        lines = [BANNER, *lines, BANNER]
    print("\n".join(lines))
    return EXIT_OK if report.passed else EXIT_THRESHOLD_MISSED
