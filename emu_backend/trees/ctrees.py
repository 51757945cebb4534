"""Merger trees in the consistent-trees ASCII format (``tree_0_0_0.dat``), which ytree loads.

The format is consistent-trees' (P. Behroozi's merger-tree code, whose README documents the columns):
a header of ``#``-lines (the column names with their numbers, the cosmology, the box, one description line
per column with its unit in parentheses), then the number of trees, then each tree as a ``#tree <root
id>`` line followed by its halos, one per line, the root first and the rest in depth-first order (the
main progenitor first). ytree (``ytree.load("tree_0_0_0.dat")``) reads it with its consistent-trees
frontend: ``uid``/``desc_uid`` from ``id``/``desc_id``, ``mass`` from ``Mvir``, positions from ``x, y, z``.

What the columns hold here (FoF halos; docs/merger_trees.md):

* ``Mvir`` and ``sam_Mvir``: the FoF mass [Msun/h] (not a virial mass); ``Rvir``: the radius of 200 times
  the mean matter density holding that mass [kpc/h comoving], derived from the mass, not measured;
* ``vrms``: 3-D rms velocity of the members [km/s]; ``x, y, z`` [Mpc/h comoving]; ``vx, vy, vz`` [km/s];
* ``id``: the halo's global index (unique over all outputs); ``desc_id`` / ``desc_scale``: its descendant
  (-1 / 0 without one; a link may skip one output, see :mod:`.links`); ``num_prog``; ``mmp?`` 1 for a
  main progenitor; ``scale_of_last_MM``: scale factor of the last major merger on the main branch
  (progenitor mass ratio >= 0.3, consistent-trees' default), 0 for none;
* ``pid = upid = desc_pid = -1`` (no subhalos), ``phantom = 0``, ``rs = vmax = Jx = Jy = Jz = Spin =
  Tidal_Force = 0`` and ``Tidal_ID = -1`` (not measured);
* the depth-first bookkeeping (``Depth_first_ID``, ``Last_progenitor_depthfirst_ID``,
  ``Next_coprogenitor_depthfirst_ID``, ``Last_mainleaf_depthfirst_ID``, ``Breadth_first_ID``,
  ``Tree_root_ID``) as consistent-trees defines it; ``Orig_halo_ID``: the index in its output's FoF
  catalog; ``Snap_num``: the output index (0 = earliest);
* three extra columns after consistent-trees' own: ``Num_particles``, ``Shared_with_desc`` (members given
  to the descendant) and ``Flyby`` (1 for a relinked fly-by).
"""

from __future__ import annotations

import io
import logging
import math
import time
from pathlib import Path

import numpy as np

from .._version import __version__
from ..cosmology.params import Cosmology
from ..errors import InputError, require
from ..io.atomic import atomic_path
from .links import MergerTrees

__all__ = ["write_consistent_trees", "load_with_ytree", "depth_first", "last_major_merger", "COLUMNS",
           "TREE_FILE_NAME", "MAJOR_MERGER_RATIO"]

logger = logging.getLogger(__name__)

#: The file name consistent-trees gives a single-file forest (ytree recognises ``*.dat``).
TREE_FILE_NAME = "tree_0_0_0.dat"
#: Mass ratio of a major merger (secondary / main progenitor), consistent-trees' default.
MAJOR_MERGER_RATIO = 0.3
#: Mean matter density today per Omega_m [Msun/h / (Mpc/h)^3]: the critical density 3 H0^2 / (8 pi G).
RHO_CRIT_MSUN_H_MPC_H3 = 2.775366e11

