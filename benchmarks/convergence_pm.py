"""Benchmark (not a test): convergence of the JaxPM settings of ``make-training-set`` in P(k).

Runs the same initial conditions (seeded white noise, Eisenstein & Hu P(k), Quijote fiducial) at the
trained cell size 1000/512 Mpc/h with several JaxPM settings, then compares each with the finest one
(:func:`emu_backend.training.convergence.compare_snapshots`): matter P(k) on a 2n CIC mesh with the
window deconvolved, r(k), displacement and velocity power, up to k = 1 h/Mpc. Prints a Markdown table
(the one in ``docs/training_data.md``) and writes it with the raw numbers to ``--out``.

Each run is cached (``--cache``) as soon as it finishes, so the study can be resumed or extended.
The reference is the last of ``--runs`` unless ``--reference`` names another.

Run labels are ``mf<mesh_factor>[c]_<rtol>[_a<a_start>]`` (atol = rtol). A ``c`` turns on the JaxPM
backend's ``compensate`` option: the CIC windows of JaxPM's painting and force reading are divided out
of the PM force (``jaxpm.kernels.cic_compensation`` squared). Labels ``pmwd<mesh_factor>_s<steps>[_a<a_start>]`` run the pmwd adapter
instead (an independent PM code: ``n^3`` particles on the finer mesh). The study of
docs/training_data.md:

    nice -n 19 python benchmarks/convergence_pm.py --grid 64 --z 0 1 3 --runs mf1_1e-4 mf2_1e-3 mf2_1e-4 mf2_1e-5
    nice -n 19 python benchmarks/convergence_pm.py --grid 32 --z 0 1 3 \
        --runs mf2_1e-4 mf2_1e-5 mf3_1e-5 mf4_1e-5 mf2c_1e-4 mf3c_1e-4 pmwd3_s32_a0.1 pmwd4_s64_a0.1 mf4c_1e-4
    nice -n 19 python benchmarks/convergence_pm.py --grid 32 --z 0 1 3 --runs mf2_1e-4 mf2_1e-4_a0.05 mf2_1e-4_a0.02
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.datatypes import Snapshot
from emu_backend.ics import InitialConditions
from emu_backend.inference.domain import TRAINED_CELL_SIZE_MPC_H
from emu_backend.simulator import simulate
from emu_backend.training.convergence import compare_snapshots, markdown_table

DEFAULT_RUNS = ["mf1_1e-4", "mf2_1e-3", "mf2_1e-4", "mf2_1e-5"]
_LABEL = re.compile(r"^mf(?P<mf>[1-4])(?P<comp>c?)_(?P<tol>[0-9.e-]+)(?:_a(?P<a>[0-9.]+))?$")
_PMWD_LABEL = re.compile(r"^pmwd(?P<mf>[1-4])_s(?P<steps>[0-9]+)(?:_a(?P<a>[0-9.]+))?$")


def _parse(label: str):
    m = _LABEL.match(label)
    if m is None:
        raise SystemExit(f"bad run label {label!r}: expected mf<1-4>[c]_<rtol>[_a<a_start>], e.g. mf2_1e-4")
    return m


def _compensated(label: str) -> bool:
    return backend_of(label) == "jaxpm" and bool(_parse(label)["comp"])


def backend_of(label: str) -> str:
    """``"pmwd"`` for labels ``pmwd<m>_s<steps>[_a<a_start>]``, else ``"jaxpm"``."""
    return "pmwd" if label.startswith("pmwd") else "jaxpm"


def settings(label: str) -> dict:
    """Backend options of a run label ``mf<m>[c]_<rtol>[_a<a_start>]`` (``c``: see the module notes) or
    ``pmwd<m>_s<steps>[_a<a_start>]`` (the pmwd adapter; its default a_start 1/16 unless given)."""
    if backend_of(label) == "pmwd":
        m = _PMWD_LABEL.match(label)
        if m is None:
            raise SystemExit(f"bad pmwd run label {label!r}: expected pmwd<1-4>_s<steps>[_a<a_start>]")
        out = {"mesh_factor": int(m["mf"]), "steps": int(m["steps"])}
        if m["a"]:
            out["a_start"] = float(m["a"])
        return out
    m = _parse(label)
    tol = float(m["tol"])
    out = {"mesh_factor": int(m["mf"]), "rtol": tol, "atol": tol, "compensate": _compensated(label)}
    if m["a"]:
        out["a_start"] = float(m["a"])
    return out


def run_cached(label, ics, z, cache: Path, grid: int):
    """Snapshots of one configuration, from the cache or computed (and cached) now; wall time [s]."""
    path = cache / f"n{grid}_{label}.npz"
    if path.is_file():
        data = np.load(path)
        snaps = [Snapshot.from_displacement(d, v, 1.0 / (1.0 + zi), ics.box_size, QUIJOTE_FIDUCIAL)
                 for d, v, zi in zip(data["dis"], data["vel"], data["z"])]
        return snaps, float(data["seconds"]), int(data["force_evaluations"])
    t0 = time.perf_counter()
    snaps = simulate(ics, QUIJOTE_FIDUCIAL, z=z, backend=backend_of(label), **settings(label))
    seconds = time.perf_counter() - t0
    fe = int(snaps[0].meta.get("force_evaluations", snaps[0].meta.get("steps", -1)))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.npz")
    np.savez(tmp, dis=np.stack([s.displacement_field() for s in snaps]),
             vel=np.stack([s.velocity_field() for s in snaps]), z=np.asarray(z), seconds=seconds,
             force_evaluations=fe)
    tmp.replace(path)
    logging.info("%s: %.1f s, %d force evaluations", label, seconds, fe)
    return snaps, seconds, fe


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=int, default=64, help="particles per side (box = 1000 n / 512 Mpc/h)")
    parser.add_argument("--z", type=float, nargs="+", default=[0.0, 1.0, 3.0], help="output redshifts")
    parser.add_argument("--seed", type=int, default=1, help="white-noise seed")
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, help="run labels mf<m>_<rtol>[_a<a_start>]")
    parser.add_argument("--reference", default=None, help="reference label (default: the last of --runs)")
    parser.add_argument("--k-max", type=float, default=1.0, help="largest k compared [h/Mpc]")
    parser.add_argument("--cache", type=Path, default=Path("convergence_cache"), help="folder of cached runs")
    parser.add_argument("--out", type=Path, default=None, help="write the table and numbers here (.json)")
    parser.add_argument("--smoke", action="store_true",
                        help="16^3, loose tolerances, every run kind (JaxPM, compensated, pmwd), cache and --out "
                             "in a temporary folder (for CI; numbers mean nothing)")
    args = parser.parse_args(argv)
    if args.smoke:
        print("SMOKE MODE: smallest sizes, every code path exercised; the numbers below mean nothing", flush=True)
        tmp = Path(tempfile.mkdtemp(prefix="convergence_pm_smoke_"))
        args.grid, args.z, args.runs, args.reference = 16, [0.0, 1.0], ["mf1_1e-2", "mf1c_1e-2", "pmwd1_s2"], None
        args.cache, args.out = tmp / "cache", tmp / "out.json"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("jax").setLevel(logging.WARNING)

    box = TRAINED_CELL_SIZE_MPC_H * args.grid
    ics = InitialConditions.from_noise(args.grid, box, QUIJOTE_FIDUCIAL, seed=args.seed)
    reference = args.reference or args.runs[-1]
    labels = list(dict.fromkeys([*args.runs, reference]))
    results = {label: run_cached(label, ics, args.z, args.cache, args.grid) for label in labels}
    ref_snaps = results[reference][0]
    rows = [compare_snapshots(s, r, k_max=args.k_max, label=label)
            for label in labels if label != reference
            for s, r in zip(results[label][0], ref_snaps)]
    rows.sort(key=lambda r: (r.z, labels.index(r.label)))
    timings = {label: results[label][1] for label in labels}
    table = markdown_table(rows, timings=timings)
    header = (f"grid {args.grid}^3, box {box:g} Mpc/h (cell {TRAINED_CELL_SIZE_MPC_H:.6g} Mpc/h), seed {args.seed}, "
              f"reference {reference}, k <= {args.k_max} h/Mpc")
    print(header)
    print(table)
    for label in labels:
        print(f"  {label}: {results[label][1]:.1f} s, {results[label][2]} force evaluations")
    if args.out is not None:
        args.out.write_text(json.dumps({
            "header": header, "table": table, "reference": reference,
            "runs": {label: {"settings": settings(label), "compensated": _compensated(label),
                             "seconds": results[label][1], "force_evaluations": results[label][2]}
                     for label in labels},
            "rows": [r.__dict__ for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
