"""Links between the halos of consecutive output times by shared Lagrangian particle IDs.

Definitions (docs/merger_trees.md)
----------------------------------
Outputs are ordered in time, earliest first (``z`` decreasing); halo ``h`` at output ``i`` has ``N_h`` members.

* **Contingency table**: for outputs ``i`` and ``j`` the sparse matrix ``C[h, g]`` = number of particles in
  halo ``h`` at ``i`` and halo ``g`` at ``j`` (a :class:`scipy.sparse.coo_matrix` over the particles in a halo at
  both times, duplicates summed). Everything below is vectorised over its entries.
* **Descendant**: the halo ``g`` at ``i + 1`` receiving the most of ``h``'s members (ties: the more massive
  ``g``, i.e. the first in its mass-sorted catalog), provided ``C[h, g] >= f N_h`` with ``f`` the
  ``min_shared_fraction`` (default 0.5). Otherwise ``h`` has no descendant at ``i + 1``.
* **Progenitors** of ``g``: every halo whose descendant is ``g``. **Main progenitor**: the most massive of
  them (its own FoF mass; ties: the progenitor at the later output, then the first in its catalog). This is
  the rule of ytree's default selector (``max_field_value`` of ``mass``), so ytree's ``prog`` branch of the
  written files is this one.
* **Merger**: a halo with two or more progenitors.
* **Fly-by**: a secondary (not main) progenitor ``p`` of ``g`` whose members come out again: at output
  ``i + 2`` the halo ``E`` receiving most of ``p``'s members has ``C[p, E] >= f N_p`` and is *not* the
  descendant of ``g``. With ``skip_one_output`` (default) ``p`` is relinked to ``E`` (a link that skips
  output ``i + 1``, where FoF joined the two), so a passing halo keeps its own branch; either way it is counted.
* **Bridged gap**: a halo without a descendant at ``i + 1`` whose members are found at ``i + 2`` in one halo
  (``>= f N_h``); with ``skip_one_output`` it is linked there (it dipped below ``min_particles`` or was
  split for one output).
* **Orphan**: a halo before the last output left without any descendant (disrupted, or below the resolution
  for good): the root of a tree that ends early. **New halo**: a halo after the first output without
  progenitors (it formed, or grew above ``min_particles``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix

from ..checks import check_bool, check_real
from ..errors import InputError
from .halos import OutputHalos

__all__ = ["LinkConfig", "MergerTrees", "link_halos", "contingency_table", "best_matches"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkConfig:
    """How halos are linked between output times.

    Parameters
    ----------
    min_shared_fraction : float
        ``f`` in (0, 1]: a descendant receives at least this fraction of its progenitor's members.
    skip_one_output : bool
        Relink fly-bys and bridge one-output gaps (links that skip one output time).
    """

    min_shared_fraction: float = 0.5
    skip_one_output: bool = True

    def __post_init__(self):
        object.__setattr__(self, "min_shared_fraction", check_real(
            self.min_shared_fraction, "min_shared_fraction", 0.0, 1.0, lo_open=True))
        object.__setattr__(self, "skip_one_output", check_bool(self.skip_one_output, "skip_one_output"))


def contingency_table(labels_a: np.ndarray, labels_b: np.ndarray, n_a: int, n_b: int):
    """Sparse table ``C[h, g]``: particles in halo ``h`` of labelling ``a`` and halo ``g`` of labelling ``b``.

    Parameters
    ----------
    labels_a, labels_b : ndarray, shape (N_particles,), int
        Halo index of each particle (by Lagrangian ID) at two output times, -1 for none.
    n_a, n_b : int
        Number of halos of each.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_a, n_b), int64
    """
    both = (labels_a >= 0) & (labels_b >= 0)
    rows, cols = labels_a[both], labels_b[both]
    return coo_matrix((np.ones(rows.size, dtype=np.int64), (rows, cols)), shape=(n_a, n_b)).tocsr()


def best_matches(table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every row with an entry: the column with the largest count (ties: the lowest column) and the count.

    Returns
    -------
    rows, cols, counts : ndarray, int64
    """
    coo = table.tocoo()
    order = np.lexsort((coo.col, -coo.data, coo.row))
    rows = coo.row[order]
    first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if rows.size else np.zeros(0, dtype=np.int64)
    return (rows[first].astype(np.int64), coo.col[order][first].astype(np.int64),
            coo.data[order][first].astype(np.int64))


