"""A training run on sample files (``emu-backend train``): find the files, hold out validation
simulations, and call :func:`emu_backend.training.trainer.train`.

Under ``torchrun`` or SLURM every rank calls :func:`train_on_files` with the same config
(data-parallel, see :mod:`emu_backend.training.distributed`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..checks import check_bool, check_real
from ..errors import InputError
from ..training.config import TrainConfig
from ..training.dataset import find_sample_files, split_files
from ..training.trainer import TrainResult, train

__all__ = ["TrainJobConfig", "TrainJobResult", "train_on_files"]

logger = logging.getLogger(__name__)


def _paths(value, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, (str, Path)) else list(value)
    if not items or not all(isinstance(p, (str, Path)) and str(p) for p in items):
        raise InputError(f"{key} must be one or more file or folder paths, got {value!r}")
    return tuple(str(p) for p in items)


@dataclass(frozen=True)
class TrainJobConfig:
    """Everything :func:`train_on_files` needs; validated on construction.

    Parameters
    ----------
    data : tuple of str
        Training-sample files (``*.h5``) or folders holding them.
    out : str
        Run folder: ``checkpoints/``, ``log.csv``, ``model.emu``.
    train : TrainConfig
        The network and optimiser settings.
    val_files : tuple of str or None
        Explicit validation files or folders (then every ``data`` file trains); None: hold out
        ``val_fraction`` of the ``data`` simulations.
    val_fraction : float
        Fraction of the simulations held out for validation, in [0, 1).
    resume : bool
        Continue from the latest checkpoint in ``out``.
    overwrite : bool
        With ``resume=False``: start over in a used ``out`` folder.
    check_memory : bool
        Refuse a run whose estimated peak memory exceeds the available memory; False runs anyway.
    """

    data: tuple
    out: str
    train: TrainConfig = field(default_factory=TrainConfig)
    val_files: tuple | None = None
    val_fraction: float = 0.1
    resume: bool = True
    overwrite: bool = False
    check_memory: bool = True

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)
        put("data", _paths(self.data, "data"))
        if not isinstance(self.out, (str, Path)) or not str(self.out):
            raise InputError(f"out must be a folder path, got {self.out!r}")
        put("out", str(self.out))
        if not isinstance(self.train, TrainConfig):
            raise InputError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        if self.val_files is not None:
            put("val_files", _paths(self.val_files, "val_files"))
        put("val_fraction", check_real(self.val_fraction, "val_fraction", 0.0, 1.0, hi_open=True))
        put("resume", check_bool(self.resume, "resume"))
        put("overwrite", check_bool(self.overwrite, "overwrite"))
        put("check_memory", check_bool(self.check_memory, "check_memory"))


@dataclass(frozen=True)
class TrainJobResult:
    """What :func:`train_on_files` did: the trainer's result and the number of simulations of each kind."""

    result: TrainResult
    n_train: int
    n_val: int


def train_on_files(config: TrainJobConfig, *, progress: bool | None = None) -> TrainJobResult:
    """Select the training and validation files and train.

    Parameters
    ----------
    config : TrainJobConfig
    progress : bool or None
        tqdm bar on rank 0 (None: only when stderr is a terminal).

    Returns
    -------
    TrainJobResult

    Raises
    ------
    InputError
        A data path that does not exist, validation files also given as training data, or a run
        folder that holds another run.
    """
    files = find_sample_files(config.data)
    if config.val_files:
        val = find_sample_files(config.val_files)
        overlap = sorted(set(files) & set(val))
        if overlap:
            raise InputError(f"validation files also given as training data: {[str(p) for p in overlap]}")
        train_files = files
    else:
        train_files, val = split_files(files, config.val_fraction, config.train.seed)
    if not val:
        logger.warning("no validation files: the final (not the best) weights are exported")
    result = train(config.train, train_files, val, config.out, resume=config.resume, overwrite=config.overwrite,
                   progress=progress, check_memory=config.check_memory)
    return TrainJobResult(result, len(train_files), len(val))
