"""Friends-of-friends halos (halotools pair search); mass function and bias in :mod:`.halo_stats`.

Halo finding
------------
Two particles are friends when their periodic 3-D separation is ``<= l = b * L / N^(1/3)`` (``b`` times the
mean inter-particle separation); halos are the connected components of the friendship graph with at least
``min_particles`` members. The pairs come from halotools' :class:`~halotools.mock_observables.FoFGroups`,
built with ``b_perp = b_para = b`` and periodic boundaries. ``FoFGroups`` itself links within a *cylinder*
(projected separation ``<= l`` and line-of-sight separation ``<= l``: it is a redshift-space group finder), so
its ``group_ids`` are not the standard spherical FoF groups. The cylinder contains the sphere, so we keep the
pairs of its pair matrices (``m_perp``, ``m_para``) whose 3-D separation ``sqrt(d_perp^2 + d_para^2)`` is
``<= l`` and take the connected components with :func:`scipy.sparse.csgraph.connected_components`, exactly as
``FoFGroups.group_ids`` does for its own graph.

Halo properties: ``mass = n_particles * particle_mass`` [Msun/h]; ``position`` the centre of mass [Mpc/h],
computed from the minimum-image offsets to the halo's first member (valid for halos smaller than half the
box) and wrapped into ``[0, L)``; ``velocity`` the mean particle velocity [km/s].
"""

from __future__ import annotations

import logging
import time

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..checks import check_int, check_points, check_positive, check_real
from ..datatypes.halos import HaloCatalog
from ..datatypes.snapshot import Snapshot
from ..errors import ComputationError, InputError, require

__all__ = ["find_halos", "find_halos_in_snapshot"]

logger = logging.getLogger(__name__)


def _fof_labels(pos: np.ndarray, box: float, b: float) -> tuple[np.ndarray, float]:
    """Spherical FoF component label per particle and the linking length [Mpc/h]."""
    require("halotools", "halotools")
    from halotools.mock_observables import FoFGroups

    n = pos.shape[0]
    link = b * box / n ** (1.0 / 3.0)
    if link >= box / 3.0:
        raise InputError(
            f"linking length b * L / N^(1/3) = {link:.4g} Mpc/h must be < box_size / 3 = {box / 3:.4g} Mpc/h "
            f"(halotools' search limit); got b = {b}, N = {n}"
        )
    t0 = time.perf_counter()
    try:
        groups = FoFGroups(pos, b_perp=b, b_para=b, period=box)
        perp, para = groups.m_perp.tocoo(), groups.m_para.tocoo()
    except (ValueError, MemoryError, RuntimeError) as exc:
        raise ComputationError(f"halotools FoFGroups failed on {n} particles in a {box} Mpc/h box: {exc}") from exc
    if not (np.array_equal(perp.row, para.row) and np.array_equal(perp.col, para.col)):
        raise ComputationError("halotools returned perpendicular and parallel pair matrices of different structure")
    close = np.hypot(perp.data, para.data) <= link  # the sphere inside halotools' cylinder
    rows, cols = perp.row[close], perp.col[close]
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False, return_labels=True)
    logger.info(
        "FoF: %d particles, l = %.4g Mpc/h, %d cylinder pairs, %d linked pairs, %.2f s",
        n, link, perp.nnz, int(close.sum()), time.perf_counter() - t0,
    )
    return labels.astype(np.int64), link


