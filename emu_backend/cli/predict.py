"""``emu-backend predict``: a linear displacement field on disk -> emulated field files, resumably.

A thin layer over :func:`~emu_backend.inference.streaming.predict_to_file` (one process) and
:func:`~emu_backend.inference.distributed.predict_distributed` (when launched by ``torchrun`` or
``srun`` with ``WORLD_SIZE > 1``). An interrupted run leaves ``.partial`` files that the same command
continues; existing outputs are refused unless ``--overwrite``.

Examples
--------
>>> p = argparse.ArgumentParser(prog="predict"); add_predict_arguments(p)
>>> p.parse_args(["lin.npy", "out.h5", "--omega-m", "0.3", "--z", "0", "1"]).z
[0.0, 1.0]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

__all__ = ["add_predict_arguments", "handle_predict", "SUBCOMMAND"]

logger = logging.getLogger(__name__)

HELP = ("emulate a linear displacement field file (.npy or HDF5, (3,N,N,N) [Mpc/h]) into HDF5 field "
        "files, with bounded memory, resuming an interrupted run; distributed under torchrun/srun")


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    """The ``predict`` subcommand's arguments."""
    from ..inference.acceleration import COMPILE_MODES, PRECISIONS

    p.add_argument("input", metavar="INPUT", help="z = 0 linear displacement (3,N,N,N) [Mpc/h]: .npy or HDF5 field file")
    p.add_argument("output", metavar="OUTPUT", help="output .h5 file (several --z: OUTPUT_z<z>.h5; "
                                                    "distributed: parts OUTPUT.<rank>.h5 and OUTPUT.index.json)")
    p.add_argument("--omega-m", dest="omega_m", type=float, required=True, metavar="X", help="matter density")
    p.add_argument("--z", type=float, nargs="+", required=True, metavar="Z", help="output redshift(s)")
    p.add_argument("--weights", metavar="PATH", help="emulator checkpoint (default: shipped weights)")
    p.add_argument("--tile", type=int, default=128, metavar="T",
                   help="output cells per tile side, a multiple of 8 (default 128; memory grows with it)")
    p.add_argument("--batch", type=int, default=1, metavar="B", help="tiles per network call (default 1)")
    p.add_argument("--device", default="cpu", metavar="D",
                   help="torch device (default cpu; 'cuda' means cuda:LOCAL_RANK under torchrun)")
    p.add_argument("--box-size", dest="box_size", type=float, metavar="MPC_H",
                   help="box side [Mpc/h] (default: the input file's, else N * 1000/512)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="network arithmetic: fp32 (default), tf32 (CUDA), bf16/fp16 autocast; their errors are "
                        "in docs/performance.md")
    p.add_argument("--compile", dest="compile_mode", choices=COMPILE_MODES, metavar="MODE",
                   help=f"torch.compile mode, one of {', '.join(COMPILE_MODES)} (reduce-overhead: CUDA graphs; "
                        "default: eager)")
    p.add_argument("--no-velocity", dest="velocity", action="store_false", help="displacement only")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs, discard partial files")
    p.add_argument("--allow-extrapolation", dest="allow_extrapolation", action="store_true",
                   help="let the emulator run outside its training domain (with a warning)")


def _device(name: str) -> str:
    """``cuda`` -> ``cuda:LOCAL_RANK`` under a distributed launcher (one GPU per rank)."""
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return name


def handle_predict(args: argparse.Namespace) -> int:
    """Run ``emu-backend predict``; returns the exit code (errors propagate to ``main``)."""
    from ..inference import Emulator, default_emulator
    from ..inference.distributed import predict_distributed, rank_and_world
    from ..inference.streaming import PARTIAL_SUFFIX, output_paths, predict_to_file
    from .main import BANNER, EXIT_OK

    rank, world = rank_and_world()
    device = _device(args.device)
    if args.weights is not None:
        emu = Emulator.from_checkpoint(args.weights, device=device, allow_extrapolation=args.allow_extrapolation,
                                       precision=args.precision, compile_mode=args.compile_mode)
    else:
        emu = default_emulator(device=device, allow_extrapolation=args.allow_extrapolation,
                               precision=args.precision, compile_mode=args.compile_mode)
    z = args.z[0] if len(args.z) == 1 else args.z
    finals = output_paths(args.output, z)
    kw = dict(box_size=args.box_size, velocity=args.velocity, tile_size=args.tile, batch_size=args.batch,
              overwrite=args.overwrite, progress=sys.stderr.isatty())
    say = rank == 0
    if world > 1:
        files = predict_distributed(emu, args.input, args.output, args.omega_m, z, **kw)
    else:
        partial = [p for p in finals if p.with_name(p.name + PARTIAL_SUFFIX).exists()]
        if partial and not args.overwrite:
            print(f"resuming {len(partial)} interrupted output(s): {', '.join(str(p) for p in partial)}",
                  file=sys.stderr)
        files = predict_to_file(emu, args.input, args.output, args.omega_m, z, **kw)
    if say:
        lines = [f"emu-backend predict: {len(files)} output(s), {world} rank(s), tile {args.tile}"]
        lines += [f"  {p}" for p in files]
        if emu.untrained:
            lines = [BANNER, *lines, BANNER]
        print("\n".join(lines))
    return EXIT_OK


#: ``name -> (help, add_arguments, handler)`` entry of :data:`emu_backend.cli.main.SUBCOMMANDS`.
SUBCOMMAND = (HELP, add_predict_arguments, handle_predict)
