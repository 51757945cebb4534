"""``emu-backend make-training-set``: a Latin hypercube of PM N-body runs written as training samples.

Builds a :class:`~emu_backend.pipelines.make_training_set.TrainingSetConfig` from the flags and calls
:func:`emu_backend.pipelines.make_training_set.build_training_set`; see ``docs/training_data.md``.

Examples
--------
>>> p = argparse.ArgumentParser()
>>> add_arguments(p)
>>> p.parse_args(["--out", "d", "--n-sims", "2", "--z", "0", "1"]).z
[[0.0], [1.0]]
"""

from __future__ import annotations

import argparse
import json
import logging

from ..errors import InputError
from ..pipelines.make_training_set import (
    DEFAULT_GRID,
    DEFAULT_Z,
    TrainingSetConfig,
    build_training_set,
)
from ._common import EXIT_OK, add_memory_argument, float_list, on_terminal

__all__ = ["NAME", "HELP", "add_arguments", "handle", "config_from_args"]

logger = logging.getLogger(__name__)

NAME = "make-training-set"
HELP = "run a Latin hypercube of PM N-body simulations and write training samples (HDF5) and manifest.json"
_POWER_CHOICES = ("eh", "eisenstein_hu", "class")


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``make-training-set`` options to a parser."""
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder (sample_XXXX.h5, manifest.json)")
    p.add_argument("--n-sims", dest="n_sims", type=int, required=True, metavar="K", help="number of simulations")
    p.add_argument("-n", "--grid", type=int, default=DEFAULT_GRID, metavar="N",
                   help=f"particles per side; box = 1000 N / 512 Mpc/h (default {DEFAULT_GRID})")
    p.add_argument("--z", type=float_list, nargs="+", metavar="Z",
                   help=f"output redshifts in [0, 3] (default {' '.join(f'{z:g}' for z in DEFAULT_Z)})")
    p.add_argument("--backend", default="jaxpm", help="N-body backend: jaxpm (default) or pmwd")
    p.add_argument("--mesh-factor", dest="mesh_factor", type=int, metavar="M",
                   help="PM mesh cells per particle per side (jaxpm default 3, see docs/training_data.md)")
    p.add_argument("--rtol", type=float, metavar="X", help="ODE tolerance of jaxpm (default 1e-4)")
    p.add_argument("--atol", type=float, metavar="X", help="absolute ODE tolerance of jaxpm (default: --rtol)")
    p.add_argument("--backend-option", dest="backend_option", type=_option, action="append", default=[],
                   metavar="KEY=VALUE", help="further backend option (JSON value), repeatable")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the hypercube; simulation i uses white-noise seed SEED + i (default 0)")
    p.add_argument("--vary-all", dest="vary_all", action="store_true",
                   help="also vary Omega_b, h, n_s over the Quijote latin-hypercube ranges")
    p.add_argument("--range", dest="ranges", nargs=3, action="append", default=[], metavar=("NAME", "LOW", "HIGH"),
                   help="range of a design parameter (omega_m, sigma8, omega_b, h, n_s), repeatable")
    p.add_argument("--power", choices=_POWER_CHOICES, default="eh",
                   help="linear P(k): eh (Eisenstein & Hu, default) or class (needs classy)")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute every sample even if the folder holds a set with other settings")
    add_memory_argument(p, default=True)


def _backend_options(args: argparse.Namespace) -> dict:
    options = dict(args.backend_option)
    if args.mesh_factor is not None:
        options["mesh_factor"] = args.mesh_factor
    if args.rtol is not None:
        options["rtol"] = args.rtol
        options.setdefault("atol", args.rtol)
    if args.atol is not None:
        options["atol"] = args.atol
    return options


def config_from_args(args: argparse.Namespace) -> TrainingSetConfig:
    """The :class:`TrainingSetConfig` of parsed ``make-training-set`` flags."""
    ranges = {}
    for name, lo, hi in args.ranges:
        try:
            ranges[name] = (float(lo), float(hi))
        except ValueError:
            raise InputError(f"--range {name} {lo} {hi}: LOW and HIGH must be numbers") from None
    z = DEFAULT_Z if args.z is None else tuple(v for group in args.z for v in group)
    return TrainingSetConfig(out=args.out, n_sims=args.n_sims, grid=args.grid, z=z, backend=args.backend,
                             backend_options=_backend_options(args), seed=args.seed, vary_all=args.vary_all,
                             ranges=ranges, power=args.power, overwrite=args.overwrite,
                             check_memory=args.check_memory)


def handle(args: argparse.Namespace) -> int:
    """Run ``emu-backend make-training-set``; package errors propagate to ``main`` (exit 2)."""
    config = config_from_args(args)
    result = build_training_set(config, progress=on_terminal())
    print(f"emu-backend make-training-set: {len(result.files)} simulation(s) of {config.grid}^3 in {config.out} "
          f"({len(result.computed)} computed, {len(result.skipped)} already there), {result.seconds:.1f} s")
    return EXIT_OK
