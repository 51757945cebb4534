"""``emu-backend lightcone``: ICs (or a linear field) + observer + redshift range -> particle lightcone (one HDF5
file per shell), HEALPix density and Born convergence maps, and a report (maps, convergence C_ell against
Limber). Builds a :class:`~emu_backend.pipelines.lightcone.LightconeConfig` and calls
:func:`emu_backend.pipelines.lightcone.lightcone`; rerunning the same command resumes. See docs/lightcone.md.

Examples
--------
>>> p = argparse.ArgumentParser(prog="lightcone"); add_arguments(p)
>>> c = config_from_args(p.parse_args(["--out", "lc", "--z-max", "0.5", "--cone", "10", "20", "5"]))
>>> c.spec.z_max, c.spec.cone.radius_deg
(0.5, 5.0)
"""

from __future__ import annotations

import argparse

from ..cosmology.params import PRESETS
from ..lightcone.build import LightconeSpec
from ..lightcone.crossing import INTERPOLATIONS
from ..lightcone.geometry import FULL_SKY, Cone
from ..pipelines.lightcone import LightconeConfig, lightcone
from ._common import EXIT_OK, on_terminal

__all__ = ["NAME", "HELP", "add_arguments", "handle", "config_from_args"]

NAME = "lightcone"
HELP = ("build a particle lightcone from emulated outputs (per-shell HDF5, resumable), HEALPix density and Born "
        "convergence maps, and a report")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``emu-backend lightcone``."""
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (a rerun resumes it)")
    p.add_argument("--grid", type=int, default=32, help="particles per side of ICs from noise (default 32)")
    p.add_argument("--box-size", dest="box_size", type=float, metavar="L",
                   help="box side [Mpc/h] (default the trained resolution 1000 grid / 512)")
    p.add_argument("--seed", type=int, default=42, help="noise seed (default 42)")
    p.add_argument("--linear", metavar="FILE", help="linear displacement field file instead of noise")
    p.add_argument("--cosmology", default="quijote", choices=sorted(PRESETS), help="cosmology preset")
    p.add_argument("--omega-m", dest="omega_m", type=float, help="change the preset's Omega_m")
    p.add_argument("--sigma8", type=float, help="change the preset's sigma8")
    p.add_argument("--backend", default="emulator", help="simulator backend (default emulator; za, 2lpt, ...)")
    p.add_argument("--weights", metavar="PATH", help="emulator checkpoint (default: shipped weights)")
    p.add_argument("--allow-extrapolation", dest="allow_extrapolation", action="store_true",
                   help="let the emulator run outside its training domain (with a warning)")
    p.add_argument("--tile-size", dest="tile_size", type=int, help="emulator tile size")
    g = p.add_argument_group("lightcone")
    g.add_argument("--observer", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="observer position [Mpc/h] (default the box centre)")
    g.add_argument("--z-min", dest="z_min", type=float, default=0.0, help="nearest redshift (default 0)")
    g.add_argument("--z-max", dest="z_max", type=float, default=1.0, help="farthest redshift (default 1)")
    g.add_argument("--n-shells", dest="n_shells", type=int, default=8, help="shells, uniform in distance (8)")
    g.add_argument("--substeps", type=int, default=1, help="emulator outputs per shell (default 1: the edges)")
    g.add_argument("--interpolation", choices=INTERPOLATIONS, default="hermite", help="trajectory (hermite)")
    g.add_argument("--cone", type=float, nargs=3, metavar=("RA", "DEC", "RADIUS"),
                   help="circular opening [deg] (default the full sky)")
    g.add_argument("--nside", type=int, default=64, help="HEALPix NSIDE of the maps (default 64)")
    g.add_argument("--source-redshifts", dest="source_redshifts", type=float, nargs="+", default=(),
                   help="convergence source redshifts (default z-max)")
    g.add_argument("--no-halofit", dest="halofit", action="store_false",
                   help="leave CLASS halofit out of the report (it takes CLASS's run time)")
    g.add_argument("--pixel-window-dir", dest="pixel_window_dir", metavar="DIR",
                   help="folder with healpy's pixel-window files (pixel_window_n<NSIDE>.fits): the C_ell comparison "
                        "then runs to 2 nside (default: none, to nside / 2; nothing is downloaded)")
    g.add_argument("--maps-only", dest="maps_only", action="store_true", help="do not write the particles")


def config_from_args(args: argparse.Namespace) -> LightconeConfig:
    """The :class:`LightconeConfig` of parsed flags."""
    cosmo = PRESETS[args.cosmology]
    changes = {k: getattr(args, k) for k in ("omega_m", "sigma8") if getattr(args, k) is not None}
    if changes:
        cosmo = cosmo.clone(**changes)
    spec = LightconeSpec(observer=args.observer, z_min=args.z_min, z_max=args.z_max, n_shells=args.n_shells,
                         substeps=args.substeps, interpolation=args.interpolation,
                         cone=FULL_SKY if args.cone is None else Cone(*args.cone), nside=args.nside,
                         source_redshifts=tuple(args.source_redshifts), particles=not args.maps_only)
    return LightconeConfig(out=args.out, spec=spec, grid=args.grid, box_size=args.box_size, seed=args.seed,
                           linear=args.linear, cosmology=cosmo, backend=args.backend, weights=args.weights,
                           allow_extrapolation=args.allow_extrapolation, tile_size=args.tile_size,
                           halofit=args.halofit, pixel_window_dir=args.pixel_window_dir)


def handle(args: argparse.Namespace) -> int:
    """Run ``emu-backend lightcone`` and print where the outputs are."""
    result = lightcone(config_from_args(args), progress=on_terminal())
    print(f"emu-backend lightcone: {result.report['particles']} particles in {len(result.shells)} shells\n"
          f"  {result.folder}\n  {result.maps}\n  {result.report_md}\n  {result.report_png}")
    return EXIT_OK
