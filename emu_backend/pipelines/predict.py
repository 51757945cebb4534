"""A prediction on disk (``emu-backend predict``): a linear displacement field file -> emulated field
files, with bounded memory, resumably, and across ranks under ``torchrun`` or ``srun``.

:func:`predict` builds the emulator (:func:`~emu_backend.inference.default.load_emulator`) and calls
:func:`~emu_backend.inference.streaming.predict_to_file` in one process, or
:func:`~emu_backend.inference.distributed.predict_distributed` when the launcher says
``WORLD_SIZE > 1``. An interrupted run leaves ``.partial`` files that the same call continues;
existing outputs are refused unless ``overwrite``; an output another run is writing is refused
(its lock file ``<output>.lock``), with or without ``overwrite``.

Examples
--------
>>> PredictConfig("lin.npy", "out.h5", omega_m=0.3, z=(0.0, 1.0)).z
(0.0, 1.0)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..checks import check_bool, check_choice, check_int, check_positive, check_real
from ..errors import InputError
from ..inference.acceleration import COMPILE_MODES, PRECISIONS
from ..inference.default import load_emulator
from ..inference.distributed import predict_distributed, rank_and_world
from ..inference.streaming import PARTIAL_SUFFIX, check_not_input, output_paths, predict_to_file
from ..inference.tiling import check_tile_size
from ..io.output_lock import check_unlocked
from ..io.output_path import check_writable
from .steps import TileLog

__all__ = ["PredictConfig", "PredictResult", "predict", "rank_device"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictConfig:
    """Everything :func:`predict` needs; validated on construction.

    Parameters
    ----------
    input : str
        z = 0 linear displacement (3, N, N, N) [Mpc/h]: a ``.npy`` or an HDF5 field file.
    output : str
        Output ``.h5``/``.hdf5`` file. A scalar ``z`` writes exactly this file; a tuple writes
        ``<stem>_z<z><suffix>`` per redshift; distributed runs write parts ``<stem>.<rank><suffix>``
        and ``<stem>.index.json``.
    omega_m : float
        Matter density, in (0, 1] (the emulator refuses values outside its training domain).
    z : float or tuple of float
        Output redshift(s), each > -1/3.
    weights : str or None
        Emulator checkpoint; None: the shipped default weights.
    tile_size : int
        Output cells per tile side, a positive multiple of 8 (memory grows with it).
    batch_size : int
        Tiles per network call, >= 1.
    device : str
        Torch device; ``"cuda"`` means ``cuda:LOCAL_RANK`` under a distributed launcher.
    box_size : float or None
        Box side [Mpc/h], > 0; None: the input file's, else ``N`` times the trained cell size.
    precision : {"fp32", "tf32", "bf16", "fp16"}
        Network arithmetic (see :mod:`emu_backend.inference.acceleration`).
    compile_mode : str or None
        ``torch.compile`` mode (:data:`~emu_backend.inference.acceleration.COMPILE_MODES`); None: eager.
    velocity : bool
        Also emulate the velocity field.
    overwrite : bool
        Replace existing outputs and discard partial files.
    allow_extrapolation : bool
        Let the emulator run outside its training domain (with a warning).
    check_memory : bool
        Estimate the peak memory of the tile pass (tile and batch size, width, velocity) before any
        compute and refuse one that does not fit in the available memory; False runs anyway.
    """

    input: str
    output: str
    omega_m: float
    z: float | tuple
    weights: str | None = None
    tile_size: int = 128
    batch_size: int = 1
    device: str = "cpu"
    box_size: float | None = None
    precision: str = "fp32"
    compile_mode: str | None = None
    velocity: bool = True
    overwrite: bool = False
    allow_extrapolation: bool = False
    check_memory: bool = True

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)
        for key in ("input", "output"):
            value = getattr(self, key)
            if not isinstance(value, (str, Path)) or not str(value):
                raise InputError(f"{key} must be a file path, got {value!r}")
            put(key, str(value))
        put("omega_m", check_real(self.omega_m, "omega_m", 0, 1, lo_open=True))
        if isinstance(self.z, (list, tuple)):
            if not self.z:
                raise InputError("z must list at least one redshift, got []")
            put("z", tuple(check_real(v, "z", -1.0 / 3.0, lo_open=True) for v in self.z))
        else:
            put("z", check_real(self.z, "z", -1.0 / 3.0, lo_open=True))
        if self.weights is not None:
            put("weights", str(self.weights))
        put("tile_size", check_tile_size(self.tile_size, "tile_size"))
        put("batch_size", check_int(self.batch_size, "batch_size", 1, what="a positive integer"))
        if not isinstance(self.device, str) or not self.device:
            raise InputError(f"device must be a non-empty string, got {self.device!r}")
        if self.box_size is not None:
            put("box_size", check_positive(self.box_size, "box_size"))
        check_choice(self.precision, "precision", PRECISIONS)
        if self.compile_mode is not None:
            check_choice(self.compile_mode, "compile_mode", COMPILE_MODES)
        for key in ("velocity", "overwrite", "allow_extrapolation", "check_memory"):
            put(key, check_bool(getattr(self, key), key))


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict` wrote.

    Attributes
    ----------
    files : tuple of Path
        The final files (one per redshift; distributed: the part index files).
    rank, world_size : int
        This process's rank and the number of ranks.
    untrained : bool
        The emulator ran untrained (random) weights: outputs are not physical.
    resumed : tuple of Path
        Outputs continued from ``.partial`` files of an interrupted run (single process only).
    """

    files: tuple
    rank: int
    world_size: int
    untrained: bool
    resumed: tuple = ()


