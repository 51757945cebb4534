"""A compact file format for displacement / velocity meshes on the Lagrangian grid.

Two containers with the same content, chosen by the file suffix:

* HDF5 (``.h5``, ``.hdf5``): datasets ``displacement`` (3, n, n, n) [Mpc/h] and optionally
  ``velocity`` (3, n, n, n) [km/s] (each with a ``units`` attribute); root attributes ``box_size``
  [Mpc/h], ``a``, ``z``, ``cosmology`` (JSON), ``meta`` (JSON), ``format``, ``format_version``,
  ``package_version`` (the emu_backend version that wrote the file).
* NumPy ``.npz``: arrays of the same names, the scalars and JSON strings as 0-d arrays (loaded
  without pickle).

Fields keep their floating dtype (float32 or float64). Files are written atomically, under the
output's lock (:mod:`emu_backend.io.output_lock`).
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
from ..datatypes.snapshot import A_MAX, Snapshot
from ..errors import FileFormatError, InputError
from .atomic import atomic_path
from .hdf5_filters import read_datasets
from .output_lock import output_lock
from .output_path import check_writable, os_errors_as_package_errors

__all__ = ["FieldData", "write_fields", "read_fields", "field_attributes", "FORMAT", "FORMAT_VERSION"]

logger = logging.getLogger(__name__)

#: The ``format`` and ``format_version`` root attributes of a field file (also written by the streaming runs).
FORMAT = "emu_backend/fields"
FORMAT_VERSION = 1
_HDF5_SUFFIXES = (".h5", ".hdf5")
_REQUIRED_ATTRS = ("box_size", "a", "z", "cosmology", "meta")


def _check_field(name: str, arr, shape=None) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 4 or arr.shape[0] != 3 or len(set(arr.shape[1:])) != 1:
        raise InputError(f"{name} must have shape (3, n, n, n), got {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise InputError(f"{name} must have the shape of the displacement {shape}, got {arr.shape}")
    if arr.dtype not in (np.float32, np.float64):
        raise InputError(f"{name} must be float32 or float64, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or inf")
    return arr


@dataclass(frozen=True, eq=False)
class FieldData:
    """Displacement (and optionally velocity) of an ``n^3`` Lagrangian particle grid.

    Parameters
    ----------
    displacement : ndarray, shape (3, n, n, n), float32 or float64
        Displacement [Mpc/h]; channel ``c`` along axis ``c``.
    velocity : ndarray, shape (3, n, n, n), or None
        Peculiar velocity [km/s].
    box_size : float
        Box side [Mpc/h].
    a : float
        Scale factor, in (0, 1.5].
    cosmology : Cosmology
    meta : dict
        JSON-serialisable provenance.
    """

    displacement: np.ndarray
    velocity: np.ndarray | None
    box_size: float
    a: float
    cosmology: Cosmology
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        dis = _check_field("displacement", self.displacement)
        object.__setattr__(self, "displacement", dis)
        if self.velocity is not None:
            object.__setattr__(self, "velocity", _check_field("velocity", self.velocity, dis.shape))
        object.__setattr__(self, "box_size", check_positive(self.box_size, "FieldData.box_size", unit="Mpc/h"))
        object.__setattr__(self, "a", check_real(self.a, "FieldData.a", 0.0, A_MAX, lo_open=True))
        if not isinstance(self.cosmology, Cosmology):
            raise InputError(f"FieldData.cosmology must be a Cosmology, got {type(self.cosmology).__name__}")
        if not isinstance(self.meta, dict):
            raise InputError(f"FieldData.meta must be a dict, got {type(self.meta).__name__}")
        meta_to_json(self.meta)
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def z(self) -> float:
        """Redshift ``1/a - 1``."""
        return 1.0 / self.a - 1.0

    @property
    def grid(self) -> int:
        """Particles per side ``n``."""
        return self.displacement.shape[1]

    def to_snapshot(self) -> Snapshot:
        """The particle snapshot of these fields (requires ``velocity``)."""
        if self.velocity is None:
            raise InputError("to_snapshot needs a velocity field; this FieldData has none")
        return Snapshot.from_displacement(
            self.displacement, self.velocity, self.a, self.box_size, self.cosmology, self.meta
        )


def _container(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _HDF5_SUFFIXES:
        return "hdf5"
    if suffix == ".npz":
        return "npz"
    raise InputError(f"field file {str(path)!r} must end in .h5, .hdf5 or .npz, got suffix {suffix!r}")


def write_fields(
    path: str | Path,
    displacement: np.ndarray,
    velocity: np.ndarray | None = None,
    *,
    box_size: float,
    a: float,
    cosmology: Cosmology,
    meta: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write displacement (and velocity) meshes atomically as HDF5 or ``.npz`` (by suffix).

    Parameters
    ----------
    path : str or Path
        Destination ending in ``.h5``, ``.hdf5`` or ``.npz``.
    displacement : ndarray, shape (3, n, n, n)
        Displacement [Mpc/h].
    velocity : ndarray, shape (3, n, n, n), optional
        Peculiar velocity [km/s].
    box_size : float
        Box side [Mpc/h].
    a : float
        Scale factor.
    cosmology : Cosmology
    meta : dict, optional
        Provenance (JSON-serialisable).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    InputError
        Bad fields or attributes, an existing file without ``overwrite``, a path that cannot be written.
    OutputLockedError
        Another process is writing ``path`` (its lock file ``<path>.lock``).
    ResourceError
        The disk filled up while writing.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    >>> p = os.path.join(tempfile.mkdtemp(), "ics.h5")
    >>> _ = write_fields(p, np.zeros((3, 4, 4, 4), np.float32), box_size=7.8125, a=1.0,
    ...                  cosmology=QUIJOTE_FIDUCIAL)
    >>> read_fields(p).grid
    4
    """

    path = Path(path)
    kind = _container(path)
    data = FieldData(displacement, velocity, box_size, a, cosmology, {} if meta is None else meta)
    attrs = {
        "box_size": np.float64(data.box_size),
        "a": np.float64(data.a),
        "z": np.float64(data.z),
        "cosmology": json.dumps(data.cosmology.to_dict(), sort_keys=True),
        "meta": meta_to_json(data.meta),
        "format": FORMAT,
        "format_version": np.int32(FORMAT_VERSION),
        "package_version": __version__,
    }
    with os_errors_as_package_errors(path), output_lock(check_writable(path)), \
            atomic_path(path, overwrite=overwrite) as tmp:
        if kind == "hdf5":
            # through a Python file: a failed write (full disk) raises OSError instead of crashing HDF5's close
            with open(tmp, "w+b") as fh, h5py.File(fh, "w") as f:
                for key, value in attrs.items():
                    f.attrs[key] = value
                f.create_dataset("displacement", data=data.displacement).attrs["units"] = "Mpc/h"
                if data.velocity is not None:
                    f.create_dataset("velocity", data=data.velocity).attrs["units"] = "km/s"
        else:
            arrays = {key: np.asarray(value) for key, value in attrs.items()}
            arrays["displacement"] = data.displacement
            if data.velocity is not None:
                arrays["velocity"] = data.velocity
            with open(tmp, "wb") as fh:  # a file object: np.savez would append '.npz' to a name
                np.savez(fh, **arrays)
    logger.info("wrote fields %s (n = %d, a = %g)", path, data.grid, data.a)
    return path


