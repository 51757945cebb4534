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

from ..errors import InputError
from ..pipelines.run import RunConfig, run
from ..pipelines.run_config import BASELINES, REFERENCES, config_from_mapping, default_toml, load_toml
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


EPILOG = """\
config file (--config TOML): the keys of RunConfig at top level, the cosmology as a [cosmology] table;
every key is optional and flags win over the file. `emu-backend run --print-config` writes the full
default file with a comment per key. A short one:

    grid = 64
    z = [0.0, 0.5, 1.0]
    baseline = "2lpt"
    [cosmology]
    preset = "quijote"      # or planck18; the keys below change it
    omega_m = 0.3
    sigma8 = 0.8

The figure power.png: P(k) (CIC on a 2x mesh, interlaced, window-deconvolved, k <= k_Nyquist/2) against
the realization's own linear power, the baseline, halofit (with classy) and --reference jaxpm|pmwd,
beside density slices; the weights and their documented accuracy are recorded in run.json.
"""

#: Cosmology flags: dest (the [cosmology] key) -> (flag, help).
COSMOLOGY_FLAGS = {
    "omega_m": ("--omega-m", "Omega_m, total matter density"),
    "omega_b": ("--omega-b", "Omega_b, baryon density"),
    "h": ("--h", "H0 / (100 km/s/Mpc)"),
    "n_s": ("--n-s", "scalar spectral index n_s"),
    "sigma8": ("--sigma8", "sigma8 of the linear P(k) at z = 0 (the ICs' amplitude)"),
    "A_s": ("--A-s", "primordial amplitude A_s at 0.05/Mpc, instead of sigma8"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``run`` flags; every default is None: unset flags take the config file's (or RunConfig's) value."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("-c", "--config", metavar="TOML", help="TOML config file (flags win over its keys); "
                   "format below, or see --print-config")
    p.add_argument("--print-config", dest="print_config", action="store_true",
                   help="print the config these flags give as a commented TOML file, and exit")
    c = p.add_argument_group("cosmology (of the ICs and the emulator's style; change the preset's values)")
    c.add_argument("--cosmology", metavar="PRESET", help="cosmology preset: quijote (default), planck18")
    for dest, (flag, text) in COSMOLOGY_FLAGS.items():
        c.add_argument(flag, dest=dest, type=float, metavar="X", help=text)
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
    p.add_argument("--baseline", help=f"baseline for the plot: {', '.join(BASELINES)} (default 2lpt)")
    p.add_argument("--reference", help=f"N-body reference for the plot, run on the same ICs: "
                   f"{', '.join(REFERENCES)} (default none; needs the jaxpm or pmwd extra)")
    p.add_argument("--halofit", action=argparse.BooleanOptionalAction, default=None,
                   help="draw CLASS's halofit P(k) on the plot where classy is installed (default on)")
    p.add_argument("--power", metavar="FILE", help="tabulated linear P(k) at z=0: columns k [h/Mpc], P [(Mpc/h)^3]")
    p.add_argument("--fixed-amplitude", dest="fixed_amplitude", action="store_true", default=None,
                   help="fixed-amplitude noise (Quijote 'fixed')")
    p.add_argument("--paired", action="store_true", default=None, help="phase-flipped noise (Quijote 'paired')")
    add_memory_argument(p)


#: Flags that are config keys of the same name (``dest``).
_KEYS = ("grid", "box_size", "seed", "z", "a", "backend", "weights", "tile_size", "batch_size", "device",
         "allow_extrapolation", "format", "out", "overwrite", "n_files", "length_unit", "plot", "baseline",
         "reference", "halofit", "power", "fixed_amplitude", "paired", "check_memory")


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
    changed = {key: getattr(args, key) for key in COSMOLOGY_FLAGS if getattr(args, key) is not None}
    if args.cosmology is not None or changed:
        if args.cosmology is not None:
            cosmo = {"preset": args.cosmology}
        else:  # change the file's (or the default) cosmology
            cosmo = {**base.cosmology.to_dict()}
        if changed:
            cosmo["name"] = "custom"
            if "A_s" in changed:  # A_s replaces sigma8 and vice versa
                cosmo["sigma8"] = None
            elif "sigma8" in changed:
                cosmo["A_s"] = None
        cosmo.update(changed)
        flags["cosmology"] = cosmo
    try:
        return config_from_mapping(flags, base=base, source="command-line flags")
    except InputError as exc:  # a cosmology flag: name it, not the [cosmology] key it fills
        message = str(exc)
        for key in changed:
            named = f"config key 'cosmology': Cosmology.{key} "
            if message.startswith(named):
                raise InputError(f"{COSMOLOGY_FLAGS[key][0]}: {key} {message[len(named):]}") from exc
        raise


def handle(args: argparse.Namespace) -> int:
    """Run ``emu-backend run`` and print what it wrote; package errors propagate to ``main`` (exit 2)."""
    config = config_from_args(args)
    if args.print_config:
        print(default_toml(config), end="")
        return EXIT_OK
    result = run(config, progress=on_terminal())
    c = config.cosmology
    lines = [f"emu-backend run: backend {config.backend!r}, n = {config.grid}, "
             f"L = {config.box_size_mpc_h:g} Mpc/h, seed {config.seed}, z = {[f'{z:g}' for z in config.redshifts]}, "
             f"{result.seconds:.1f} s",
             f"cosmology {c.name}: Omega_m = {c.omega_m:g}, Omega_b = {c.omega_b:g}, h = {c.h:g}, n_s = {c.n_s:g}, "
             + (f"sigma8 = {c.sigma8:g}" if c.sigma8 is not None else f"A_s = {c.A_s:g}"),
             f"wrote {len(result.files)} file(s) to {config.out}:"]
    lines += [f"  {p}" for p in result.files]
    if result.weights:
        lines.append(f"weights: {result.weights['label']}")
    if result.checksum:
        lines.append(f"weights checksum: {result.checksum}")
    print(with_banner(lines, result.untrained))
    return EXIT_OK