#: Columns written: (name, printf format, description with the unit in parentheses).
COLUMNS = (
    ("scale", "%.5f", "Scale factor of halo"),
    ("id", "%d", "ID of halo, unique across all outputs"),
    ("desc_scale", "%.5f", "Scale of descendant halo, if applicable"),
    ("desc_id", "%d", "ID of descendant halo, if applicable"),
    ("num_prog", "%d", "Number of progenitors"),
    ("pid", "%d", "Host halo ID; -1, no subhalos"),
    ("upid", "%d", "Most massive host halo ID; -1"),
    ("desc_pid", "%d", "pid of descendant halo; -1"),
    ("phantom", "%d", "Nonzero for halos interpolated across timesteps; 0"),
    ("sam_Mvir", "%.6e", "FoF halo mass, as for Mvir (Msun/h)"),
    ("Mvir", "%.6e", "FoF halo mass (Msun/h)"),
    ("Rvir", "%.4f", "Radius of 200 times the mean matter density for the FoF mass (kpc/h comoving)"),
    ("rs", "%.4f", "Scale radius, not measured (kpc/h comoving)"),
    ("vrms", "%.4f", "3-D rms velocity of the members (km/s physical, peculiar)"),
    ("mmp?", "%d", "whether the halo is the most massive progenitor or not"),
    ("scale_of_last_MM", "%.5f", "scale factor of the last major merger, mass ratio >= 0.3"),
    ("vmax", "%.4f", "Maximum circular velocity, not measured (km/s physical)"),
    ("x", "%.6f", "Halo position x (Mpc/h comoving)"),
    ("y", "%.6f", "Halo position y (Mpc/h comoving)"),
    ("z", "%.6f", "Halo position z (Mpc/h comoving)"),
    ("vx", "%.4f", "Halo velocity x, mean of the members (km/s physical, peculiar)"),
    ("vy", "%.4f", "Halo velocity y, mean of the members (km/s physical, peculiar)"),
    ("vz", "%.4f", "Halo velocity z, mean of the members (km/s physical, peculiar)"),
    ("Jx", "%.1f", "Halo angular momentum x, not measured"),
    ("Jy", "%.1f", "Halo angular momentum y, not measured"),
    ("Jz", "%.1f", "Halo angular momentum z, not measured"),
    ("Spin", "%.1f", "Halo spin parameter, not measured"),
    ("Breadth_first_ID", "%d", "breadth-first ordering of halos within a tree"),
    ("Depth_first_ID", "%d", "depth-first ordering of halos within a tree"),
    ("Tree_root_ID", "%d", "ID of the halo at the last timestep in the tree"),
    ("Orig_halo_ID", "%d", "index of the halo in its output's FoF catalog"),
    ("Snap_num", "%d", "output number, 0 = earliest"),
    ("Next_coprogenitor_depthfirst_ID", "%d", "Depthfirst ID of next progenitor of the same descendant"),
    ("Last_progenitor_depthfirst_ID", "%d", "Depthfirst ID of last progenitor in the subtree"),
    ("Last_mainleaf_depthfirst_ID", "%d", "Depthfirst ID of the earliest halo on the main branch"),
    ("Tidal_Force", "%.1f", "Tidal force, not measured"),
    ("Tidal_ID", "%d", "ID of the most tidally influential halo, not measured; -1"),
    ("Num_particles", "%d", "FoF member count"),
    ("Shared_with_desc", "%d", "members given to the descendant"),
    ("Flyby", "%d", "1 for a fly-by relinked past the output where FoF joined it to another halo"),
)


def depth_first(trees: MergerTrees) -> dict:
    """Consistent-trees' depth-first bookkeeping, vectorised output by output.

    Trees are ordered by root (in :meth:`MergerTrees.sibling_key` order), each tree's halos depth first
    with the progenitors of a halo in sibling-key order (main progenitor first), so that a halo's subtree
    is the contiguous range ``Depth_first_ID .. Last_progenitor_depthfirst_ID``.

    Returns
    -------
    dict of ndarray, shape (N,), int64
        ``depth_first``, ``last_progenitor``, ``next_coprogenitor`` (-1 for none), ``last_mainleaf``,
        ``breadth_first`` and ``root`` (global index of the tree's root).
    """
    n, desc, out = trees.n_halos, trees.descendant, trees.output
    rank = np.empty(n, dtype=np.int64)
    rank[trees.sibling_key()] = np.arange(n)
    off = trees.offsets
    size = np.ones(n, dtype=np.int64)
    for i in range(trees.n_outputs):  # progenitors are at earlier outputs: their subtrees are complete
        h = np.arange(off[i], off[i + 1])
        h = h[desc[h] >= 0]
        np.add.at(size, desc[h], size[h])
    dfs = np.empty(n, dtype=np.int64)
    nxt = np.full(n, -1, dtype=np.int64)

    def place(children, base):
        """Depth-first IDs of ``children`` grouped by ``base`` (the parent's ID + 1, or 0 for the roots)."""
        group = base
        order = np.lexsort((rank[children], group))
        c, g = children[order], group[order]
        start = np.r_[True, g[1:] != g[:-1]]
        csum = np.cumsum(size[c])
        excl = csum - size[c]
        excl -= np.maximum.accumulate(np.where(start, excl, 0))  # exclusive cumsum within each group
        dfs[c] = g + excl
        same = np.r_[g[1:] == g[:-1], False]
        nxt[c[:-1][same[:-1]]] = c[1:][same[:-1]]

    roots = np.flatnonzero(desc < 0)
    place(roots, np.zeros(roots.size, dtype=np.int64))
    # roots: one group, so "next coprogenitor" between roots is not a progenitor relation
    nxt[roots] = -1
    parent_output = np.where(desc >= 0, out[np.maximum(desc, 0)], -1)
    for j in range(trees.n_outputs - 1, 0, -1):  # parents at later outputs are placed first
        kids = np.flatnonzero(parent_output == j)
        if kids.size:
            place(kids, dfs[desc[kids]] + 1)
    nxt = np.where(nxt >= 0, dfs[np.maximum(nxt, 0)], -1)
    mainleaf = dfs.copy()
    mp = trees.main_progenitor
    for i in range(trees.n_outputs):
        h = np.arange(off[i], off[i + 1])
        has = mp[h] >= 0
        mainleaf[h[has]] = mainleaf[mp[h[has]]]
    root = trees.roots()
    bfs = np.empty(n, dtype=np.int64)
    bfs[np.lexsort((dfs, -out, dfs[root]))] = np.arange(n)
    return {"depth_first": dfs, "last_progenitor": dfs + size - 1, "next_coprogenitor": nxt,
            "last_mainleaf": mainleaf, "breadth_first": bfs, "root": root}