def field_attributes(path, attrs: dict) -> dict:
    """The ``box_size`` [Mpc/h], ``cosmology`` (:class:`Cosmology`) and ``meta`` (dict) among a field
    file's attributes, parsed; those absent from ``attrs`` are absent from the result.

    Used on the inputs of the streamed runs, which may be any HDF5 file with a ``displacement``.

    Raises
    ------
    FileFormatError
        Naming the file and the attribute: a ``box_size`` that is not a finite number > 0, a
        ``cosmology`` that is not the JSON of a :class:`Cosmology`, a ``meta`` that is not a JSON object.

    Examples
    --------
    >>> field_attributes("in.h5", {"box_size": 100.0, "meta": '{"seed": 1}'})
    {'box_size': 100.0, 'meta': {'seed': 1}}
    """
    out = {}
    if "box_size" in attrs:
        try:
            out["box_size"] = check_positive(attrs["box_size"], "box_size", unit="Mpc/h")
        except InputError as exc:
            raise FileFormatError(f"{str(path)!r}: attribute {exc}") from exc
    if "cosmology" in attrs:
        try:
            out["cosmology"] = Cosmology.from_dict(json.loads(attrs["cosmology"]))
        except (ValueError, TypeError) as exc:  # json's errors and InputError are ValueErrors
            raise FileFormatError(f"{str(path)!r}: attribute cosmology is not the JSON of a cosmology: {exc}") from exc
    if "meta" in attrs:
        try:
            out["meta"] = meta_from_json(attrs["meta"])
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise FileFormatError(f"{str(path)!r}: attribute meta is not a JSON object: {exc}") from exc
    return out


