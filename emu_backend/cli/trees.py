"""``emu-backend trees``: halo merger trees from a multi-redshift emulator run, compared with a PM run of the
same initial conditions.

Builds a :class:`~emu_backend.pipelines.trees.TreesConfig` from the flags and calls
:func:`emu_backend.pipelines.trees.trees`: FoF halos at every output time (the emulator runs once per time),
links by shared particle IDs, trees in the consistent-trees format that ytree loads
(``<out>/<backend>/tree_0_0_0.dat``), and a report (``report.json``, ``report.md``, ``report.png``) of mass
accretion histories, formation redshifts and progenitor counts. A rerun resumes. See docs/merger_trees.md.

Examples
--------
>>> p = argparse.ArgumentParser(prog="trees"); add_arguments(p)
>>> config_from_args(p.parse_args(["--out", "t", "--n-outputs", "12", "--compare", "none"])).redshifts[:2]
(3.0, 2.5264)
"""

from __future__ import annotations

import argparse
import logging

from ..cosmology.params import PRESETS
from ..pipelines.trees import TreesConfig, trees
from ._common import EXIT_OK

__all__ = ["NAME", "HELP", "add_arguments", "handle", "config_from_args"]

logger = logging.getLogger(__name__)

NAME = "trees"
HELP = ("halo merger trees (FoF + links by particle IDs, consistent-trees files that ytree loads) from a "
        "multi-redshift emulator run, compared with a PM run of the same ICs")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``emu-backend trees``."""
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (a rerun resumes it)")
    p.add_argument("-n", "--grid", type=int, default=64, help="particles per side (default 64)")
    p.add_argument("--box-size", dest="box_size", type=float, metavar="L",
                   help="box side [Mpc/h] (default the emulator's training resolution 1000 n / 512)")
    p.add_argument("--seed", type=int, default=42, help="white-noise seed of the ICs (default 42)")
    p.add_argument("--linear-density", dest="linear_density", metavar="NPY",
                   help="ICs from a z = 0 linear density contrast (.npy, shape (n, n, n)) instead of the seed")
    p.add_argument("--cosmology", choices=sorted(PRESETS), default="quijote", help="cosmology preset")
    p.add_argument("--z", type=float, nargs="+", metavar="Z", help="output redshifts (default: --n-outputs "
                   "from --z-max to --z-min, evenly in ln(1+z))")
    p.add_argument("--n-outputs", dest="n_outputs", type=int, default=10, help="number of output times (10)")
    p.add_argument("--z-max", dest="z_max", type=float, default=3.0, help="earliest output redshift (3)")
    p.add_argument("--z-min", dest="z_min", type=float, default=0.0, help="latest output redshift (0)")
    p.add_argument("--backend", default="emulator", help="backend of the trees (default emulator)")
    p.add_argument("--compare", dest="compare_backend", default="pmwd", metavar="BACKEND",
                   help="backend of the comparison trees, e.g. pmwd or jaxpm (default pmwd); 'none' for none")
    p.add_argument("--weights", metavar="PATH", help="emulator checkpoint (default: shipped weights)")
    p.add_argument("--allow-extrapolation", dest="allow_extrapolation", action="store_true",
                   help="let the emulator run outside its training domain (with a warning)")
    p.add_argument("--linking-length", dest="linking_length", type=float, default=0.2, metavar="B",
                   help="FoF linking length in mean separations (0.2)")
    p.add_argument("--min-particles", dest="min_particles", type=int, default=20, help="smallest halo (20)")
    p.add_argument("--min-shared-fraction", dest="min_shared_fraction", type=float, default=0.5, metavar="F",
                   help="a descendant receives at least this fraction of a progenitor's members (0.5)")
    p.add_argument("--no-skip", dest="skip_one_output", action="store_false",
                   help="do not relink fly-bys or bridge one-output gaps (links between consecutive outputs only)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="do not write report.png")


_KEYS = ("out", "grid", "box_size", "seed", "linear_density", "z", "n_outputs", "z_max", "z_min", "backend",
         "weights", "allow_extrapolation", "linking_length", "min_particles", "min_shared_fraction",
         "skip_one_output", "plot")


def config_from_args(args: argparse.Namespace) -> TreesConfig:
    """The :class:`TreesConfig` of parsed flags."""
    compare = None if args.compare_backend.lower() == "none" else args.compare_backend
    return TreesConfig(cosmology=PRESETS[args.cosmology], compare_backend=compare,
                       **{k: getattr(args, k) for k in _KEYS})


def handle(args: argparse.Namespace) -> int:
    """Run ``emu-backend trees`` and print where the trees and the report are."""
    result = trees(config_from_args(args))
    counts = ", ".join(f"{name}: {b['counts']['trees_at_last_output']} final halos, {b['counts']['mergers']} "
                       f"mergers, trees in {b['seconds']['trees']:.1f} s after {b['seconds']['simulate']:.1f} s "
                       f"of simulation" for name, b in result.report["backends"].items())
    files = "\n  ".join(str(p) for p in (*result.tree_files.values(), result.report_md, result.report_png) if p)
    print(f"emu-backend trees: {counts}\n  {files}")
    return EXIT_OK