def rank_device(device: str) -> str:
    """``"cuda"`` -> ``"cuda:LOCAL_RANK"`` under a distributed launcher (one GPU per rank); else ``device``."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def predict(config: PredictConfig, *, progress: bool = False) -> PredictResult:
    """Emulate the configured input file into field files (every rank calls this under a launcher).

    Parameters
    ----------
    config : PredictConfig
    progress : bool
        Show a tile progress bar (only drawn on a terminal).

    Returns
    -------
    PredictResult

    Raises
    ------
    InputError
        Existing outputs without ``overwrite``, a partial file of another run, bad input files or values.
    OutputLockedError
        Another run is writing an output (its lock file ``<output>.lock`` names it).
    DomainError
        ``omega_m``, ``z`` or the cell size outside the training domain without ``allow_extrapolation``.
    ResourceError
        The estimated peak memory of the tile pass exceeds the available memory (without
        ``check_memory=False``), or too little disk space.
    """
    rank, world = rank_and_world()
    finals = output_paths(config.output, config.z)
    check_not_input(config.input, finals)
    for final in finals:  # fail before the weights load (predict_to_file checks again and takes the locks)
        check_writable(final)
        if world == 1:
            check_unlocked(final)
    emu = load_emulator(config.weights, device=rank_device(config.device),
                        allow_extrapolation=config.allow_extrapolation, precision=config.precision,
                        compile_mode=config.compile_mode, check_memory=config.check_memory)
    # a bar in a terminal (progress); the tiles done as progress log lines otherwise (batch logs, notebooks)
    options = {"box_size": config.box_size, "velocity": config.velocity, "tile_size": config.tile_size,
               "batch_size": config.batch_size, "overwrite": config.overwrite, "progress": progress,
               "on_batch": TileLog("predict")}
    resumed: list[Path] = []
    if world > 1:
        files = predict_distributed(emu, config.input, config.output, config.omega_m, config.z, **options)
    else:
        if not config.overwrite:
            resumed = [p for p in finals if p.with_name(p.name + PARTIAL_SUFFIX).exists()]
        if resumed:
            logger.warning("resuming %d interrupted output(s): %s", len(resumed), ", ".join(map(str, resumed)))
        files = predict_to_file(emu, config.input, config.output, config.omega_m, config.z, **options)
    return PredictResult(tuple(files), rank, world, bool(emu.untrained), tuple(resumed))