def _read_hdf5(path: Path) -> tuple[dict, np.ndarray, np.ndarray | None]:
    attrs, arrays = read_datasets(path, "an HDF5 field file", required=("displacement",), optional=("velocity",))
    return attrs, arrays["displacement"], arrays.get("velocity")


def _read_npz(path: Path) -> tuple[dict, np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except Exception as exc:  # zipfile/numpy raise many types for damaged archives (NotImplementedError, RuntimeError...)
        raise FileFormatError(
            f"{str(path)!r}: cannot be read as an .npz field file (truncated or corrupt?): {exc}"
        ) from exc
    if "displacement" not in arrays:
        raise FileFormatError(f"{str(path)!r}: array 'displacement' is missing")
    dis = arrays.pop("displacement")
    vel = arrays.pop("velocity", None)
    attrs = {key: (value.item() if value.ndim == 0 else value) for key, value in arrays.items()}
    return attrs, dis, vel


def read_fields(path: str | Path) -> FieldData:
    """Read and validate a field file written by :func:`write_fields`.

    Parameters
    ----------
    path : str or Path
        ``.h5``/``.hdf5`` or ``.npz`` file.

    Returns
    -------
    FieldData

    Raises
    ------
    FileFormatError
        Missing, truncated or corrupt file; missing attribute; wrong shapes; non-finite values;
        ``z`` inconsistent with ``a``.
    """
    path = Path(path)
    kind = _container(path)
    if not path.is_file():
        raise FileFormatError(f"field file {str(path)!r} not found")
    attrs, dis, vel = _read_hdf5(path) if kind == "hdf5" else _read_npz(path)
    missing = [key for key in _REQUIRED_ATTRS if key not in attrs]
    if missing:
        raise FileFormatError(f"{str(path)!r}: missing attribute(s) {missing}")
    try:
        a, z = float(attrs["a"]), float(attrs["z"])
        cosmology = Cosmology.from_dict(json.loads(attrs["cosmology"]))
        meta = meta_from_json(attrs["meta"])
    except (ValueError, TypeError) as exc:
        raise FileFormatError(f"{str(path)!r}: unreadable attribute: {exc}") from exc
    if not abs(z - (1.0 / a - 1.0)) <= 1e-9 * (1.0 + abs(z)):
        raise FileFormatError(f"{str(path)!r}: z = {z!r} is inconsistent with a = {a!r}")
    try:
        return FieldData(dis, vel, float(attrs["box_size"]), a, cosmology, meta)
    except (InputError, TypeError) as exc:
        raise FileFormatError(f"{str(path)!r}: invalid content: {exc}") from exc