@dataclass(frozen=True, eq=False)
class MergerTrees:
    """Halos of every output time and their links, flattened: halo ``k`` is global index ``k``.

    Halos are stored output by output (earliest first), each output in its catalog's (mass-sorted) order:
    the halos of output ``i`` are ``offsets[i]:offsets[i + 1]``.

    Attributes
    ----------
    z : ndarray, shape (n_outputs,)
        Redshift of each output, decreasing.
    output, halo_index : ndarray, shape (N,), int64
        Output and index in that output's catalog of every halo.
    mass : ndarray, shape (N,)
        FoF mass [Msun/h].
    position : ndarray, shape (N, 3)
        Centre of mass [Mpc/h], comoving, in ``[0, box_size)``.
    velocity : ndarray, shape (N, 3)
        Mean peculiar velocity [km/s].
    vrms : ndarray, shape (N,)
        3-D rms velocity of the members about the mean [km/s].
    n_particles : ndarray, shape (N,), int64
    descendant : ndarray, shape (N,), int64
        Global index of the descendant, -1 for none.
    shared : ndarray, shape (N,), int64
        Members given to the descendant (0 without one).
    main_progenitor : ndarray, shape (N,), int64
        Global index of the main progenitor, -1 for none.
    n_progenitors : ndarray, shape (N,), int64
    flyby : ndarray, shape (N,), bool
        A secondary progenitor whose members came out again two outputs later (see the module docstring).
    bridged : ndarray, shape (N,), bool
        Linked across a one-output gap.
    box_size, particle_mass : float
        [Mpc/h], [Msun/h].
    min_particles : int
        The halo finder's smallest member count (the resolution limit ``min_particles * particle_mass``).
    config : LinkConfig
    counts : dict
        Numbers of halos, links, mergers, fly-bys, bridged gaps, orphans, new halos and trees.
    """

    z: np.ndarray
    output: np.ndarray
    halo_index: np.ndarray
    mass: np.ndarray
    position: np.ndarray
    velocity: np.ndarray
    vrms: np.ndarray
    n_particles: np.ndarray
    descendant: np.ndarray
    shared: np.ndarray
    main_progenitor: np.ndarray
    n_progenitors: np.ndarray
    flyby: np.ndarray
    bridged: np.ndarray
    box_size: float
    particle_mass: float
    min_particles: int = 20
    config: LinkConfig = field(default_factory=LinkConfig)
    counts: dict = field(default_factory=dict)

    @property
    def n_halos(self) -> int:
        return int(self.mass.size)

    @property
    def n_outputs(self) -> int:
        return int(self.z.size)

    @property
    def a(self) -> np.ndarray:
        """Scale factor of each output."""
        return 1.0 / (1.0 + self.z)

    @property
    def offsets(self) -> np.ndarray:
        """``offsets[i]:offsets[i + 1]`` are the halos of output ``i``; shape (n_outputs + 1,)."""
        return np.r_[0, np.cumsum(np.bincount(self.output, minlength=self.n_outputs))].astype(np.int64)

    def roots(self) -> np.ndarray:
        """Global index of the root (last descendant) of every halo's tree, shape (N,)."""
        root = np.arange(self.n_halos, dtype=np.int64)
        off = self.offsets
        for i in range(self.n_outputs - 1, -1, -1):  # descendants are at later outputs: already resolved
            h = np.arange(off[i], off[i + 1])
            d = self.descendant[h]
            has = d >= 0
            root[h[has]] = root[d[has]]
        return root

    def sibling_key(self) -> np.ndarray:
        """Order of halos among siblings (and of tree roots): mass descending, later output, catalog index.

        The main progenitor of every halo comes first among its progenitors in this order.
        """
        return np.lexsort((np.arange(self.n_halos), -self.output, -self.mass))


def _main_progenitors(descendant: np.ndarray, mass: np.ndarray, output: np.ndarray):
    """Main progenitor and number of progenitors of every halo, vectorised over the links."""
    n = descendant.size
    prog = np.flatnonzero(descendant >= 0)
    d = descendant[prog]
    order = np.lexsort((prog, -output[prog], -mass[prog], d))
    d_sorted = d[order]
    first = np.r_[True, d_sorted[1:] != d_sorted[:-1]] if d_sorted.size else np.zeros(0, dtype=bool)
    main = np.full(n, -1, dtype=np.int64)
    main[d_sorted[first]] = prog[order][first]
    return main, np.bincount(d, minlength=n).astype(np.int64)


