"""A training set (``emu-backend make-training-set``): a seeded Latin hypercube of cosmologies
(:func:`~emu_backend.training.design.latin_hypercube`), one PM N-body run each, written as training
samples by :func:`~emu_backend.training.make_set.make_training_set`; see ``docs/training_data.md``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..checks import check_bool, check_int
from ..errors import InputError
from ..training.design import latin_hypercube
from ..training.make_set import MakeSetResult, make_training_set

__all__ = ["TrainingSetConfig", "build_training_set", "DEFAULT_Z", "DEFAULT_GRID"]

logger = logging.getLogger(__name__)

#: Output redshifts of a training set unless told otherwise.
DEFAULT_Z = (0.0, 0.5, 1.0, 2.0, 3.0)
#: Particles per side unless told otherwise (box 1000 N / 512 Mpc/h, the emulator's resolution).
DEFAULT_GRID = 64


def _range(name, value) -> tuple[float, float]:
    try:
        lo, hi = value
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        raise InputError(f"range of {name} must be two numbers (LOW, HIGH), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"range of {name} must be finite, got {(lo, hi)!r}")
    return lo, hi


@dataclass(frozen=True)
class TrainingSetConfig:
    """Everything :func:`build_training_set` needs; validated on construction (the design and the
    redshifts against the emulator's training domain when the set is built).

    Parameters
    ----------
    out : str
        Output folder (``sample_XXXX.h5``, ``manifest.json``).
    n_sims : int
        Number of simulations, >= 1.
    grid : int
        Particles per side, >= 8; box ``1000 grid / 512`` Mpc/h.
    z : tuple of float
        Output redshifts in [0, 3].
    backend : str
        N-body backend: ``"jaxpm"`` (default) or ``"pmwd"`` (``"2lpt"`` for tests).
    backend_options : dict
        Constructor options of the backend (e.g. ``mesh_factor``, ``rtol``, ``atol``).
    seed : int
        Seed of the hypercube, >= 0; simulation ``i`` uses white-noise seed ``seed + i``.
    vary_all : bool
        Also vary Omega_b, h and n_s over the Quijote latin-hypercube ranges.
    ranges : dict
        ``name -> (low, high)`` of design parameters (omega_m, sigma8, omega_b, h, n_s).
    power : {"eh", "eisenstein_hu", "class"}
        Linear P(k).
    overwrite : bool
        Recompute every sample even if the folder holds a set with other settings.
    check_memory : bool
        Refuse a set whose simulations' estimated peak memory exceeds the available memory; False
        runs anyway.
    """

    out: str
    n_sims: int
    grid: int = DEFAULT_GRID
    z: tuple = DEFAULT_Z
    backend: str = "jaxpm"
    backend_options: dict = field(default_factory=dict)
    seed: int = 0
    vary_all: bool = False
    ranges: dict = field(default_factory=dict)
    power: str = "eh"
    overwrite: bool = False
    check_memory: bool = True

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)
        if not isinstance(self.out, (str, Path)) or not str(self.out):
            raise InputError(f"out must be a folder path, got {self.out!r}")
        put("out", str(self.out))
        put("n_sims", check_int(self.n_sims, "n_sims", 1))
        put("grid", check_int(self.grid, "grid", 8))
        put("z", tuple(self.z) if isinstance(self.z, (list, tuple)) else (self.z,))
        if not isinstance(self.backend, str) or not self.backend:
            raise InputError(f"backend must be a backend name, got {self.backend!r}")
        if not isinstance(self.backend_options, dict):
            raise InputError(f"backend_options must be a dict, got {type(self.backend_options).__name__}")
        put("seed", check_int(self.seed, "seed", 0))
        put("vary_all", check_bool(self.vary_all, "vary_all"))
        if not isinstance(self.ranges, dict):
            raise InputError(f"ranges must be a dict name -> (low, high), got {type(self.ranges).__name__}")
        put("ranges", {name: _range(name, v) for name, v in self.ranges.items()})
        put("overwrite", check_bool(self.overwrite, "overwrite"))
        put("check_memory", check_bool(self.check_memory, "check_memory"))


def build_training_set(config: TrainingSetConfig, *, progress: bool | None = None) -> MakeSetResult:
    """Draw the design and run (or resume) the simulations of a training set.

    Parameters
    ----------
    config : TrainingSetConfig
    progress : bool or None
        Progress bar (None: only when stderr is a terminal).

    Returns
    -------
    MakeSetResult
        The sample files, which were computed and which were already there, and the wall time.

    Raises
    ------
    InputError, DomainError
        A bad count, seed, range or redshift (outside the emulator's training domain), or a folder
        holding a set with other settings without ``overwrite``.
    """
    design = latin_hypercube(config.n_sims, config.seed, ranges=config.ranges or None, vary_all=config.vary_all)
    return make_training_set(config.out, design, grid=config.grid, z=list(config.z), backend=config.backend,
                             backend_options=dict(config.backend_options), seed=config.seed, power=config.power,
                             overwrite=config.overwrite, progress=progress, check_memory=config.check_memory)
