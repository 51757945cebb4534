"""The training-sample file: one N-body run's linear input and nonlinear targets at several z.

One HDF5 file per simulation (``.h5``/``.hdf5``), written atomically:

* ``input_displacement`` (3, n, n, n) float32 [Mpc/h]: the z = 0 linear (Zel'dovich) displacement of
  particle ``(i, j, k)``, channel ``c`` along array axis ``c + 1`` — the emulator's input before the
  division by 6 Mpc/h.
* ``z`` (T,) float64: output redshifts, strictly increasing.
* ``displacement`` (T, 3, n, n, n) float32 [Mpc/h]: nonlinear displacement x - q of the same
  particles at each z (not wrapped: continuous in time, may exceed the box by a few cells).
* ``velocity`` (T, 3, n, n, n) float32 [km/s]: peculiar velocity at each z.
* root attributes: ``format`` = ``"emu_backend/training_sample"``, ``format_version``, ``box_size``
  [Mpc/h], ``grid`` n, ``seed`` (-1 if unknown), ``cosmology`` (JSON of
  :meth:`Cosmology.to_dict`), ``package_version`` (of the writer), ``provenance`` (JSON: backend and
  its settings, the generating configuration, ...).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .._version import __version__
from ..checks import check_int, check_positive
from ..cosmology.params import Cosmology
from ..datatypes.meta import meta_from_json, meta_to_json
from ..errors import FileFormatError, InputError
from ..io.atomic import atomic_path
from .hdf5_filters import read_datasets

__all__ = ["TrainingSample", "write_training_sample", "read_training_sample", "FORMAT", "FORMAT_VERSION"]

logger = logging.getLogger(__name__)

FORMAT = "emu_backend/training_sample"
FORMAT_VERSION = 1
_SUFFIXES = (".h5", ".hdf5")


def _float32_field(name: str, value, shape: tuple) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != shape:
        raise InputError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{name} must be floating, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or inf")
    out = np.array(arr, dtype=np.float32)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class TrainingSample:
    """One simulation: z = 0 linear input and nonlinear displacement/velocity targets at T redshifts.

    Parameters
    ----------
    input_displacement : ndarray, shape (3, n, n, n)
        z = 0 linear ZA displacement [Mpc/h].
    z : ndarray, shape (T,)
        Output redshifts in [0, 20], strictly increasing.
    displacement : ndarray, shape (T, 3, n, n, n)
        Nonlinear displacement [Mpc/h] at each z.
    velocity : ndarray, shape (T, 3, n, n, n)
        Peculiar velocity [km/s] at each z.
    box_size : float
        Box side [Mpc/h], > 0.
    cosmology : Cosmology
    seed : int or None
        White-noise seed of the run, if known.
    provenance : dict
        JSON-serialisable description of how the run was made.

    Arrays are stored as read-only float32.

    Examples
    --------
    >>> import numpy as np
    >>> from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    >>> zero = np.zeros((3, 4, 4, 4), np.float32)
    >>> s = TrainingSample(zero, [0.0, 1.0], np.stack([zero, zero]), np.stack([zero, zero]), 7.8125,
    ...                    QUIJOTE_FIDUCIAL)
    >>> s.grid, s.n_times, s.cell_size
    (4, 2, 1.953125)
    """

    input_displacement: np.ndarray
    z: np.ndarray
    displacement: np.ndarray
    velocity: np.ndarray
    box_size: float
    cosmology: Cosmology
    seed: int | None = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        def put(key, value):
            object.__setattr__(self, key, value)

        inp = np.asarray(self.input_displacement)
        if inp.ndim != 4 or inp.shape[0] != 3 or len(set(inp.shape[1:])) != 1 or inp.shape[1] < 1:
            raise InputError(f"input_displacement must have shape (3, n, n, n), got {inp.shape}")
        n = inp.shape[1]
        put("input_displacement", _float32_field("input_displacement", inp, (3, n, n, n)))
        z = np.asarray(self.z, dtype=np.float64).reshape(-1)
        if z.size < 1 or not np.isfinite(z).all() or (z < 0).any() or (z > 20).any():
            raise InputError(f"z must be finite redshifts in [0, 20], got {z.tolist()}")
        if (np.diff(z) <= 0).any():
            raise InputError(f"z must be strictly increasing, got {z.tolist()}")
        z.setflags(write=False)
        put("z", z)
        shape = (z.size, 3, n, n, n)
        put("displacement", _float32_field("displacement", self.displacement, shape))
        put("velocity", _float32_field("velocity", self.velocity, shape))
        put("box_size", check_positive(self.box_size, "box_size", unit="Mpc/h"))
        if not isinstance(self.cosmology, Cosmology):
            raise InputError(f"cosmology must be a Cosmology, got {type(self.cosmology).__name__}")
        if self.seed is not None:
            put("seed", check_int(self.seed, "seed", 0, what="a non-negative integer or None"))
        meta_to_json(self.provenance)  # JSON-serialisable or InputError

    @property
    def grid(self) -> int:
        """Particles per side n."""
        return self.input_displacement.shape[1]

    @property
    def n_times(self) -> int:
        """Number of output redshifts T."""
        return self.z.size

    @property
    def cell_size(self) -> float:
        """Lagrangian grid spacing [Mpc/h]."""
        return self.box_size / self.grid


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in _SUFFIXES:
        raise InputError(f"training sample files are HDF5 ending in {_SUFFIXES}, got {str(path)!r}")


def write_training_sample(path: str | Path, sample: TrainingSample, *, overwrite: bool = False) -> Path:
    """Write ``sample`` atomically to an HDF5 file (see the module docstring for the layout).

    Parameters
    ----------
    path : str or Path
        Destination ending in ``.h5`` or ``.hdf5``.
    sample : TrainingSample
    overwrite : bool
        Replace an existing file (otherwise an existing file raises :class:`InputError`).

    Returns
    -------
    Path
    """


    path = Path(path)
    _check_suffix(path)
    if not isinstance(sample, TrainingSample):
        raise InputError(f"sample must be a TrainingSample, got {type(sample).__name__}")
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w+b") as fh, h5py.File(fh, "w") as f:  # a full disk: OSError, not a crash in h5py
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = np.int32(FORMAT_VERSION)
            f.attrs["box_size"] = np.float64(sample.box_size)
            f.attrs["grid"] = np.int64(sample.grid)
            f.attrs["seed"] = np.int64(-1 if sample.seed is None else sample.seed)
            f.attrs["cosmology"] = json.dumps(sample.cosmology.to_dict(), sort_keys=True)
            f.attrs["provenance"] = meta_to_json(sample.provenance)
            f.attrs["package_version"] = __version__
            f.create_dataset("input_displacement", data=sample.input_displacement).attrs["units"] = "Mpc/h"
            f.create_dataset("z", data=sample.z)
            f.create_dataset("displacement", data=sample.displacement).attrs["units"] = "Mpc/h"
            f.create_dataset("velocity", data=sample.velocity).attrs["units"] = "km/s"
    logger.info("wrote training sample %s (n = %d, z = %s)", path, sample.grid, sample.z.tolist())
    return path


def read_training_sample(path: str | Path) -> TrainingSample:
    """Read and validate a file written by :func:`write_training_sample`.

    Raises
    ------
    FileFormatError
        Missing, truncated or corrupt file, wrong format tag or version, missing dataset or attribute,
        inconsistent shapes or non-finite values.
    """

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"training sample {str(path)!r} does not exist")

    def check(attrs: dict) -> None:
        if attrs.get("format") != FORMAT:
            raise FileFormatError(f"{str(path)!r}: format is {attrs.get('format')!r}, expected {FORMAT!r}")
        if int(attrs.get("format_version", -1)) != FORMAT_VERSION:
            raise FileFormatError(f"{str(path)!r}: format_version {attrs.get('format_version')!r}, "
                                  f"this reader knows {FORMAT_VERSION}")

    attrs, arrays = read_datasets(path, "a training sample", check_attrs=check,
                                  required=("input_displacement", "z", "displacement", "velocity"))
    try:
        seed = int(attrs["seed"])
        return TrainingSample(
            arrays["input_displacement"], arrays["z"], arrays["displacement"], arrays["velocity"],
            float(attrs["box_size"]), Cosmology.from_dict(json.loads(attrs["cosmology"])),
            None if seed < 0 else seed, meta_from_json(attrs["provenance"]),
        )
    except KeyError as exc:
        raise FileFormatError(f"{str(path)!r}: attribute {exc} is missing") from exc
    except (InputError, ValueError, TypeError) as exc:
        raise FileFormatError(f"{str(path)!r}: invalid training sample: {exc}") from exc