def link_halos(outputs: Sequence[OutputHalos], config: LinkConfig | None = None) -> MergerTrees:
    """Merger trees of the halos of several output times (definitions in the module docstring).

    Parameters
    ----------
    outputs : sequence of OutputHalos
        One per output time, earliest first (redshifts strictly decreasing), of the same particles.
    config : LinkConfig, optional

    Returns
    -------
    MergerTrees

    Examples
    --------
    See ``tests/test_trees.py`` (constructed mergers, fly-bys and halos losing members).
    """
    config = LinkConfig() if config is None else config
    if not isinstance(config, LinkConfig):
        raise InputError(f"config must be a LinkConfig, got {type(config).__name__}")
    outputs = list(outputs)
    if not outputs or not all(isinstance(o, OutputHalos) for o in outputs):
        raise InputError("outputs must be a non-empty sequence of OutputHalos")
    z = np.array([o.z for o in outputs], dtype=np.float64)
    if np.any(np.diff(z) >= 0):
        raise InputError(f"outputs must be ordered in time, earliest first (z decreasing), got z = {z.tolist()}")
    n_part = outputs[0].halo_of_id.size
    box, m_p = outputs[0].catalog.box_size, outputs[0].catalog.particle_mass
    for o in outputs:
        if o.halo_of_id.size != n_part or o.catalog.box_size != box or o.catalog.particle_mass != m_p:
            raise InputError("all outputs must hold the same particles (number, box_size, particle_mass); "
                             f"got {o.halo_of_id.size} particles, box {o.catalog.box_size}, m_p "
                             f"{o.catalog.particle_mass} against {n_part}, {box}, {m_p}")
    t0 = time.perf_counter()
    sizes = np.array([o.catalog.n_halos for o in outputs], dtype=np.int64)
    off = np.r_[0, np.cumsum(sizes)]
    n = int(off[-1])
    output = np.repeat(np.arange(len(outputs)), sizes)
    npart = np.concatenate([o.catalog.n_particles for o in outputs]) if n else np.zeros(0, np.int64)
    mass = np.concatenate([o.catalog.mass for o in outputs])
    f = config.min_shared_fraction

    def best(i: int, j: int, rows_allowed=None):
        """Best match at output j of the halos of output i (global indices), with the fraction test."""
        lab = outputs[i].halo_of_id
        if rows_allowed is not None:
            keep = np.zeros(sizes[i] + 1, dtype=bool)
            keep[rows_allowed - off[i]] = True
            lab = np.where(keep[lab], lab, -1)  # lab = -1 reads keep[-1] = False
        r, c, cnt = best_matches(contingency_table(lab, outputs[j].halo_of_id, sizes[i], sizes[j]))
        ok = cnt >= f * npart[off[i] + r]
        return off[i] + r[ok], off[j] + c[ok], cnt[ok]

    descendant = np.full(n, -1, dtype=np.int64)
    shared = np.zeros(n, dtype=np.int64)
    for i in range(len(outputs) - 1):
        h, g, cnt = best(i, i + 1)
        descendant[h], shared[h] = g, cnt
    flyby = np.zeros(n, dtype=bool)
    bridged = np.zeros(n, dtype=bool)
    main0, _ = _main_progenitors(descendant, mass, output)
    consecutive = descendant.copy()
    for i in range(len(outputs) - 2):
        h = np.arange(off[i], off[i + 1])
        d = consecutive[h]
        secondary = h[(d >= 0) & (main0[np.maximum(d, 0)] != h)]
        lost = h[d < 0]
        cand = np.concatenate([secondary, lost])
        if cand.size == 0:
            continue
        p, e, cnt = best(i, i + 2, cand)
        is_sec = consecutive[p] >= 0
        later = np.where(is_sec, consecutive[np.maximum(consecutive[p], 0)], -1)
        fly = is_sec & (e != later)
        gap = ~is_sec
        flyby[p[fly]] = True
        bridged[p[gap]] = True
        if config.skip_one_output:
            move = fly | gap
            descendant[p[move]], shared[p[move]] = e[move], cnt[move]
    main, n_prog = _main_progenitors(descendant, mass, output)
    last = output == len(outputs) - 1
    counts = {
        "halos_per_output": sizes.tolist(),
        "halos": n,
        "links": int((descendant >= 0).sum()),
        "mergers": int((n_prog >= 2).sum()),
        "flybys": int(flyby.sum()),
        "bridged_gaps": int(bridged.sum()),
        "orphans": int(((descendant < 0) & ~last).sum()),
        "new_halos": int(((n_prog == 0) & (output > 0)).sum()),
        "trees": int((descendant < 0).sum()),
        "trees_at_last_output": int(last.sum()),
    }
    trees = MergerTrees(
        z=z, output=output.astype(np.int64),
        halo_index=np.concatenate([np.arange(s) for s in sizes]).astype(np.int64) if n else np.zeros(0, np.int64),
        mass=mass, position=np.concatenate([o.catalog.position for o in outputs]).reshape(n, 3),
        velocity=np.concatenate([o.catalog.velocity for o in outputs]).reshape(n, 3),
        vrms=np.concatenate([o.vrms for o in outputs]), n_particles=npart.astype(np.int64),
        descendant=descendant, shared=shared, main_progenitor=main, n_progenitors=n_prog, flyby=flyby,
        bridged=bridged, box_size=box, particle_mass=m_p,
        min_particles=max(o.catalog.min_particles for o in outputs), config=config, counts=counts)
    logger.info("trees: %d halos over %d outputs, %d links, %d mergers, %d fly-bys, %d orphans in %.3f s", n,
                len(outputs), counts["links"], counts["mergers"], counts["flybys"], counts["orphans"],
                time.perf_counter() - t0)
    return trees
