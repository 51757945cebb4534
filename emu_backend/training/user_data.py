"""Training samples from user-supplied simulations: a linear z = 0 field plus particle snapshots.

Any N-body run whose particles carry Lagrangian ids can be turned into a
:class:`~emu_backend.io.training_sample.TrainingSample`: its z = 0 linear (Zel'dovich) displacement is
the input, the displacement ``x - q`` and velocity of every particle at each snapshot are the
targets. :func:`sample_from_snapshots` does it for :class:`Snapshot` objects (from our backends or
any reader in :mod:`emu_backend.io`); :func:`sample_from_quijote` for a Quijote simulation folder
(with the readers of :mod:`emu_backend.io.quijote`).

Unwrapping: a snapshot only knows positions modulo the box. The stored target displacement is
continuous in time (it may leave the box), so each particle takes the periodic image of ``x - q``
closest to its linear prediction ``D(z) Psi``; any run whose particles moved less than half a box
away from that prediction (every cosmological run at these resolutions) is recovered exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..checks import check_positive
from ..cosmology.params import Cosmology
from ..datatypes.snapshot import Snapshot
from ..errors import InputError
from ..ics.conditions import InitialConditions
from ..io.quijote import QuijoteSimulation
from ..io.training_sample import TrainingSample

__all__ = ["sample_from_snapshots", "sample_from_quijote", "unwrap_displacement"]

logger = logging.getLogger(__name__)

#: Relative tolerance for "the same box size" and "the same redshift".
_RTOL = 1e-6


def unwrap_displacement(displacement, reference, box_size: float) -> np.ndarray:
    """The periodic image of ``displacement`` closest to ``reference`` (both [Mpc/h], same shape).

    Returns ``reference + d - L round(d / L)`` with ``d = displacement - reference``, float64.

    Examples
    --------
    >>> float(unwrap_displacement(np.array([-9.0]), np.array([0.8]), 10.0)[0])
    1.0
    """
    dis = np.asarray(displacement, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    d = dis - ref
    return ref + d - box_size * np.round(d / box_size)


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_RTOL)


def sample_from_snapshots(linear, snapshots, *, cosmology: Cosmology, box_size: float | None = None,
                          seed: int | None = None, provenance: dict | None = None) -> TrainingSample:
    """A training sample from a run's z = 0 linear field and its snapshots.

    Parameters
    ----------
    linear : InitialConditions or ndarray, shape (3, n, n, n)
        The run's z = 0 linear ZA displacement [Mpc/h] (or the ICs carrying it).
    snapshots : Snapshot or sequence of Snapshot
        The run at one or more distinct redshifts in [0, 20], any order; every particle present
        (ids a permutation of the ``n^3`` Lagrangian grid).
    cosmology : Cosmology
        The run's cosmology (its Omega_m must equal the snapshots').
    box_size : float, optional
        Box side [Mpc/h]; default: that of the ICs or the snapshots. Must agree with both.
    seed : int, optional
        White-noise seed, if known; default ``linear.seed`` for InitialConditions.
    provenance : dict, optional
        JSON-serialisable description, merged over what is recorded automatically (the ICs'
        description and the first snapshot's meta).

    Returns
    -------
    TrainingSample
        Redshifts in increasing order; displacements unwrapped around ``D(z) Psi`` (see the module).

    Raises
    ------
    InputError
        Grids or boxes differ, ids incomplete, a redshift repeated or out of [0, 20], Omega_m of a
        snapshot differs from ``cosmology``.

    Examples
    --------
    >>> from emu_backend.cosmology import QUIJOTE_FIDUCIAL as C
    >>> from emu_backend import InitialConditions, simulate
    >>> ics = InitialConditions.from_noise(8, None, C, seed=3)
    >>> s = sample_from_snapshots(ics, simulate(ics, C, z=[1.0, 0.0], backend="2lpt"), cosmology=C)
    >>> s.z.tolist(), s.seed, s.grid
    ([0.0, 1.0], 3, 8)
    """
    if not isinstance(cosmology, Cosmology):
        raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
    ics = linear if isinstance(linear, InitialConditions) else None
    psi = np.asarray(linear.displacement if ics is not None else linear)
    if psi.ndim != 4 or psi.shape[0] != 3 or len(set(psi.shape[1:])) != 1:
        raise InputError(f"linear displacement must have shape (3, n, n, n), got {psi.shape}")
    n = psi.shape[1]
    snaps = [snapshots] if isinstance(snapshots, Snapshot) else list(snapshots) \
        if isinstance(snapshots, Sequence) else None
    if not snaps or not all(isinstance(s, Snapshot) for s in snaps):
        raise InputError(f"snapshots must be a Snapshot or a non-empty sequence of Snapshots, got {snapshots!r:.80}")
    for i, s in enumerate(snaps):
        if s.grid != n:
            raise InputError(f"snapshot {i} has {s.grid}^3 particles but the linear field is {n}^3")
    boxes = {"box_size": box_size} if box_size is not None else {}
    if ics is not None:
        boxes["the ICs' box"] = ics.box_size
    boxes.update({f"snapshot {i} (z = {s.z:.6g})": s.box_size for i, s in enumerate(snaps)})
    first_key, box = next(iter(boxes.items()))
    box = check_positive(box, "box_size", unit="Mpc/h")
    for key, value in boxes.items():
        if not _same(float(value), float(box)):
            raise InputError(f"{key} is {value!r} Mpc/h but {first_key} is {box!r} Mpc/h: not the same run")
    zs = []
    for i, s in enumerate(snaps):
        if s.ids.shape != (n**3,) or np.bincount(s.ids, minlength=n**3).max(initial=0) != 1:
            raise InputError(f"snapshot {i}: ids are not a complete permutation of the {n}^3 Lagrangian grid")
        if not _same(s.cosmology.omega_m, cosmology.omega_m):
            raise InputError(f"snapshot {i} has Omega_m = {s.cosmology.omega_m!r} but cosmology has "
                             f"{cosmology.omega_m!r}")
        if any(math.isclose(s.z, z, rel_tol=_RTOL, abs_tol=1e-9) for z in zs):
            raise InputError(f"snapshot {i} repeats redshift z = {s.z!r}; each snapshot needs its own redshift")
        if not -1e-9 <= s.z <= 20.0:
            raise InputError(f"snapshot {i}: z = {s.z!r} is outside the allowed range [0, 20]")
        zs.append(s.z)
    order = np.argsort(zs)
    snaps = [snaps[i] for i in order]
    z = np.array([max(0.0, snaps[i].z) for i in range(len(snaps))])  # z = -1e-16 round-off of a = 1
    if seed is None and ics is not None:
        seed = ics.seed
    psi64 = psi.astype(np.float64)
    dis = np.empty((len(snaps), 3, n, n, n), np.float32)
    vel = np.empty_like(dis)
    for t, s in enumerate(snaps):
        dis[t] = unwrap_displacement(s.displacement_field(), cosmology.growth_factor(z[t]) * psi64, float(box))
        vel[t] = s.velocity_field()
    meta = {k: v for k, v in snaps[0].meta.items() if k not in ("z", "a")}
    prov = {"source": "snapshots", **({"ics": ics.describe()} if ics is not None else {}),
            "snapshot_meta": meta, **(provenance or {})}
    logger.info("training sample from %d snapshot(s): n = %d, L = %g Mpc/h, z = %s", len(snaps), n, box, z.tolist())
    return TrainingSample(psi, z, dis, vel, float(box), cosmology, seed=seed, provenance=prov)


def sample_from_quijote(root, sim: int | None, snapnums: Sequence[int], *, correct_2lpt: bool = True,
                        cosmology: Cosmology | None = None) -> TrainingSample:
    """A training sample from a Quijote simulation: the linear field of its ICs and some snapshots.

    Uses :class:`emu_backend.io.quijote.QuijoteSimulation`: the cosmology is the latin-hypercube
    row ``sim`` (or the IC header), the seed that of ``ICs/2LPT.param`` (or ``sim``), and the z = 0
    linear displacement is recovered from the 2LPT ICs
    (:func:`emu_backend.io.quijote.linear_displacement_from_ics`).

    Parameters
    ----------
    root : str or Path
        The folder holding ``latin_hypercube_params.txt`` and ``<sim>/``, or (``sim=None``) the
        simulation folder itself.
    sim : int or None
        Latin-hypercube index.
    snapnums : sequence of int
        Snapshot numbers (``snapdir_XXX``) to use as targets.
    correct_2lpt : bool
        Remove the second-order part of the IC displacement (Quijote's ICs are 2LPT).
    cosmology : Cosmology, optional
        Override the cosmology read from the folder.

    Returns
    -------
    TrainingSample
    """

    if isinstance(snapnums, (str, bytes)) or not isinstance(snapnums, Sequence) or not snapnums:
        raise InputError(f"snapnums must be a non-empty sequence of snapshot numbers, got {snapnums!r}")
    qs = QuijoteSimulation.open(Path(root), sim)
    cosmo = qs.cosmology() if cosmology is None else cosmology
    ics_snap, lmap = qs.read_ics_with_map(cosmo)  # one ID map for every snapshot of the simulation
    psi = qs.linear_displacement(ics_snap, correct_2lpt=correct_2lpt)
    snaps = [qs.read_snapshot(s, cosmo, lagrangian_map=lmap) for s in snapnums]
    prov = {"source": "quijote", "folder": str(qs.folder), "sim": qs.sim, "snapnums": [int(s) for s in snapnums],
            "ics_z": ics_snap.z, "correct_2lpt": bool(correct_2lpt)}
    return sample_from_snapshots(psi, snaps, cosmology=cosmo, box_size=ics_snap.box_size, seed=qs.seed(),
                                 provenance=prov)
