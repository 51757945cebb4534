"""A particle snapshot of a periodic box: the simulator interface's output object.

Units: positions [Mpc/h] in ``[0, box_size)``, velocities [km/s] peculiar, scale factor ``a``.
Particle ``(i, j, k)`` of the ``n^3`` Lagrangian grid has id ``i n^2 + j n + k`` (C order) and
Lagrangian position ``(i, j, k) * box_size / n``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..checks import check_int, check_positive, check_real
from ..cosmology.params import Cosmology
from ..errors import InputError
from ..mesh.paint import paint
from .meta import meta_to_json, readonly

__all__ = ["Snapshot", "wrap_positions", "lagrangian_grid", "check_matching_snapshots", "A_MAX"]

logger = logging.getLogger(__name__)

#: Largest scale factor a snapshot (or a field file, or an output time) may carry: ``a`` is in ``(0, A_MAX]``.
A_MAX = 1.5


def wrap_positions(positions: np.ndarray, box_size: float) -> np.ndarray:
    """Wrap float32 positions into ``[0, box_size)`` [Mpc/h].

    Values that round up to exactly ``box_size`` in float32 (e.g. ``-1e-9 mod L``) are mapped to 0,
    the same point of the periodic box.
    """
    pos = np.asarray(positions)
    box32 = np.float32(box_size)
    if pos.size and pos.min() >= 0 and pos.max() < box32:
        return pos
    wrapped = np.mod(pos.astype(np.float64), box_size).astype(np.float32)
    wrapped[wrapped >= box32] = 0.0
    return wrapped


def _as_array(value, name: str) -> np.ndarray:
    """``np.asarray`` that reports ragged nested sequences and non-numeric objects as InputError."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name} must be a rectangular numeric array: {exc}") from exc
    if arr.dtype == object:
        raise InputError(f"{name} must be a numeric array, got an object array")
    return arr


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Positions, velocities and ids of ``grid^3`` particles in a periodic box at scale factor ``a``.

    Parameters
    ----------
    positions : ndarray, shape (N, 3)
        Comoving positions [Mpc/h]; stored as float32 wrapped into ``[0, box_size)``.
    velocities : ndarray, shape (N, 3)
        Peculiar velocities [km/s]; stored as float32.
    ids : ndarray, shape (N,)
        Lagrangian C-order index ``i n^2 + j n + k``; stored as int64, a permutation of ``0..N-1``.
    a : float
        Scale factor, in (0, 1.5].
    box_size : float
        Box side [Mpc/h], > 0.
    grid : int
        Particles per side ``n``; ``N = n^3``.
    cosmology : Cosmology
        The cosmology of the run.
    meta : dict
        JSON-serialisable provenance (package version, config, seed, checkpoint checksum,
        backend name, ...).

    The arrays are stored as read-only views; floating inputs are cast to float32, integer ids
    to int64.

    Examples
    --------
    >>> import numpy as np
    >>> from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    >>> dis = np.zeros((3, 2, 2, 2), np.float32)
    >>> snap = Snapshot.from_displacement(dis, dis, a=1.0, box_size=10.0, cosmology=QUIJOTE_FIDUCIAL)
    >>> snap.positions[-1].tolist(), snap.z
    ([5.0, 5.0, 5.0], 0.0)
    """

    positions: np.ndarray
    velocities: np.ndarray
    ids: np.ndarray
    a: float
    box_size: float
    grid: int
    cosmology: Cosmology
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        def put(key, value):
            object.__setattr__(self, key, value)

        put("a", check_real(self.a, "Snapshot.a", 0.0, A_MAX, lo_open=True))
        put("box_size", check_positive(self.box_size, "Snapshot.box_size", unit="Mpc/h"))
        put("grid", check_int(self.grid, "Snapshot.grid", 1))
        if not isinstance(self.cosmology, Cosmology):
            raise InputError(f"Snapshot.cosmology must be a Cosmology, got {type(self.cosmology).__name__}")
        if not isinstance(self.meta, dict):
            raise InputError(f"Snapshot.meta must be a dict, got {type(self.meta).__name__}")
        meta_to_json(self.meta)  # refuse non-serialisable provenance now, not when writing
        put("meta", dict(self.meta))

        n_part = self.grid**3
        for key in ("positions", "velocities"):
            arr = _as_array(getattr(self, key), f"Snapshot.{key}")
            if arr.shape != (n_part, 3):
                raise InputError(f"Snapshot.{key} must have shape (N, 3) = ({n_part}, 3), got {arr.shape}")
            if arr.dtype.kind != "f":
                raise InputError(f"Snapshot.{key} must be floating point, got dtype {arr.dtype}")
            arr = arr.astype(np.float32, copy=False)
            if not np.isfinite(arr).all():
                raise InputError(f"Snapshot.{key} contains NaN or inf")
            if key == "positions":
                arr = wrap_positions(arr, self.box_size)
            put(key, readonly(arr))

        ids = _as_array(self.ids, "Snapshot.ids")
        if ids.shape != (n_part,):
            raise InputError(f"Snapshot.ids must have shape (N,) = ({n_part},), got {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise InputError(f"Snapshot.ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64, copy=False)
        if n_part and (ids.min() < 0 or ids.max() >= n_part or np.bincount(ids, minlength=n_part).max() != 1):
            raise InputError(f"Snapshot.ids must be a permutation of 0..{n_part - 1} (each Lagrangian index once)")
        put("ids", readonly(ids))

    # -- derived values --------------------------------------------------------------------
    @property
    def z(self) -> float:
        """Redshift ``1/a - 1``."""
        return 1.0 / self.a - 1.0

    @property
    def n_particles(self) -> int:
        """Number of particles ``grid^3``."""
        return self.grid**3

    @property
    def particle_mass(self) -> float:
        """Mass of one particle [Msun/h], ``rho_crit Omega_m L^3 / N``."""
        return self.cosmology.particle_mass(self.box_size, self.grid)

    # -- constructors ----------------------------------------------------------------------
    @classmethod
    def from_displacement(
        cls,
        dis: np.ndarray,
        vel: np.ndarray,
        a: float,
        box_size: float,
        cosmology: Cosmology,
        meta: dict | None = None,
    ) -> "Snapshot":
        """Build a snapshot from displacement and velocity meshes on the Lagrangian grid.

        Parameters
        ----------
        dis : ndarray, shape (3, n, n, n)
            Displacement [Mpc/h]; channel ``c`` along axis ``c``.
        vel : ndarray, shape (3, n, n, n)
            Peculiar velocity [km/s].
        a : float
            Scale factor.
        box_size : float
            Box side [Mpc/h]; the Lagrangian spacing is ``box_size / n``.
        cosmology : Cosmology
        meta : dict, optional
            Provenance.

        Returns
        -------
        Snapshot
            Particles in id order; positions ``q + dis`` wrapped into the box.
        """
        dis = np.asarray(dis)
        vel = np.asarray(vel)
        if dis.ndim != 4 or dis.shape[0] != 3 or len(set(dis.shape[1:])) != 1:
            raise InputError(f"dis must have shape (3, n, n, n), got {dis.shape}")
        if vel.shape != dis.shape:
            raise InputError(f"vel must have the shape of dis {dis.shape}, got {vel.shape}")
        n = dis.shape[1]
        box = check_positive(box_size, "box_size", unit="Mpc/h")
        q = lagrangian_grid(n, box)  # (3, n, n, n) float64
        pos = (q + dis.astype(np.float64)).reshape(3, -1).T
        pos = wrap_positions(np.mod(pos, box).astype(np.float32), box)
        return cls(
            positions=pos,
            velocities=vel.reshape(3, -1).T,
            ids=np.arange(n**3, dtype=np.int64),
            a=a,
            box_size=box_size,
            grid=n,
            cosmology=cosmology,
            meta={} if meta is None else meta,
        )

    # -- views on the Lagrangian grid ------------------------------------------------------
    def _in_id_order(self, values: np.ndarray) -> np.ndarray:
        out = np.empty_like(values)
        out[self.ids] = values
        return out

    def displacement_field(self) -> np.ndarray:
        """Displacement from the Lagrangian grid, minimal periodic image.

        Returns
        -------
        ndarray, shape (3, n, n, n), float32
            ``x - q`` [Mpc/h] in ``[-L/2, L/2)``, particles placed by id.
        """
        n, box = self.grid, self.box_size
        pos = self._in_id_order(self.positions).T.reshape(3, n, n, n).astype(np.float64)
        dis = pos - lagrangian_grid(n, box)
        dis -= box * np.floor(dis / box + 0.5)
        return dis.astype(np.float32)

    def velocity_field(self) -> np.ndarray:
        """Peculiar velocity on the Lagrangian grid.

        Returns
        -------
        ndarray, shape (3, n, n, n), float32
            Velocity [km/s] of particle ``(i, j, k)`` at ``[:, i, j, k]``.
        """
        n = self.grid
        return np.ascontiguousarray(self._in_id_order(self.velocities).T.reshape(3, n, n, n))

    def density(self, n_mesh: int, window: str = "cic") -> np.ndarray:
        """Overdensity ``delta = rho / mean(rho) - 1`` on a periodic ``n_mesh^3`` mesh.

        Parameters
        ----------
        n_mesh : int
            Mesh points per side.
        window : {"cic", "tsc", "ngp"}
            Mass assignment scheme (see :func:`emu_backend.mesh.paint`).

        Returns
        -------
        ndarray, shape (n_mesh, n_mesh, n_mesh), float64
            Overdensity; mean 0 up to round-off.
        """
        n_mesh = check_int(n_mesh, "n_mesh", 1)
        pos = torch.from_numpy(np.asarray(self.positions, dtype=np.float64))
        mesh = paint(pos, n_mesh, self.box_size, window=window, periodic=True)
        mean = self.n_particles / n_mesh**3
        return (mesh / mean - 1.0).numpy()


def lagrangian_grid(n: int, box_size: float) -> np.ndarray:
    """Lagrangian positions ``(i, j, k) * box_size / n`` [Mpc/h], shape (3, n, n, n), float64."""
    axis = np.arange(n, dtype=np.float64) * (box_size / n)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"))


def check_matching_snapshots(snap, ref, name: str, ref_name: str, *, box_rtol: float, a_rtol: float) -> None:
    """Check that ``snap`` and ``ref`` are :class:`Snapshot` objects of one grid,
    box size (within ``box_rtol``) and time (scale factor within ``a_rtol``), for comparing them.

    Raises
    ------
    InputError
        Naming ``name`` / ``ref_name`` and the values that differ.
    """
    for key, s in ((name, snap), (ref_name, ref)):
        if not isinstance(s, Snapshot):
            raise InputError(f"{key} must be a Snapshot, got {type(s).__name__}")
    if snap.grid != ref.grid or not math.isclose(snap.box_size, ref.box_size, rel_tol=box_rtol):
        raise InputError(f"{name} has n = {snap.grid}, L = {snap.box_size} Mpc/h; {ref_name} has "
                         f"n = {ref.grid}, L = {ref.box_size} Mpc/h")
    if not math.isclose(snap.a, ref.a, rel_tol=a_rtol):
        raise InputError(f"{name} is at a = {snap.a:.6g} (z = {snap.z:.4g}), {ref_name} at a = {ref.a:.6g} "
                         f"(z = {ref.z:.4g})")
