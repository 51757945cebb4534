"""Benchmark (not a test): merger trees after a multi-redshift emulator run.

Times the emulator once per output time, then the tree building: FoF at every output
(:func:`emu_backend.trees.find_output_halos`), the links (:func:`emu_backend.trees.link_halos`), the
consistent-trees file (:func:`emu_backend.trees.write_consistent_trees`) and the statistics. Prints the
times as rates and as ratios to the emulator's time, never pass/fail.

    python benchmarks/bench_trees.py                  # 64^3 particles, 10 outputs z = 3 -> 0
    python benchmarks/bench_trees.py --grid 32 --n-outputs 12
    python benchmarks/bench_trees.py --smoke          # CI: 16^3, 3 outputs, every code path
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from emu_backend import QUIJOTE_FIDUCIAL, InitialConditions, simulate
from emu_backend.pipelines.trees import log_spaced_redshifts
from emu_backend.simulator import get_backend
from emu_backend.trees import find_output_halos, link_halos, tree_statistics, write_consistent_trees


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=int, default=64, help="particles per side (64)")
    parser.add_argument("--n-outputs", type=int, default=10, help="output times from z = 3 to 0 (10)")
    parser.add_argument("--linking-length", type=float, default=0.2, help="FoF b (0.2)")
    parser.add_argument("--min-particles", type=int, default=20, help="smallest halo (20)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--smoke", action="store_true", help="16^3, 3 outputs, b = 0.3, >= 5 particles")
    args = parser.parse_args(argv)
    if args.smoke:
        args.grid, args.n_outputs, args.linking_length, args.min_particles = 16, 3, 0.3, 5

    import halotools.mock_observables  # noqa: F401 - its import (seconds) is not the FoF's time

    zs = log_spaced_redshifts(args.n_outputs, 3.0, 0.0)
    ics = InitialConditions.from_noise(args.grid, None, QUIJOTE_FIDUCIAL, seed=args.seed)
    backend = get_backend("emulator")
    t_emu, t_fof, outputs = 0.0, 0.0, []
    for z in zs:  # the emulator once per output time, as the pipeline runs it
        t0 = time.perf_counter()
        snap = simulate(ics, QUIJOTE_FIDUCIAL, z=[z], backend=backend)[0]
        t1 = time.perf_counter()
        outputs.append(find_output_halos(snap, args.linking_length, args.min_particles))
        t_emu += t1 - t0
        t_fof += time.perf_counter() - t1
    t0 = time.perf_counter()
    forest = link_halos(outputs)
    t_link = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = write_consistent_trees(forest, Path(tmp) / "tree_0_0_0.dat", QUIJOTE_FIDUCIAL)
        t_write = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
    t0 = time.perf_counter()
    tree_statistics(forest)
    t_stats = time.perf_counter() - t0
    t_trees = t_fof + t_link + t_write
    n_part = args.grid**3
    print(f"{args.grid}^3 particles, {len(zs)} outputs z = {zs[0]:g} -> {zs[-1]:g}, b = {args.linking_length}, "
          f">= {args.min_particles} particles: {forest.n_halos} halos, {forest.counts['links']} links, "
          f"{forest.counts['mergers']} mergers, {forest.counts['flybys']} fly-bys")
    print(f"{'step':<22} {'seconds':>9} {'per output [s]':>15} {'/ emulator':>11} {'rate':>30}")
    rows = [("emulator", t_emu, f"{n_part * len(zs) / t_emu:.3g} particles/s"),
            ("FoF (halotools)", t_fof, f"{n_part * len(zs) / t_fof:.3g} particles/s"),
            ("links (sparse table)", t_link, f"{n_part * (len(zs) - 1) / max(t_link, 1e-9):.3g} particle pairs/s"),
            ("write tree_0_0_0.dat", t_write, f"{forest.n_halos / max(t_write, 1e-9):.3g} halos/s, {size_mb:.2f} MB"),
            ("statistics", t_stats, f"{forest.n_halos / max(t_stats, 1e-9):.3g} halos/s"),
            ("trees = FoF+links+write", t_trees, "")]
    for name, sec, rate in rows:
        print(f"{name:<22} {sec:>9.3f} {sec / len(zs):>15.4f} {sec / t_emu:>11.4f} {rate:>30}")


if __name__ == "__main__":
    main()