def find_halos(
    positions,
    velocities,
    box_size: float,
    particle_mass: float,
    b: float = 0.2,
    min_particles: int = 20,
    a: float | None = None,
) -> HaloCatalog:
    """Friends-of-friends halos of equal-mass particles in a periodic box (halotools pair search).

    Parameters
    ----------
    positions : array_like, shape (N, 3)
        Particle positions [Mpc/h]; wrapped into ``[0, box_size)``.
    velocities : array_like, shape (N, 3)
        Peculiar velocities [km/s].
    box_size : float
        Box side [Mpc/h].
    particle_mass : float
        Mass of one particle [Msun/h].
    b : float
        Linking length in units of the mean inter-particle separation ``L / N^(1/3)`` (default 0.2).
    min_particles : int
        Smallest member count of a halo (default 20).
    a : float or None
        Scale factor, stored in the catalog.

    Returns
    -------
    HaloCatalog
        Sorted by mass, descending; ``particle_halo`` maps each particle to its halo (-1: none).

    Raises
    ------
    MissingDependencyError
        If halotools is not installed (``pip install 'emu_backend[halotools]'``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> clump = 30.0 + rng.normal(0, 0.05, (50, 3))  # 50 particles within ~0.1 Mpc/h
    >>> pos = np.concatenate([clump, rng.uniform(0, 100.0, (950, 3))])
    >>> cat = find_halos(pos, np.zeros_like(pos), 100.0, particle_mass=1e12)  # doctest: +SKIP
    >>> cat.n_particles[0] >= 50  # doctest: +SKIP
    True
    """
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    pos = check_points(positions, "positions", "Mpc/h")
    vel = check_points(velocities, "velocities", "km/s")
    if vel.shape != pos.shape:
        raise InputError(f"velocities shape {vel.shape} differs from positions shape {pos.shape}")
    m_p = check_positive(particle_mass, "particle_mass", unit="Msun/h")
    b = check_real(b, "linking length b", 0.0, 1.0, lo_open=True, hi_open=True, unit="mean separations")
    min_particles = check_int(min_particles, "min_particles", 2)
    if a is not None:
        a = check_positive(a, "scale factor a")
    pos = np.mod(pos, box)
    pos[pos >= box] = 0.0  # np.mod of a tiny negative number rounds up to box

    labels, _ = _fof_labels(pos, box, b)
    sizes = np.bincount(labels)
    keep = np.flatnonzero(sizes >= int(min_particles))
    first = np.full(sizes.size, pos.shape[0], dtype=np.int64)
    np.minimum.at(first, labels, np.arange(pos.shape[0]))
    order = keep[np.lexsort((first[keep], -sizes[keep]))]  # by size descending, then first member
    halo_of_label = np.full(sizes.size, -1, dtype=np.int64)
    halo_of_label[order] = np.arange(order.size)
    particle_halo = halo_of_label[labels]

    members = particle_halo >= 0
    h = particle_halo[members]
    n_h = order.size
    counts = sizes[order].astype(np.int64)
    ref = pos[first[order]]  # first member of each halo
    offset = pos[members] - ref[h]
    offset -= box * np.round(offset / box)  # minimum image with respect to the reference member
    centre = np.empty((n_h, 3))
    velocity = np.empty((n_h, 3))
    for c in range(3):
        centre[:, c] = ref[:, c] + np.bincount(h, weights=offset[:, c], minlength=n_h) / np.maximum(counts, 1)
        velocity[:, c] = np.bincount(h, weights=vel[members, c], minlength=n_h) / np.maximum(counts, 1)
    centre = np.mod(centre, box)
    centre[centre >= box] = 0.0
    logger.info("FoF: %d halos with >= %d particles (b = %g)", n_h, min_particles, b)
    return HaloCatalog(
        mass=counts * m_p,
        position=centre,
        velocity=velocity,
        n_particles=counts,
        box_size=box,
        particle_mass=m_p,
        linking_length=b,
        min_particles=int(min_particles),
        a=a,
        particle_halo=particle_halo,
    )


def find_halos_in_snapshot(snapshot, b: float = 0.2, min_particles: int = 20) -> HaloCatalog:
    """FoF halos of a :class:`~emu_backend.datatypes.Snapshot` (its particle mass, box and ``a``).

    Parameters
    ----------
    snapshot : Snapshot
        Particles [Mpc/h, km/s] and cosmology.
    b, min_particles
        As :func:`find_halos`.

    Returns
    -------
    HaloCatalog
    """
    if not isinstance(snapshot, Snapshot):
        raise InputError(f"snapshot must be a Snapshot, got {type(snapshot).__name__}")
    return find_halos(
        snapshot.positions,
        snapshot.velocities,
        snapshot.box_size,
        snapshot.particle_mass,
        b=b,
        min_particles=min_particles,
        a=snapshot.a,
    )