def last_major_merger(trees: MergerTrees, ratio: float = MAJOR_MERGER_RATIO) -> np.ndarray:
    """Scale factor of the last major merger on each halo's main branch (0 for none), shape (N,).

    A halo had a major merger when its second most massive progenitor has at least ``ratio`` times the
    main progenitor's mass; the value is then the halo's own scale factor, else its main progenitor's.
    """
    n, desc, mp = trees.n_halos, trees.descendant, trees.main_progenitor
    prog = np.flatnonzero((desc >= 0) & (mp[np.maximum(desc, 0)] != np.arange(n)))
    second = np.zeros(n)
    np.maximum.at(second, desc[prog], trees.mass[prog])
    has_mp = mp >= 0
    major = has_mp & (second >= ratio * np.where(has_mp, trees.mass[np.maximum(mp, 0)], np.inf))
    a_out = trees.a[trees.output]
    last = np.where(major, a_out, 0.0)
    off = trees.offsets
    for i in range(trees.n_outputs):
        h = np.arange(off[i], off[i + 1])
        inherit = ~major[h] & has_mp[h]
        last[h[inherit]] = last[mp[h[inherit]]]
    return last


def _table(trees: MergerTrees, cosmology: Cosmology) -> tuple[np.ndarray, np.ndarray, dict]:
    n = trees.n_halos
    book = depth_first(trees)
    a_out = trees.a[trees.output]
    desc = trees.descendant
    has = desc >= 0
    ids = np.arange(n, dtype=np.int64)
    mp_of_desc = np.where(has, trees.main_progenitor[np.maximum(desc, 0)], -2)
    rho_m = RHO_CRIT_MSUN_H_MPC_H3 * cosmology.omega_m
    rvir_kpc = 1e3 * np.cbrt(3.0 * trees.mass / (4.0 * math.pi * 200.0 * rho_m))
    zero, minus = np.zeros(n), np.full(n, -1, dtype=np.int64)
    cols = {
        "scale": a_out, "id": ids, "desc_scale": np.where(has, trees.a[trees.output[np.maximum(desc, 0)]], 0.0),
        "desc_id": desc, "num_prog": trees.n_progenitors, "pid": minus, "upid": minus, "desc_pid": minus,
        "phantom": np.zeros(n, np.int64), "sam_Mvir": trees.mass, "Mvir": trees.mass, "Rvir": rvir_kpc,
        "rs": zero, "vrms": trees.vrms, "mmp?": (mp_of_desc == ids).astype(np.int64),
        "scale_of_last_MM": last_major_merger(trees), "vmax": zero,
        "x": trees.position[:, 0], "y": trees.position[:, 1], "z": trees.position[:, 2],
        "vx": trees.velocity[:, 0], "vy": trees.velocity[:, 1], "vz": trees.velocity[:, 2],
        "Jx": zero, "Jy": zero, "Jz": zero, "Spin": zero, "Breadth_first_ID": book["breadth_first"],
        "Depth_first_ID": book["depth_first"], "Tree_root_ID": book["root"], "Orig_halo_ID": trees.halo_index,
        "Snap_num": trees.output, "Next_coprogenitor_depthfirst_ID": book["next_coprogenitor"],
        "Last_progenitor_depthfirst_ID": book["last_progenitor"],
        "Last_mainleaf_depthfirst_ID": book["last_mainleaf"], "Tidal_Force": zero, "Tidal_ID": minus,
        "Num_particles": trees.n_particles, "Shared_with_desc": trees.shared,
        "Flyby": trees.flyby.astype(np.int64),
    }
    order = np.argsort(book["depth_first"], kind="stable")
    table = np.empty((n, len(COLUMNS)), dtype=object)
    for k, (name, _, _) in enumerate(COLUMNS):
        table[:, k] = cols[name][order]
    return table, order, book


