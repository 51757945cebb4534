"""``emu-backend train``: train (or resume) the z-dependent emulator on training-sample files.

Builds a :class:`~emu_backend.pipelines.train.TrainJobConfig` (with its
:class:`~emu_backend.training.config.TrainConfig`) from the flags and calls
:func:`emu_backend.pipelines.train.train_on_files`; see ``docs/training.md``. Under ``torchrun`` or
SLURM every rank runs this same command (data-parallel, see :mod:`emu_backend.training.distributed`).

Examples
--------
>>> p = argparse.ArgumentParser()
>>> add_arguments(p)
>>> a = p.parse_args(["--data", "d", "--out", "run", "--width", "8", "--no-resume"])
>>> a.width, a.resume, a.val_fraction
(8, False, 0.1)
"""

from __future__ import annotations

import argparse
import logging

from ..pipelines.train import TrainJobConfig, train_on_files
from ..training.config import TrainConfig
from ._common import EXIT_OK, add_memory_argument

__all__ = ["NAME", "HELP", "add_arguments", "handle", "config_from_args"]

logger = logging.getLogger(__name__)

NAME = "train"
HELP = "train the z-dependent emulator on training samples (checkpoints, resume, DDP via torchrun/SLURM)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``train`` options to a parser (defaults are those of :class:`TrainConfig`)."""
    p.add_argument("--data", nargs="+", required=True, metavar="PATH",
                   help="training-sample files (*.h5) or folders holding them")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val-fraction", dest="val_fraction", type=float, default=0.1, metavar="F",
                     help="fraction of the simulations held out for validation (default 0.1; 0 for none)")
    val.add_argument("--val-files", dest="val_files", nargs="+", metavar="PATH",
                     help="explicit validation files or folders (then every --data file trains)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="run folder: checkpoints/, log.csv, model.emu")
    p.add_argument("--width", type=int, help="network channel width (default 64)")
    p.add_argument("--crop", type=int, help="output crop size in cells, >= 8 (default 32; input crop + 96)")
    p.add_argument("--batch", type=int, help="global batch size over all ranks (default 1)")
    p.add_argument("--steps", type=int, help="optimiser steps (default 1000)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 4e-4)")
    p.add_argument("--weight-decay", dest="weight_decay", type=float, help="AdamW weight decay (default 1e-4)")
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int, help="linear warm-up (default min(100, steps/10))")
    p.add_argument("--grad-clip", dest="grad_clip", type=float, help="max gradient norm (default 1.0)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), help="CUDA autocast (default auto)")
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, help="steps between checkpoints (100)")
    p.add_argument("--val-every", dest="val_every", type=int, help="steps between validations (100)")
    p.add_argument("--val-samples", dest="val_samples", type=int, help="validation crops (8)")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="no cubic-symmetry augmentation")
    p.add_argument("--init-weights", dest="init_weights", metavar="EMU",
                   help="fine-tune: start from this zdep model file (same width) instead of a fresh initialisation")
    p.add_argument("--device", help="cpu (default) or cuda (rank r takes cuda:LOCAL_RANK)")
    p.add_argument("--seed", type=int, help="seed of the initialisation and of every data draw (default 0)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the latest checkpoint in --out (default on)")
    p.add_argument("--overwrite", action="store_true", help="with --no-resume: start over in a used --out folder")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    add_memory_argument(p, default=True)


#: Flags that are TrainConfig keys of the same name (``dest``); unset ones keep TrainConfig's defaults.
_TRAIN_KEYS = ("width", "crop", "batch", "steps", "lr", "weight_decay", "warmup_steps", "grad_clip", "precision",
               "checkpoint_every", "val_every", "val_samples", "augment", "device", "seed", "init_weights")


def config_from_args(args: argparse.Namespace) -> TrainJobConfig:
    """The :class:`TrainJobConfig` of parsed ``train`` flags."""
    train = TrainConfig(**{k: getattr(args, k) for k in _TRAIN_KEYS if getattr(args, k) is not None})
    return TrainJobConfig(data=args.data, out=args.out, train=train, val_files=args.val_files or None,
                          val_fraction=args.val_fraction, resume=args.resume, overwrite=args.overwrite,
                          check_memory=args.check_memory)


def handle(args: argparse.Namespace) -> int:
    """Run ``emu-backend train``; package errors propagate to :func:`emu_backend.cli.main.main` (exit 2)."""
    config = config_from_args(args)
    job = train_on_files(config, progress=args.progress)
    result = job.result
    if result.model_path is not None:
        best = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.5g}"
        print(f"emu-backend train: {result.steps} steps ({job.n_train} training, {job.n_val} validation "
              f"simulations), resumed from step {result.resumed_from}; final training loss "
              f"{result.final_loss:.5g}, best validation loss {best} at step {result.best_step}\n"
              f"wrote {result.model_path} and {result.log_path}")
    return EXIT_OK
