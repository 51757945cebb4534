"""``emu-backend predict``: a linear displacement field on disk -> emulated field files, resumably.

Builds a :class:`~emu_backend.pipelines.predict.PredictConfig` from the flags and calls
:func:`emu_backend.pipelines.predict.predict` (one process, or every rank under ``torchrun`` or
``srun`` with ``WORLD_SIZE > 1``). An interrupted run leaves ``.partial`` files that the same command
continues; existing outputs are refused unless ``--overwrite``.

Examples
--------
>>> p = argparse.ArgumentParser(prog="predict"); add_arguments(p)
>>> p.parse_args(["lin.npy", "out.h5", "--omega-m", "0.3", "--z", "0", "1"]).z
[0.0, 1.0]
"""

from __future__ import annotations

import argparse
import logging

from ..inference.acceleration import COMPILE_MODES, PRECISIONS
from ..pipelines.predict import PredictConfig, predict
from ._common import EXIT_OK, add_emulator_arguments, add_memory_argument, on_terminal, with_banner

__all__ = ["NAME", "HELP", "add_arguments", "handle", "config_from_args"]

logger = logging.getLogger(__name__)

NAME = "predict"
HELP = ("emulate a linear displacement field file (.npy or HDF5, (3,N,N,N) [Mpc/h]) into HDF5 field "
        "files, with bounded memory, resuming an interrupted run; distributed under torchrun/srun")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``predict`` subcommand's arguments."""
    p.add_argument("input", metavar="INPUT", help="z = 0 linear displacement (3,N,N,N) [Mpc/h]: .npy or HDF5 field file")
    p.add_argument("output", metavar="OUTPUT", help="output .h5 file (several --z: OUTPUT_z<z>.h5; "
                                                    "distributed: parts OUTPUT.<rank>.h5 and OUTPUT.index.json)")
    p.add_argument("--omega-m", dest="omega_m", type=float, required=True, metavar="X", help="matter density")
    p.add_argument("--z", type=float, nargs="+", required=True, metavar="Z", help="output redshift(s)")
    add_emulator_arguments(p, tile_size_default=128, batch_size_default=1, device_default="cpu",
                           extrapolation_default=False,
                           tile_size_help="output cells per tile side, a multiple of 8 (default 128; memory grows "
                                          "with it)",
                           device_help="torch device (default cpu; 'cuda' means cuda:LOCAL_RANK under torchrun)")
    p.add_argument("--box-size", dest="box_size", type=float, metavar="MPC_H",
                   help="box side [Mpc/h] (default: the input file's, else N * 1000/512)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="network arithmetic: fp32 (default), tf32 (CUDA), bf16/fp16 autocast; their errors are "
                        "in docs/performance.md")
    p.add_argument("--compile-mode", "--compile", dest="compile_mode", choices=COMPILE_MODES, metavar="MODE",
                   help=f"torch.compile mode, one of {', '.join(COMPILE_MODES)} (reduce-overhead: CUDA graphs; "
                        "default: eager)")
    p.add_argument("--no-velocity", dest="velocity", action="store_false", help="displacement only")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs, discard partial files")
    add_memory_argument(p, default=True)


#: Flags that are PredictConfig keys of the same name (``dest``).
_KEYS = ("input", "output", "omega_m", "weights", "tile_size", "batch_size", "device", "box_size", "precision",
         "compile_mode", "velocity", "overwrite", "allow_extrapolation", "check_memory")


def config_from_args(args: argparse.Namespace) -> PredictConfig:
    """The :class:`PredictConfig` of parsed ``predict`` flags (one ``--z``: exactly ``OUTPUT``)."""
    z = args.z[0] if len(args.z) == 1 else tuple(args.z)
    return PredictConfig(z=z, **{k: getattr(args, k) for k in _KEYS})


def handle(args: argparse.Namespace) -> int:
    """Run ``emu-backend predict``; rank 0 prints what was written (errors propagate to ``main``)."""
    config = config_from_args(args)
    result = predict(config, progress=on_terminal())
    if result.rank == 0:
        lines = [f"emu-backend predict: {len(result.files)} output(s), {result.world_size} rank(s), "
                 f"tile {config.tile_size}"]
        lines += [f"  {p}" for p in result.files]
        print(with_banner(lines, result.untrained))
    return EXIT_OK
