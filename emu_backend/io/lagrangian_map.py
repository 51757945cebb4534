"""Which Lagrangian grid point each particle ID started from: the ID map of one simulation, verified.

Particle IDs are labels, not grid indices. 2LPTic, which wrote Quijote's initial conditions, numbers the
particles over its glass-tile loop, ``ID = 1 + ((it T + jt) T + kt) G^3 + m`` (tile ``(it, jt, kt)``,
``T = GlassTileFac``, ``G^3`` particles per tile, ``m`` the particle's index in the glass file), and
Gadget keeps those IDs in every snapshot and FoF catalogue. A grid point is therefore found where it can
be seen: in the initial conditions, where every particle is still within a fraction of a cell of its
unperturbed position. :func:`map_from_ic_positions` derives the map there and verifies it (a permutation
of the grid, every particle close to its point, a continuous zero-mean displacement field);
:func:`lagrangian_index` is the one place where IDs become grid indices, for the ICs, the snapshots and
the FoF member lists. IDs that happen to be the grid index (this package's files, 2LPTic runs whose glass
is the grid in order) are a fast path, taken only where the same checks proved it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..checks import check_real
from ..cosmology import growth
from ..errors import FileFormatError

__all__ = ["LagrangianMap", "MAX_OFFSET_CELLS", "MAX_JUMP_CELLS", "MAX_MEAN_CELLS", "lagrangian_grid_size",
           "largest_jump", "map_from_ic_positions", "map_declared_by_file", "lagrangian_index"]

logger = logging.getLogger(__name__)

#: Largest distance, per axis and in grid cells, of an IC particle from its grid point (or of the position
#: its velocity points back to, see :func:`map_from_ic_positions`). Below 1/2 the nearest point is unique;
#: Quijote's z = 127 ICs at 512^3 stay below ~0.2 cells at the fiducial cosmology (docs/quijote.md).
MAX_OFFSET_CELLS = 0.45
#: Largest difference, in cells, between the IC displacements of neighbouring grid points: a particle put on
#: a wrong point differs from its neighbours by about one cell, while at z = 127 neighbours differ by <~0.1
#: (0.06-0.10 measured across the latin hypercube's range, docs/quijote.md).
MAX_JUMP_CELLS = 0.5
#: Largest mean displacement per axis [cells]: zero in ICs (no k = 0 mode); a whole-box relabelling shifts it by 1.
MAX_MEAN_CELLS = 0.25
#: ``/Provenance`` format prefix of this package's Gadget files, whose ParticleIDs are the 0-based grid index.
_OWN_FORMAT = "emu_backend/"


@dataclass(frozen=True, eq=False)
class LagrangianMap:
    """The verified map of one simulation from particle ID to 0-based Lagrangian index ``i n^2 + j n + k``.

    Made by :func:`map_from_ic_positions` (or :func:`map_declared_by_file`); used through
    :func:`lagrangian_index`.

    Attributes
    ----------
    grid : int
        Particles per side n (``N = n^3``).
    id_start : int
        Smallest ID.
    table : ndarray, shape (N,), int32 or int64, or None
        Grid index of the j-th smallest ID; None where ID ``id_start + j`` is grid index j (the fast path).
    sorted_ids : ndarray, shape (N,), uint64, or None
        The IDs in increasing order where they are not the range ``id_start .. id_start + N - 1``.
    source : str
        The files the map was derived from.
    proof : str
        What was checked (recorded in the ``meta`` of the snapshots placed with it).
    """

    grid: int
    id_start: int
    table: np.ndarray | None
    sorted_ids: np.ndarray | None
    source: str
    proof: str

    @property
    def n_particles(self) -> int:
        """Number of particles N."""
        return self.grid**3

    @property
    def in_grid_order(self) -> bool:
        """Whether ID ``id_start + j`` is grid index j (proved, not assumed)."""
        return self.table is None and self.sorted_ids is None


def lagrangian_grid_size(n_part: int, where: str) -> int:
    """The side ``n`` of the Lagrangian grid of ``n_part = n^3`` particles.

    Raises
    ------
    FileFormatError
        ``n_part`` is not a positive cube; the message starts with ``where``.
    """
    n = round(n_part ** (1.0 / 3.0)) if n_part > 0 else 0
    if n == 0 or n**3 != n_part:
        raise FileFormatError(f"{where}: {n_part} particles is not a cube n^3 of a Lagrangian grid")
    return n


def _nearest_points(positions: np.ndarray, shift: np.ndarray | None, cell: float, n: int) -> tuple[np.ndarray, float]:
    """C-order index of the grid point nearest to ``positions - shift`` and the largest per-axis offset [cells]."""
    index, worst = None, 0.0
    for ax in range(3):
        u = positions[:, ax].astype(np.float64) / cell
        if shift is not None:
            u -= shift[:, ax] / cell
        r = np.rint(u)
        worst = max(worst, float(np.abs(u - r).max()))
        q = np.mod(r.astype(np.int64), n)
        index = q if index is None else index * n + q
    return index, worst


def _assignment_problem(index: np.ndarray, worst: float, max_offset: float) -> str | None:
    counts = np.bincount(index, minlength=index.size)
    if counts.max() > 1:
        return (f"{int(np.count_nonzero(counts > 1))} grid points get two or more particles and "
                f"{int(np.count_nonzero(counts == 0))} get none (not a permutation of the grid)")
    if worst > max_offset:
        return f"a particle lies {worst:.3g} cells from its grid point (at most {max_offset:g} allowed)"
    return None


def largest_jump(displacement: np.ndarray, cell: float) -> float:
    """Largest difference between the displacements of neighbouring grid points (periodic), in cells.

    Parameters
    ----------
    displacement : ndarray, shape (n, n, n) or (3, n, n, n)
        One component, or all three, of a displacement field on the Lagrangian grid [Mpc/h].
    cell : float
        Grid spacing ``L / n`` [Mpc/h].
    """
    field = np.asarray(displacement)
    if field.ndim == 4:
        return max(largest_jump(component, cell) for component in field)
    jump = 0.0
    for ax in range(3):
        jump = max(jump, float(np.abs(np.diff(field, axis=ax, append=field.take([0], axis=ax))).max()))
    return jump / cell


def _field_problem(positions: np.ndarray, index: np.ndarray, cell: float, n: int) -> tuple[str | None, float]:
    """Why the displacements ``x - q`` of particles placed at grid points ``index`` are not those of early ICs
    (None if they are), and their :func:`largest_jump`."""
    at = np.empty(index.size, np.int64)
    at[index] = np.arange(index.size)  # particle at each grid point
    box = n * cell
    jump, mean = 0.0, []
    for c in range(3):
        q = (np.arange(n, dtype=np.float64) * cell).reshape([n if ax == c else 1 for ax in range(3)])
        s = positions[at, c].astype(np.float64).reshape(n, n, n) - q
        s -= box * np.rint(s / box)
        mean.append(float(s.mean()) / cell)
        jump = max(jump, largest_jump(s.astype(np.float32), cell))
    if jump >= MAX_JUMP_CELLS:
        return (f"the displacements of neighbouring grid points differ by up to {jump:.3g} cells (less than "
                f"{MAX_JUMP_CELLS:g} in early initial conditions)"), jump
    if max(abs(m) for m in mean) >= MAX_MEAN_CELLS:
        return (f"the mean displacement is ({', '.join(f'{m:.3g}' for m in mean)}) cells (zero in initial "
                f"conditions; at most {MAX_MEAN_CELLS:g} allowed)"), jump
    return None, jump


def map_from_ic_positions(positions, velocities, ids, *, a: float, box_size: float, omega_m: float | None,
                          where: str, max_offset_cells: float = MAX_OFFSET_CELLS) -> LagrangianMap:
    """Derive and verify the ID map of a simulation from its initial conditions.

    Each particle is put on the grid point nearest to its position (Quijote's own recipe,
    ``round(x / L * n) mod n`` per axis); where that is not a verified assignment, on the point nearest
    to ``x - v / (a H f)``, the unperturbed position that a growing-mode (Zel'dovich / 2LPT) velocity
    points back to, which stays within a fraction of a cell where displacements reach a cell (low
    Omega_m, high sigma_8, 1024^3). An assignment is accepted when it is a permutation of the grid,
    every particle lies within ``max_offset_cells`` (per axis) of its point, the displacements of
    neighbouring grid points differ by less than :data:`MAX_JUMP_CELLS` (a particle on a wrong point
    differs from its neighbours by a cell) and their mean is below :data:`MAX_MEAN_CELLS` (a relabelling
    of the whole box shifts it by a cell).

    Parameters
    ----------
    positions : ndarray, shape (N, 3)
        IC positions [Mpc/h], in file order.
    velocities : ndarray, shape (N, 3)
        IC peculiar velocities [km/s].
    ids : ndarray, shape (N,), integer
        Particle IDs as stored.
    a : float
        Scale factor of the ICs.
    box_size : float
        Box side [Mpc/h].
    omega_m : float or None
        Omega_m for ``H`` and ``f`` of the velocity estimate; None or NaN skips that estimate.
    where : str
        The files, for messages.
    max_offset_cells : float
        In (0, 0.5].

    Returns
    -------
    LagrangianMap

    Raises
    ------
    FileFormatError
        Not ``n^3`` particles, IDs that repeat, or no estimate gives a verified assignment (naming what
        failed for each).
    """
    max_offset = check_real(max_offset_cells, "max_offset_cells", 0.0, 0.5, lo_open=True)
    ids = np.asarray(ids)
    n_part = int(ids.shape[0])
    n = lagrangian_grid_size(n_part, where)
    cell = float(box_size) / n
    positions = np.asarray(positions)
    estimates = [("the positions", None)]
    if omega_m is not None and 0 < omega_m <= 1 and np.all(np.isfinite(velocities)):
        z = 1.0 / a - 1.0
        a_h_f = a * float(growth.hubble(z, omega_m)) * float(growth.growth_rate(z, omega_m))  # km/s per Mpc/h
        estimates.append(("the positions minus v / (a H f)", np.asarray(velocities, np.float64) / a_h_f))
    failures = []
    for label, shift in estimates:
        index, worst = _nearest_points(positions, shift, cell, n)
        problem = _assignment_problem(index, worst, max_offset)
        if problem is None:
            problem, jump = _field_problem(positions, index, cell, n)
            if problem is None:
                proof = (f"grid points of {label} of {where}: a permutation of the {n}^3 grid, largest offset "
                         f"{worst:.3g} cells (<= {max_offset:g}), neighbouring displacements differ by <= "
                         f"{jump:.3g} cells (< {MAX_JUMP_CELLS:g}), mean displacement < {MAX_MEAN_CELLS:g} cells")
                logger.info("ID map: %s", proof)
                return _build(ids, index, n, where, proof)
        failures.append(f"from {label}: {problem}")
    raise FileFormatError(f"{where}: the particles cannot be placed on the {n}^3 Lagrangian grid: "
                          + "; ".join(failures))


def _build(ids: np.ndarray, index: np.ndarray, n: int, where: str, proof: str) -> LagrangianMap:
    n_part = index.size
    dtype = np.int32 if n_part < 2**31 else np.int64
    if ids.dtype.kind not in "iu":
        raise FileFormatError(f"{where}: particle IDs must be integers, got dtype {ids.dtype}")
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo + 1 == n_part:
        table = np.full(n_part, -1, dtype)
        table[ids.astype(np.int64) - lo] = index
        if table.min() < 0:
            raise FileFormatError(f"{where}: particle IDs repeat ({int(np.count_nonzero(table < 0))} IDs of "
                                  f"{lo}..{hi} are missing)")
        grid_order = bool(np.array_equal(table, np.arange(n_part, dtype=dtype)))
        return LagrangianMap(n, lo, None if grid_order else _readonly(table), None, where, proof)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order].astype(np.uint64)
    if np.any(sorted_ids[1:] == sorted_ids[:-1]):
        raise FileFormatError(f"{where}: particle IDs repeat")
    return LagrangianMap(n, lo, _readonly(index[order].astype(dtype)), _readonly(sorted_ids), where, proof)


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


def map_declared_by_file(provenance: dict, n_part: int, where: str) -> LagrangianMap | None:
    """The map of a file written by this package (its ParticleIDs are the 0-based grid index), else None.

    Parameters
    ----------
    provenance : dict
        The ``/Provenance`` attributes of the file (``format`` starts with ``"emu_backend/"``).
    n_part : int
        Number of particles ``n^3``.
    where : str
        The files, for messages.
    """
    fmt = provenance.get("format", "") if isinstance(provenance, dict) else ""
    fmt = fmt.decode(errors="replace") if isinstance(fmt, bytes) else str(fmt)
    if not fmt.startswith(_OWN_FORMAT):
        return None
    n = lagrangian_grid_size(n_part, where)
    return LagrangianMap(n, 0, None, None, where, f"written by this package ({fmt}): ParticleIDs are the grid index")


def lagrangian_index(ids, lagrangian_map: LagrangianMap, where: str, *, complete: bool = True) -> np.ndarray:
    """The 0-based Lagrangian grid index of each particle ID, through the simulation's verified map.

    Parameters
    ----------
    ids : ndarray, shape (M,), integer
        Particle IDs as stored (a snapshot's, or the members of FoF groups).
    lagrangian_map : LagrangianMap
        The simulation's map (from its initial conditions).
    where : str
        The file, for messages.
    complete : bool
        Require every ID of the map exactly once (a snapshot); otherwise each at most once (FoF members).

    Returns
    -------
    ndarray, shape (M,), int64
        Grid indices in ``0 .. N-1``; a permutation of them when ``complete``.

    Raises
    ------
    FileFormatError
        IDs that are not those of the initial conditions, that repeat, or (``complete``) a different count.
    """
    if not isinstance(lagrangian_map, LagrangianMap):
        raise FileFormatError(f"{where}: no verified ID map (got {type(lagrangian_map).__name__})")
    ids = np.asarray(ids)
    n_part = lagrangian_map.n_particles
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise FileFormatError(f"{where}: particle IDs must be a 1-d integer array, got {ids.dtype} {ids.shape}")
    if complete and ids.size != n_part:
        raise FileFormatError(f"{where}: {ids.size} particles, but the initial conditions "
                              f"{lagrangian_map.source} hold {n_part} ({lagrangian_map.grid}^3)")
    if lagrangian_map.sorted_ids is None:
        rel = ids.astype(np.int64) - lagrangian_map.id_start
        unknown = (rel < 0) | (rel >= n_part)
        index = rel if lagrangian_map.table is None else lagrangian_map.table[np.where(unknown, 0, rel)]
    else:
        pos = np.minimum(np.searchsorted(lagrangian_map.sorted_ids, ids.astype(np.uint64)), n_part - 1)
        unknown = lagrangian_map.sorted_ids[pos] != ids.astype(np.uint64)
        index = lagrangian_map.table[pos]
    if unknown.any():
        sorted_ids = lagrangian_map.sorted_ids
        last = lagrangian_map.id_start + n_part - 1 if sorted_ids is None else int(sorted_ids[-1])
        raise FileFormatError(
            f"{where}: {int(np.count_nonzero(unknown))} particle IDs (e.g. {int(ids[unknown][0])}) are not IDs of "
            f"the initial conditions {lagrangian_map.source} (IDs {lagrangian_map.id_start}..{last}): not this "
            f"simulation's particles")
    index = index.astype(np.int64, copy=False)
    if index.size and np.bincount(index, minlength=n_part).max() > 1:
        raise FileFormatError(f"{where}: particle IDs repeat ({index.size - np.unique(index).size} duplicates)")
    return index