def write_consistent_trees(trees: MergerTrees, path, cosmology: Cosmology, *, overwrite: bool = True,
                           comment: str | None = None) -> Path:
    """Write ``trees`` as a consistent-trees ``tree_*.dat`` file (atomically); ytree loads it.

    Parameters
    ----------
    trees : MergerTrees
    path : str or Path
        The file (its name should end in ``.dat`` for ytree; :data:`TREE_FILE_NAME` by convention).
    cosmology : Cosmology
        Written in the header (Omega_M, Omega_L, h0) and used for ``rvir``.
    overwrite : bool
        Replace an existing file.
    comment : str, optional
        One more header line (no newline).

    Returns
    -------
    Path

    Examples
    --------
    >>> import ytree                                        # doctest: +SKIP
    >>> arbor = ytree.load(str(write_consistent_trees(trees, "tree_0_0_0.dat", cosmology)))  # doctest: +SKIP
    >>> arbor[0]["prog", "mass"].to("Msun/h")                # doctest: +SKIP
    """
    if not isinstance(trees, MergerTrees):
        raise InputError(f"trees must be MergerTrees, got {type(trees).__name__}")
    if not isinstance(cosmology, Cosmology):
        raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
    path = Path(path)
    if path.suffix != ".dat":
        raise InputError(f"a consistent-trees file name must end in .dat (ytree's test), got {path.name!r}")
    t0 = time.perf_counter()
    table, order, book = _table(trees, cosmology)
    fmts = [fmt for _, fmt, _ in COLUMNS]
    body = io.StringIO()
    if trees.n_halos:
        np.savetxt(body, table, fmt=fmts, delimiter=" ")
    lines = body.getvalue().splitlines()
    is_root = trees.descendant[order] < 0
    header = [" ".join(f"{name}({k})" for k, (name, _, _) in enumerate(COLUMNS)),
              f"Omega_M = {cosmology.omega_m:.6f}; Omega_L = {1.0 - cosmology.omega_m:.6f}; h0 = {cosmology.h:.6f}",
              f"Full box size = {trees.box_size:.6f} Mpc/h",
              f"Consistent Trees format written by emu_backend {__version__} from FoF halos linked by particle IDs "
              f"(min shared fraction {trees.config.min_shared_fraction:g}, skip one output "
              f"{trees.config.skip_one_output})",
              f"Output scale factors {' '.join(f'{a:.5f}' for a in trees.a)}"]
    if comment:
        header.append(comment.replace("\n", " "))
    header += [f"{name}: {desc}" for name, _, desc in COLUMNS]
    out = ["#" + h for h in header]
    out.append(str(int(is_root.sum())))
    ids = np.arange(trees.n_halos)[order]
    for k, line in enumerate(lines):
        if is_root[k]:
            out.append(f"#tree {ids[k]}")
        out.append(line)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text("\n".join(out) + "\n")
    logger.info("wrote %d trees, %d halos to %s in %.3f s", int(is_root.sum()), trees.n_halos, path,
                time.perf_counter() - t0)
    return path


def load_with_ytree(path):
    """Load a tree file with ytree (``ytree.load``): the Arbor of consistent-trees' reader.

    Parameters
    ----------
    path : str or Path
        A file written by :func:`write_consistent_trees`.

    Returns
    -------
    ytree Arbor
        ``arbor[i]["prog", "mass"].to("Msun/h")``: the main branch of tree ``i`` (ytree's own unit is Msun);
        ``arbor[i]["tree", "uid"]``: its halos.

    Raises
    ------
    MissingDependencyError
        Without ytree (``pip install 'emu_backend[trees]'``).
    """
    ytree = require("ytree", "trees")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"tree file {str(path)!r} does not exist")
    return ytree.load(str(path))
