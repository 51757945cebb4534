"""Training crops drawn deterministically from training-sample files.

A *draw* picks a simulation file, one of its redshifts, a crop origin (uniform over the box, the
box is periodic) and one of the 48 cubic symmetries, all from ``numpy.random.default_rng([seed,
step, i])`` with ``i`` the index within the global batch of optimiser step ``step``. The data of a
run therefore depend only on (seed, step, i): not on the number of ranks (rank ``r`` of ``W`` takes
``i = r, r + W, ...``), not on where a run was resumed. Validation crops use the stream
``[seed, VALIDATION_STREAM, i]``, un-augmented.

Each crop is in network units (SPEC 3.2): the input is the z = 0 linear displacement / 6 Mpc/h read
periodically over ``crop + 96`` cells (48 of padding per side, as at inference), the targets are the
displacement / 6 Mpc/h and velocity / ``velocity_norm(z, Omega_m)`` over the central ``crop`` cells.

Files are read lazily through h5py (only the crop's blocks), except small ones (all arrays below
:data:`IN_MEMORY_BYTES`) which are loaded once, on their first read: opening the files of a run costs
no memory, so the trainer can check its memory estimate (:attr:`CropSampler.resident_bytes`) first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..checks import check_int, check_real
from ..cosmology.growth import growth_factor
from ..cosmology.params import Cosmology
from ..errors import FileFormatError, InputError
from ..inference.tiling import PAD, periodic_read
from ..io.training_sample import FORMAT, FORMAT_VERSION
from ..nn.normalisation import DIS_STD_MPC_H, velocity_norm
from .augment import N_TRANSFORMS, TRANSFORMS

__all__ = ["SampleFile", "TrainingCrop", "CropSampler", "find_sample_files", "split_files",
           "data_fingerprint", "VALIDATION_STREAM", "IN_MEMORY_BYTES"]

logger = logging.getLogger(__name__)

#: Second seed word of the validation draws (never reached by a training step).
VALIDATION_STREAM = 2**62
#: Files whose arrays total less than this are read into memory once.
IN_MEMORY_BYTES = 256 * 2**20
_SUFFIXES = (".h5", ".hdf5")


class _TimeSlice:
    """A (3, n, n, n) view of ``dataset[t]`` that reads only the blocks asked for."""

    def __init__(self, dataset, t: int):
        self.dataset, self.t = dataset, t
        self.shape = dataset.shape[1:]
        self.dtype = dataset.dtype

    def __getitem__(self, key):
        return self.dataset[(self.t, *key)]


class SampleFile:
    """Lazy reader of one training-sample file (layout: :mod:`emu_backend.io.training_sample`).

    Parameters
    ----------
    path : str or Path

    Attributes
    ----------
    path : Path
    grid : int
    box_size : float
        [Mpc/h].
    z : ndarray (T,)
    cosmology : Cosmology
    seed : int or None
    resident_bytes : int
        Bytes of the arrays held in memory once the file is first read (0: read block by block).
    """

    def __init__(self, path):

        self.path = Path(path)
        if not self.path.is_file():
            raise FileFormatError(f"training sample {str(self.path)!r} does not exist")
        try:
            self._file = h5py.File(self.path, "r")
            f = self._file
            if f.attrs.get("format") != FORMAT or int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
                raise FileFormatError(f"{str(self.path)!r} is not a training sample (format "
                                      f"{f.attrs.get('format')!r} v{f.attrs.get('format_version')!r}, expected "
                                      f"{FORMAT!r} v{FORMAT_VERSION})")
            self.grid = int(f.attrs["grid"])
            self.box_size = float(f.attrs["box_size"])
            seed = int(f.attrs["seed"])
            self.seed = None if seed < 0 else seed
            self.cosmology = Cosmology.from_dict(json.loads(f.attrs["cosmology"]))
            self.z = np.asarray(f["z"][...], dtype=np.float64)
            self._inp, self._dis, self._vel = f["input_displacement"], f["displacement"], f["velocity"]
        except FileFormatError:
            raise
        except (OSError, KeyError, ValueError, TypeError, InputError) as exc:
            raise FileFormatError(f"{str(self.path)!r} cannot be read as a training sample "
                                  f"(truncated or corrupt?): {exc}") from exc
        n, t = self.grid, self.z.size
        expect = {"input_displacement": (3, n, n, n), "displacement": (t, 3, n, n, n), "velocity": (t, 3, n, n, n)}
        for name, ds in zip(expect, (self._inp, self._dis, self._vel)):
            if ds.shape != expect[name]:
                raise FileFormatError(f"{str(self.path)!r}: {name} has shape {ds.shape}, expected {expect[name]}")
        if t < 1 or not np.isfinite(self.z).all() or self.box_size <= 0 or not math.isfinite(self.box_size):
            raise FileFormatError(f"{str(self.path)!r}: bad z {self.z.tolist()} or box_size {self.box_size!r}")
        nbytes = sum(ds.size * ds.dtype.itemsize for ds in (self._inp, self._dis, self._vel))
        self.resident_bytes = int(nbytes) if nbytes < IN_MEMORY_BYTES else 0  # loaded by the first read

    def _load(self) -> None:
        """Read a small file's arrays into memory (once)."""
        if not self.resident_bytes or isinstance(self._inp, np.ndarray):
            return
        try:
            self._inp, self._dis, self._vel = self._inp[...], self._dis[...], self._vel[...]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FileFormatError(f"{str(self.path)!r} cannot be read as a training sample "
                                  f"(truncated or corrupt?): {exc}") from exc

    @property
    def omega_m(self) -> float:
        return float(self.cosmology.omega_m)

    @property
    def cell_size(self) -> float:
        """Lagrangian grid spacing [Mpc/h]."""
        return self.box_size / self.grid

    def read(self, t: int, origin, crop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Input (3, crop+96, ...) [Mpc/h] and displacement/velocity (3, crop, ...) at redshift ``z[t]``."""
        self._load()
        origin = tuple(int(o) for o in origin)
        size = (crop,) * 3
        try:
            inp = periodic_read(self._inp, tuple(o - PAD for o in origin), (crop + 2 * PAD,) * 3)
            dis = periodic_read(_TimeSlice(self._dis, t) if not isinstance(self._dis, np.ndarray) else self._dis[t],
                                origin, size)
            vel = periodic_read(_TimeSlice(self._vel, t) if not isinstance(self._vel, np.ndarray) else self._vel[t],
                                origin, size)
        except (OSError, ValueError, KeyError) as exc:
            raise FileFormatError(f"{str(self.path)!r}: cannot read a crop (truncated or corrupt?): {exc}") from exc
        for name, arr in (("input_displacement", inp), ("displacement", dis), ("velocity", vel)):
            if not np.isfinite(arr).all():
                raise FileFormatError(f"{str(self.path)!r}: {name} contains NaN or inf near origin {origin}")
        return inp, dis, vel

    def describe(self) -> dict:
        """Manifest entry (recorded in the exported model): name, size, seed, Omega_m, z, grid, box, cosmology."""
        return {"name": self.path.name, "bytes": self.path.stat().st_size, "seed": self.seed,
                "omega_m": self.omega_m, "z": self.z.tolist(), "grid": self.grid, "box_size": self.box_size,
                "cosmology": self.cosmology.to_dict()}

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True, eq=False)
class TrainingCrop:
    """One training example in network units.

    Attributes
    ----------
    x : ndarray (3, c+96, c+96, c+96) float32
        z = 0 linear displacement / 6 Mpc/h.
    dis : ndarray (3, c, c, c) float32
        Target displacement / 6 Mpc/h.
    vel : ndarray (3, c, c, c) float32
        Target velocity / ``velocity_norm(z, omega_m)``.
    omega_m, z, growth : float
        Omega_m, redshift and D(z, Omega_m).
    cell_size : float
        [Mpc/h].
    file_index, transform, origin
        Where the crop came from (for logs and tests).
    """

    x: np.ndarray
    dis: np.ndarray
    vel: np.ndarray
    omega_m: float
    z: float
    growth: float
    cell_size: float
    file_index: int
    transform: int
    origin: tuple


class CropSampler:
    """Deterministic crops from a list of sample files.

    Parameters
    ----------
    files : sequence of str or Path
        Training-sample files (one simulation each).
    crop : int
        Output crop size, >= 8 and at most the smallest grid of the files (a larger crop repeats the
        periodic box); the input is ``crop + 96``.
    seed : int
        Seed of the draws.
    augment : bool
        Apply a random cubic symmetry to each draw.

    Examples
    --------
    >>> sampler = CropSampler(files, crop=8, seed=0)            # doctest: +SKIP
    >>> batch = [sampler.draw(step=10, index=i) for i in range(4)]  # doctest: +SKIP
    """

    def __init__(self, files, crop: int, seed: int, augment: bool = True):
        files = [Path(f) for f in files]
        if not files:
            raise InputError("no training-sample files given")
        crop = check_int(crop, "crop", 8, what="an integer >= 8 cells")
        self.files = [SampleFile(f) for f in files]
        cells = {round(f.cell_size, 9) for f in self.files}
        if len(cells) != 1:
            raise InputError(f"all training files must share one cell size, got {sorted(cells)} Mpc/h")
        smallest = min(self.files, key=lambda f: f.grid)
        if crop > smallest.grid:
            raise InputError(f"crop = {crop} cells is larger than the {smallest.grid}^3 grid of "
                             f"{str(smallest.path)!r}: a crop must fit in one box (it would repeat the periodic "
                             f"box); use crop <= {smallest.grid}")
        self.crop, self.seed, self.augment = crop, int(seed), bool(augment)

    @property
    def cell_size(self) -> float:
        return self.files[0].cell_size

    @property
    def n_crops(self) -> int:
        """Distinct un-augmented crops: one per file, redshift and origin cell."""
        return sum(f.z.size * f.grid**3 for f in self.files)

    @property
    def resident_bytes(self) -> int:
        """Bytes of the small files' arrays, held in memory once read."""
        return sum(f.resident_bytes for f in self.files)

    def _crop(self, rng: np.random.Generator, augment: bool) -> TrainingCrop:
        fi = int(rng.integers(len(self.files)))
        f = self.files[fi]
        t = int(rng.integers(f.z.size))
        origin = tuple(int(o) for o in rng.integers(0, f.grid, size=3))
        g = int(rng.integers(N_TRANSFORMS)) if augment else 0
        inp, dis, vel = f.read(t, origin, self.crop)
        z, om = float(f.z[t]), f.omega_m
        tr = TRANSFORMS[g]
        vnorm = float(velocity_norm(z, om))
        return TrainingCrop(
            x=np.ascontiguousarray(tr.apply_vector(inp) / np.float32(DIS_STD_MPC_H), dtype=np.float32),
            dis=np.ascontiguousarray(tr.apply_vector(dis) / np.float32(DIS_STD_MPC_H), dtype=np.float32),
            vel=np.ascontiguousarray(tr.apply_vector(vel) / np.float32(vnorm), dtype=np.float32),
            omega_m=om, z=z, growth=float(growth_factor(z, om)), cell_size=f.cell_size,
            file_index=fi, transform=g, origin=origin,
        )

    def draw(self, step: int, index: int) -> TrainingCrop:
        """Crop ``index`` of the global batch of optimiser step ``step`` (augmented if enabled)."""
        return self._crop(np.random.default_rng([self.seed, int(step), int(index)]), self.augment)

    def validation_draw(self, index: int) -> TrainingCrop:
        """Validation crop ``index`` (fixed for a seed, never augmented)."""
        return self._crop(np.random.default_rng([self.seed, VALIDATION_STREAM, int(index)]), False)

    def domain(self) -> dict:
        """Omega_m and z ranges of the files and their cell size."""
        oms = [f.omega_m for f in self.files]
        zs = np.concatenate([f.z for f in self.files])
        return {"omega_m": [min(oms), max(oms)], "z": [float(zs.min()), float(zs.max())],
                "cell_size_mpc_h": self.cell_size}

    def close(self) -> None:
        for f in self.files:
            f.close()


def find_sample_files(paths) -> list[Path]:
    """Expand folders (their ``*.h5``/``*.hdf5`` files, sorted) and files into a sorted, unique list."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in _SUFFIXES and q.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"training data {str(p)!r} is neither a file nor a folder")
    unique = sorted({q.resolve() for q in out})
    if not unique:
        raise InputError(f"no training-sample files (*.h5, *.hdf5) found in {[str(p) for p in paths]}")
    return unique


def split_files(files, val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Hold out whole simulations for validation.

    Parameters
    ----------
    files : sequence of path
    val_fraction : float
        In [0, 1): ``round(val_fraction * len(files))`` files (at least 1 if the fraction is > 0 and
        there are >= 2 files) are held out, chosen by a seeded permutation of the sorted list.
    seed : int

    Returns
    -------
    (train, val) : two sorted lists of Path
    """
    files = sorted(Path(f) for f in files)
    val_fraction = check_real(val_fraction, "val_fraction", 0.0, 1.0, hi_open=True, what="in [0, 1)")
    n_val = int(round(val_fraction * len(files)))
    if val_fraction > 0 and len(files) >= 2:
        n_val = min(max(n_val, 1), len(files) - 1)
    else:
        n_val = 0
    order = np.random.default_rng([int(seed), 7]).permutation(len(files))
    val = sorted(files[i] for i in order[:n_val])
    train = sorted(files[i] for i in order[n_val:])
    return train, val


def data_fingerprint(train_files, val_files) -> str:
    """sha256 of the file lists (name and size of each, train and validation apart)."""
    doc = {key: [(Path(f).name, Path(f).stat().st_size) for f in files]
           for key, files in (("train", train_files), ("val", val_files))}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
