"""Observed density meshes: the input of field-level inference (``emu-backend reconstruct``).

An HDF5 file (``.h5``/``.hdf5``) with

* dataset ``density`` (n, n, n): overdensity ``rho / rho_mean - 1`` on a regular periodic mesh (with its
  observation noise, so values below -1 are allowed);
* optional datasets ``noise_sigma`` (n, n, n) (or a scalar root attribute of the same name): the standard
  deviation of the Gaussian observation noise per voxel; ``mask`` (n, n, n) of 0/1: observed voxels;
  ``initial_noise`` (N, N, N): the true unit white noise of the initial conditions, where it is known
  (synthetic data), for the reconstruction's cross-correlation report;
* root attributes ``box_size`` [Mpc/h], ``z``, ``cosmology`` (JSON of the cosmology that made it, or of
  the fiducial one), ``meta`` (JSON), ``format``, ``format_version``, ``package_version``.

Written atomically under the output's lock; read with every array checked (shape, finiteness, range).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .._version import __version__
from ..checks import check_positive, check_real
from ..cosmology.params import Cosmology
from ..datatypes.meta import meta_from_json, meta_to_json
from ..errors import FileFormatError, InputError
from .atomic import atomic_path
from .hdf5_filters import read_datasets
from .output_lock import output_lock
from .output_path import check_writable, os_errors_as_package_errors

__all__ = ["DensityMesh", "read_density_mesh", "write_density_mesh", "FORMAT", "FORMAT_VERSION"]

logger = logging.getLogger(__name__)

FORMAT = "emu_backend/density_mesh"
FORMAT_VERSION = 1
_SUFFIXES = (".h5", ".hdf5")


@dataclass(frozen=True)
class DensityMesh:
    """An observed overdensity mesh and what is known about its noise and origin.

    Attributes
    ----------
    density : ndarray, shape (n, n, n)
        Overdensity.
    box_size : float
        Box side [Mpc/h].
    z : float
        Redshift.
    cosmology : Cosmology
    noise_sigma : float or ndarray (n, n, n) or None
        Observation noise per voxel, where recorded.
    mask : bool ndarray (n, n, n) or None
        Observed voxels (None: all).
    initial_noise : ndarray (N, N, N) or None
        The true white noise of the initial conditions (synthetic data only).
    meta : dict
    """

    density: np.ndarray
    box_size: float
    z: float
    cosmology: Cosmology
    noise_sigma: object = None
    mask: np.ndarray | None = None
    initial_noise: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        d = np.asarray(self.density)
        if d.ndim != 3 or len(set(d.shape)) != 1 or d.shape[0] < 2:
            raise InputError(f"density must be a cubic (n, n, n) mesh with n >= 2, got shape {d.shape}")
        if not np.all(np.isfinite(d)):
            raise InputError("density contains non-finite values")
        object.__setattr__(self, "density", d)
        object.__setattr__(self, "box_size", check_positive(self.box_size, "box_size", unit="Mpc/h"))
        object.__setattr__(self, "z", check_real(self.z, "z", -1.0, lo_open=True))
        if not isinstance(self.cosmology, Cosmology):
            raise InputError(f"cosmology must be a Cosmology, got {type(self.cosmology).__name__}")
        if self.noise_sigma is not None:
            s = np.asarray(self.noise_sigma, dtype=np.float64)
            if s.shape not in ((), d.shape) or not np.all(np.isfinite(s)) or not np.all(s > 0):
                raise InputError(f"noise_sigma must be a number > 0 or a positive finite mesh of shape {d.shape}, "
                                 f"got shape {s.shape}")
            object.__setattr__(self, "noise_sigma", float(s) if s.ndim == 0 else s)
        if self.mask is not None:
            m = np.asarray(self.mask)
            if m.shape != d.shape or not np.isin(m, (0, 1)).all():
                raise InputError(f"mask must be a 0/1 mesh of shape {d.shape}, got shape {m.shape}")
            if not m.any():
                raise InputError("mask selects no voxel")
            object.__setattr__(self, "mask", m.astype(bool))
        if self.initial_noise is not None:
            w = np.asarray(self.initial_noise)
            if w.ndim != 3 or len(set(w.shape)) != 1 or not np.all(np.isfinite(w)):
                raise InputError(f"initial_noise must be a finite cubic (N, N, N) array, got shape {w.shape}")
        if not isinstance(self.meta, dict):
            raise InputError(f"meta must be a dict, got {type(self.meta).__name__}")

    @property
    def n_mesh(self) -> int:
        """Mesh cells per side."""
        return int(self.density.shape[0])


def write_density_mesh(path, mesh: DensityMesh, *, overwrite: bool = False) -> Path:
    """Write ``mesh`` atomically to an HDF5 file.

    Raises
    ------
    InputError
        A suffix other than ``.h5``/``.hdf5``, an existing file without ``overwrite``, an unwritable path.
    OutputLockedError
        Another process is writing ``path``.
    """
    path = Path(path)
    if path.suffix.lower() not in _SUFFIXES:
        raise InputError(f"density mesh files are HDF5: the name must end in {' or '.join(_SUFFIXES)}, got {str(path)!r}")
    with os_errors_as_package_errors(path), output_lock(check_writable(path)), \
            atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w+b") as fh, h5py.File(fh, "w") as f:
            f.attrs["box_size"] = np.float64(mesh.box_size)
            f.attrs["z"] = np.float64(mesh.z)
            f.attrs["cosmology"] = json.dumps(mesh.cosmology.to_dict(), sort_keys=True)
            f.attrs["meta"] = meta_to_json(mesh.meta)
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = np.int32(FORMAT_VERSION)
            f.attrs["package_version"] = __version__
            f.create_dataset("density", data=mesh.density)
            if isinstance(mesh.noise_sigma, float):
                f.attrs["noise_sigma"] = np.float64(mesh.noise_sigma)
            elif mesh.noise_sigma is not None:
                f.create_dataset("noise_sigma", data=mesh.noise_sigma)
            if mesh.mask is not None:
                f.create_dataset("mask", data=mesh.mask.astype(np.uint8))
            if mesh.initial_noise is not None:
                f.create_dataset("initial_noise", data=mesh.initial_noise)
    logger.info("wrote density mesh %s (n = %d, z = %g)", path, mesh.n_mesh, mesh.z)
    return path


def read_density_mesh(path) -> DensityMesh:
    """Read and validate a density mesh file.

    Raises
    ------
    FileFormatError
        Not an HDF5 density mesh (naming the missing or bad dataset/attribute), truncated or corrupt.
    """
    path = Path(path)

    def check(attrs: dict) -> None:
        if attrs.get("format") != FORMAT:
            raise FileFormatError(f"{str(path)!r} is not a density mesh file (format attribute "
                                  f"{attrs.get('format')!r}, expected {FORMAT!r})")
        version = int(attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise FileFormatError(f"{str(path)!r}: density mesh format_version {version}, this version reads "
                                  f"{FORMAT_VERSION}")
        missing = [k for k in ("box_size", "z", "cosmology") if k not in attrs]
        if missing:
            raise FileFormatError(f"{str(path)!r}: attributes {missing} are missing")

    attrs, arrays = read_datasets(path, "an HDF5 density mesh", required=("density",),
                                  optional=("noise_sigma", "mask", "initial_noise"), check_attrs=check)
    try:
        cosmology = Cosmology.from_dict(json.loads(attrs["cosmology"]))
        meta = meta_from_json(attrs["meta"]) if "meta" in attrs else {}
        sigma = arrays.get("noise_sigma", attrs.get("noise_sigma"))
        return DensityMesh(arrays["density"], float(attrs["box_size"]), float(attrs["z"]), cosmology,
                           noise_sigma=sigma, mask=arrays.get("mask"), initial_noise=arrays.get("initial_noise"),
                           meta=meta)
    except (ValueError, TypeError) as exc:  # InputError is a ValueError
        raise FileFormatError(f"{str(path)!r}: {exc}") from exc
