"""``emu-backend run``: seeded ICs -> the emulator (or a baseline) -> snapshots, a P(k) plot, ``run.json``.

Builds a :class:`~emu_backend.pipelines.run_config.RunConfig` from the TOML file (``--config``) and
the flags given (flags win) and calls :func:`emu_backend.pipelines.run.run`.

Examples
--------
>>> p = argparse.ArgumentParser(prog="run"); add_arguments(p)
>>> config_from_args(p.parse_args(["--tile", "16", "--z", "0,1", "-n", "16"])).tile_size
16
"""

from __future__ import annotations

import argparse
import logging

from ..pipelines.run import RunConfig, run
from ..pipelines.run_config import config_from_mapping, load_toml
from ._common import (
    EXIT_OK,
    add_emulator_arguments,
    add_memory_argument,
    float_list,
    key_as_written,
    on_terminal,
    with_banner,
)

__all__ = ["NAME", "HELP", "add_arguments", "handle", "config_from_args"]

logger = logging.getLogger(__name__)

NAME = "run"
HELP = "run the emulator (or a baseline) from seeded ICs and write snapshots, a P(k) plot and run.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``run`` flags; every default is None: unset flags take the config file's (or RunConfig's) value."""
    p.add_argument("-c", "--config", metavar="TOML", help="TOML config file (flags win over its keys)")
    p.add_argument("--cosmology", metavar="PRESET", help="cosmology preset: quijote (default), planck18")
    p.add_argument("--omega-m", dest="omega_m", type=float, metavar="X", help="override Omega_m of the cosmology")
    p.add_argument("-n", "--grid", type=int, metavar="N", help="particles per side (default 32)")
    p.add_argument("--box-size", dest="box_size", type=float, metavar="MPC_H",
                   help="box side [Mpc/h] (default 1000*N/512, the emulator's resolution)")
    p.add_argument("--seed", type=int, help="white-noise seed (default 42)")
    times = p.add_mutually_exclusive_group()
    times.add_argument("--z", type=float_list, nargs="+", metavar="Z", help="output redshifts (default 0,1)")
    times.add_argument("--a", type=float_list, nargs="+", metavar="A", help="output scale factors instead of --z")
    p.add_argument("--backend", help="emulator (default), za, 2lpt; jaxpm/pmwd via the adapters")
    add_emulator_arguments(p)
    p.add_argument("--format", help="snapshot files: gadget (default), fields (HDF5), npz")
    p.add_argument("-o", "--out", metavar="DIR", help="output folder (default emu_out)")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace existing output files")
    p.add_argument("--n-files", dest="n_files", type=int, help="files per Gadget snapshot (default 1)")
    p.add_argument("--length-unit", dest="length_unit", help="Gadget length unit: kpc/h (default) or Mpc/h")
    p.add_argument("--plot", action=argparse.BooleanOptionalAction, default=None,
                   help="write power.png (default on)")
    p.add_argument("--baseline", help="baseline for the plot: 2lpt (default), za, none")
    p.add_argument("--power", metavar="FILE", help="tabulated linear P(k) at z=0: columns k [h/Mpc], P [(Mpc/h)^3]")
    p.add_argument("--fixed-amplitude", dest="fixed_amplitude", action="store_true", default=None,
                   help="fixed-amplitude noise (Quijote 'fixed')")
    p.add_argument("--paired", action="store_true", default=None, help="phase-flipped noise (Quijote 'paired')")
    add_memory_argument(p)


#: Flags that are config keys of the same name (``dest``).
_KEYS = ("grid", "box_size", "seed", "z", "a", "backend", "weights", "tile_size", "batch_size", "device",
         "allow_extrapolation", "format", "out", "overwrite", "n_files", "length_unit", "plot", "baseline",
         "power", "fixed_amplitude", "paired", "check_memory")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The :class:`RunConfig` of parsed ``run`` flags: the TOML file's keys, then the flags given.

    A flag given by an alias (``--tile``) is passed as that config key's alias, so an error names it
    as written.
    """
    mapping = load_toml(args.config) if args.config else {}
    source = f"config file {args.config!r}" if args.config else "config"
    base = config_from_mapping(mapping, source=source)
    flags = {key_as_written(args, k): getattr(args, k) for k in _KEYS if getattr(args, k) is not None}
    for key in ("z", "a"):  # --z 0 1 and --z 0,1 both give [0.0, 1.0]
        if key in flags:
            flags[key] = [v for group in flags[key] for v in group]
    if args.cosmology is not None or args.omega_m is not None:
        if args.cosmology is not None:
            cosmo = {"preset": args.cosmology}
        else:  # change Omega_m of the file's (or the default) cosmology
            cosmo = {**base.cosmology.to_dict(), "name": "custom"}
        if args.omega_m is not None:
            cosmo["omega_m"] = args.omega_m
        flags["cosmology"] = cosmo
    return config_from_mapping(flags, base=base, source="command-line flags")


def handle(args: argparse.Namespace) -> int:
    """Run ``emu-backend run`` and print what it wrote; package errors propagate to ``main`` (exit 2)."""
    config = config_from_args(args)
    result = run(config, progress=on_terminal())
    lines = [f"emu-backend run: backend {config.backend!r}, n = {config.grid}, "
             f"L = {config.box_size_mpc_h:g} Mpc/h, seed {config.seed}, z = {list(config.redshifts)}, "
             f"{result.seconds:.1f} s",
             f"wrote {len(result.files)} file(s) to {config.out}:"]
    lines += [f"  {p}" for p in result.files]
    if result.checksum:
        lines.append(f"weights checksum: {result.checksum}")
    print(with_banner(lines, result.untrained))
    return EXIT_OK
