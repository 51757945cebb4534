"""``emu-backend reconstruct``: field-level inference of the initial conditions and (Omega_m, sigma8) from an
observed density (a density mesh file, or a Gadget-HDF5 snapshot of any backend painted on a mesh).

Builds a :class:`~emu_backend.pipelines.reconstruct.ReconstructConfig` from the flags and calls
:func:`emu_backend.pipelines.reconstruct.reconstruct`: the MAP at the data's cosmology, NUTS chains from it
(resumable: the same command continues a killed run from its last saved step), and a report
(``report.json``, ``report.md``, ``report.png``) in ``--out``. See docs/field_level.md.

Examples
--------
>>> p = argparse.ArgumentParser(prog="reconstruct"); add_arguments(p)
>>> config_from_args(p.parse_args(["obs.h5", "--out", "rec", "--infer", "sigma8", "--num-samples", "50"])).sampler.num_samples
50
"""

from __future__ import annotations

import argparse
import logging

from ..differentiable.forward import DYNAMICS
from ..fieldlevel import COSMOLOGY_PARAMETERS, SamplerConfig
from ..fieldlevel.bias import bias_line
from ..pipelines.reconstruct import ReconstructConfig, reconstruct
from ._common import EXIT_OK, on_terminal

__all__ = ["NAME", "HELP", "add_arguments", "handle", "config_from_args"]

logger = logging.getLogger(__name__)

NAME = "reconstruct"
HELP = ("infer the initial white noise and Omega_m, sigma8 from an observed density (MAP + numpyro NUTS, "
        "resumable) and write a report")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``emu-backend reconstruct``."""
    p.add_argument("data", metavar="DATA", help="density mesh file (HDF5) or Gadget-HDF5 snapshot")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (a rerun resumes it)")
    p.add_argument("--noise-sigma", dest="noise_sigma", type=float, metavar="S",
                   help="noise standard deviation per voxel (required for snapshots; overrides the file's)")
    p.add_argument("--n-mesh", dest="n_mesh", type=int, metavar="N", help="mesh for a snapshot (default its grid)")
    p.add_argument("--grid", type=int, metavar="N", help="particles per side of the model (default the data's mesh)")
    p.add_argument("--z", type=float, help="override the data's redshift")
    p.add_argument("--infer", nargs="*", choices=COSMOLOGY_PARAMETERS, default=list(COSMOLOGY_PARAMETERS),
                   help="cosmological parameters inferred with the field (default both; none: fixed)")
    p.add_argument("--prior-omega-m", dest="prior_omega_m", type=float, nargs=2,
                   metavar=("LO", "HI"), help="uniform prior of Omega_m (default the emulator's trained range)")
    p.add_argument("--prior-sigma8", dest="prior_sigma8", type=float, nargs=2,
                   metavar=("LO", "HI"), help="uniform prior of sigma8 (default 0.6 1.0)")
    p.add_argument("--dynamics", choices=DYNAMICS, default="emulator", help="forward model (default emulator)")
    p.add_argument("--weights", metavar="PATH", help="emulator checkpoint (default: shipped weights)")
    p.add_argument("--window", choices=("tsc", "cic"),
                   help="mass assignment (default: the data file's recorded window, else tsc)")
    p.add_argument("--los", type=int, choices=(0, 1, 2), help="redshift space along this axis (default real space)")
    p.add_argument("--allow-extrapolation", dest="allow_extrapolation", action="store_true",
                   help="let the emulator run outside its training domain (with a warning)")
    p.add_argument("--map-iterations", dest="map_iterations", type=int, default=100, metavar="K",
                   help="L-BFGS outer iterations at most (default 100)")
    s = p.add_argument_group("sampler (numpyro NUTS)")
    s.add_argument("--num-warmup", dest="num_warmup", type=int, default=200, help="warm-up steps per chain (200)")
    s.add_argument("--num-samples", dest="num_samples", type=int, default=200, help="draws per chain (200)")
    s.add_argument("--num-chains", dest="num_chains", type=int, default=2, help="chains (2)")
    s.add_argument("--seed", type=int, default=0, help="sampler seed (0)")
    s.add_argument("--max-tree-depth", dest="max_tree_depth", type=int, default=8, help="NUTS tree depth (8)")
    s.add_argument("--target-accept", dest="target_accept_prob", type=float, default=0.8,
                   help="step-size adaptation target (0.8)")
    s.add_argument("--save-every", dest="save_every", type=int, default=10, help="steps between saves (10)")
    s.add_argument("--precondition", choices=("hessian", "linear", "none"), default="hessian",
                   help="NUTS coordinates: the posterior std per Fourier mode measured at the MAP (hessian, default) "
                        "or the linear model's (linear) as a mass matrix, or the white noise itself (none)")
    s.add_argument("--no-centre", dest="centre", action="store_false",
                   help="with Omega_m or sigma8 inferred, do not centre the Fourier modes on the linear amplitude "
                        "(centred partially by the data's share of each mode's precision by default)")


_KEYS = ("data", "out", "noise_sigma", "n_mesh", "grid", "z", "dynamics", "weights", "window", "los",
         "allow_extrapolation", "map_iterations")
_SAMPLER = ("num_warmup", "num_samples", "num_chains", "seed", "max_tree_depth", "target_accept_prob", "save_every",
            "precondition", "centre")


def config_from_args(args: argparse.Namespace) -> ReconstructConfig:
    """The :class:`ReconstructConfig` of parsed flags."""
    sampler = SamplerConfig(**{k: getattr(args, k) for k in _SAMPLER})
    return ReconstructConfig(infer=tuple(args.infer), prior_omega_m=args.prior_omega_m,
                             prior_sigma8=args.prior_sigma8, sampler=sampler,
                             **{k: getattr(args, k) for k in _KEYS})


def handle(args: argparse.Namespace) -> int:
    """Run ``emu-backend reconstruct`` and print where the report is."""
    result = reconstruct(config_from_args(args), progress=on_terminal())
    params = ", ".join(f"{k} {v['mean']:.4f} +- {v['std']:.4f}" for k, v in result.report["parameters"].items())
    print(f"emu-backend reconstruct: MAP converged {result.report['map']['converged']}; "
          f"{params or 'cosmology fixed'}\n  {bias_line(result.report['bias'])}\n  {result.report_md}\n"
          f"  {result.report_png}\n  {result.report_json}")
    return EXIT_OK
