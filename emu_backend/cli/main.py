"""The ``emu-backend`` console script (also ``python -m emu_backend``).

Subcommands are registered in :data:`SUBCOMMANDS` as ``name -> (add_arguments, handler)``, so
``validate``, ``train`` and ``make-training-set`` can be added beside ``run``. Errors of the package
(:class:`~emu_backend.errors.EmuBackendError`) print ``error: <message>`` to stderr and exit with code 2.

Examples
--------
>>> build_parser().prog
'emu-backend'
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from ..errors import EmuBackendError

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130

BANNER = "\n".join([
    "!" * 78,
    "!!" + "UNTRAINED EMULATOR WEIGHTS: the default network is RANDOM.".center(74) + "!!",
    "!!" + "These outputs are NOT PHYSICAL. Pass --weights PATH for real ones.".center(74) + "!!",
    "!" * 78,
])


# -- run -----------------------------------------------------------------------------------------
def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas or spaces, got {text!r}") from None


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="TOML", help="TOML config file (flags win over its keys)")
    p.add_argument("--cosmology", metavar="PRESET", help="cosmology preset: quijote (default), planck18")
    p.add_argument("--omega-m", dest="omega_m", type=float, metavar="X", help="override Omega_m of the cosmology")
    p.add_argument("-n", "--grid", type=int, metavar="N", help="particles per side (default 32)")
    p.add_argument("--box-size", dest="box_size", type=float, metavar="MPC_H",
                   help="box side [Mpc/h] (default 1000*N/512, the emulator's resolution)")
    p.add_argument("--seed", type=int, help="white-noise seed (default 42)")
    times = p.add_mutually_exclusive_group()
    times.add_argument("--z", type=_floats, nargs="+", metavar="Z", help="output redshifts (default 0,1)")
    times.add_argument("--a", type=_floats, nargs="+", metavar="A", help="output scale factors instead of --z")
    p.add_argument("--backend", help="emulator (default), za, 2lpt; jaxpm/pmwd via the adapters")
    p.add_argument("--weights", metavar="PATH", help="emulator checkpoint (default: shipped weights)")
    p.add_argument("--tile", type=int, help="emulator tile size, a multiple of 8 (default: automatic)")
    p.add_argument("--batch", type=int, help="tiles per network call (default 1)")
    p.add_argument("--device", help="torch device, e.g. cpu, cuda (default cpu)")
    p.add_argument("--allow-extrapolation", dest="allow_extrapolation", action="store_true", default=None,
                   help="let the emulator run outside its training domain (with a warning)")
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


_RUN_KEYS = ("grid", "box_size", "seed", "z", "a", "backend", "weights", "tile", "batch", "device",
             "allow_extrapolation", "format", "out", "overwrite", "n_files", "length_unit", "plot", "baseline",
             "power", "fixed_amplitude", "paired")


def config_from_args(args: argparse.Namespace):
    """The :class:`RunConfig` of parsed ``run`` arguments: the TOML file, then the flags given."""
    from .config import config_from_mapping, load_toml

    mapping = load_toml(args.config) if args.config else {}
    source = f"config file {args.config!r}" if args.config else "config"
    base = config_from_mapping(mapping, source=source)
    flags = {k: getattr(args, k) for k in _RUN_KEYS if getattr(args, k) is not None}
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


def _handle_run(args: argparse.Namespace) -> int:
    from .run import execute

    config = config_from_args(args)
    progress = sys.stderr.isatty()
    result = execute(config, progress=progress)
    lines = [f"emu-backend run: backend {config.backend!r}, n = {config.grid}, "
             f"L = {config.box_size_mpc_h:g} Mpc/h, seed {config.seed}, z = {list(config.redshifts)}, "
             f"{result.seconds:.1f} s",
             f"wrote {len(result.files)} file(s) to {config.out}:"]
    lines += [f"  {p}" for p in result.files]
    if result.checksum:
        lines.append(f"weights checksum: {result.checksum}")
    if result.untrained:
        lines = [BANNER, *lines, BANNER]
    print("\n".join(lines))
    return EXIT_OK


#: Subcommands: name -> (help, add_arguments, handler).
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "run": ("run the emulator (or a baseline) from seeded ICs and write snapshots, a P(k) plot and run.json",
            _add_run_arguments, _handle_run),
}

from .validate import add_validate_arguments, handle_validate  # noqa: E402  (light: no heavy imports at load)

SUBCOMMANDS["validate"] = ("compare the emulator and 2LPT with a reference N-body snapshot (Quijote, JaxPM, pmwd) "
                           "and write a report; exit 1 when a threshold is missed",
                           add_validate_arguments, handle_validate)
from .make_training_set import SUBCOMMAND as _MAKE_TRAINING_SET  # noqa: E402  (light: argparse only)

SUBCOMMANDS["make-training-set"] = _MAKE_TRAINING_SET
from .predict import SUBCOMMAND as _PREDICT  # noqa: E402  (light: argparse only)

SUBCOMMANDS["predict"] = _PREDICT
from .train import SUBCOMMAND as _TRAIN  # noqa: E402  (light: argparse only)

SUBCOMMANDS["train"] = _TRAIN


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="emu-backend",
        description="Field-level neural-network emulator of cosmological N-body simulations.",
    )
    parser.add_argument("--version", action="version", version=f"emu_backend {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, handler) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v INFO, -vv DEBUG)")
        add_arguments(p)
        p.set_defaults(handler=handler)
    return parser


def _setup_logging(verbosity: int) -> None:
    """Log to the current stderr at WARNING (default), INFO (-v) or DEBUG (-vv)."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_emu_backend_cli", False)]:
        root.removeHandler(old)  # a previous main() call in the same process (tests, notebooks)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._emu_backend_cli = True
    root.addHandler(handler)
    root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emu-backend`` console script; returns the exit code.

    With no subcommand, ``emu-backend`` prints help; ``emu-backend run`` with no other argument runs
    the embedded default (Quijote fiducial, n = 32, seed 42, z = 0 and 1).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, --version, usage errors (argparse exits 2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_ERROR
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_OK
    _setup_logging(args.verbose)
    try:
        return args.handler(args)
    except EmuBackendError as exc:
        logger.debug("error details", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
