"""The particle lightcone, shell by shell: outputs at the shell edges, crossings, per-shell files and maps.

Shells are uniform in comoving distance between ``chi(z_min)`` and ``chi(z_max)``. A shell needs the
snapshots at its two edges (and at ``substeps - 1`` times between them, uniform in ``chi``); only two
snapshots are held at a time, and particles go to the shell's file one replica at a time, so memory is
bounded by a snapshot pair and one replica's crossings, not by the cone. A shell whose file exists with
the run's digest is skipped (resume).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..checks import check_bool, check_choice, check_int, check_real, check_reals
from ..cosmology.distance import C_KM_S, DistanceTable
from ..datatypes.snapshot import Snapshot
from ..errors import ComputationError, InputError
from ..validation.mesh import density_mesh
from ..validation.power import power_spectrum
from .crossing import INTERPOLATIONS, crosses, solve_crossing
from .geometry import FULL_SKY, Cone, radec, replicas
from .maps import MapAccumulator
from .store import ShellWriter, check_digest, read_shell_attrs, shell_path

__all__ = ["LightconeSpec", "ShellSummary", "build_lightcone", "particle_arrays", "spec_digest"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LightconeSpec:
    """What lightcone to build.

    Parameters
    ----------
    observer : (float, float, float) or None
        Observer position [Mpc/h] in the box frame; None: the box centre.
    z_min, z_max : float
        Redshift range, ``0 <= z_min < z_max``.
    n_shells : int
        Shells, uniform in comoving distance.
    substeps : int
        Outputs per shell interval (1: only the shell edges; k: ``k - 1`` more emulator evaluations between
        them, which converge to the emulator evaluated at each crossing time).
    interpolation : {"hermite", "linear"}
        Trajectory between two outputs (see :mod:`.crossing`).
    cone : Cone
        The opening (default the full sky).
    nside : int
        HEALPix resolution of the maps.
    source_redshifts : tuple of float
        Born convergence sources, in ``(z_min, z_max]``; default ``(z_max,)``.
    particles : bool
        Write the particles (False: maps and P(k) only).
    """

    observer: tuple | None = None
    z_min: float = 0.0
    z_max: float = 1.0
    n_shells: int = 8
    substeps: int = 1
    interpolation: str = "hermite"
    cone: Cone = field(default_factory=lambda: FULL_SKY)
    nside: int = 64
    source_redshifts: tuple = ()
    particles: bool = True

    def __post_init__(self):
        def put(k, v):
            object.__setattr__(self, k, v)

        if self.observer is not None:
            obs = check_reals(self.observer, "observer", unit="Mpc/h")
            if len(obs) != 3:
                raise InputError(f"observer must be 3 coordinates [Mpc/h], got {self.observer!r}")
            put("observer", tuple(obs))
        put("z_min", check_real(self.z_min, "z_min", 0.0))
        put("z_max", check_real(self.z_max, "z_max", self.z_min, lo_open=True))
        put("n_shells", check_int(self.n_shells, "n_shells", 1))
        put("substeps", check_int(self.substeps, "substeps", 1))
        check_choice(self.interpolation, "interpolation", INTERPOLATIONS)
        if not isinstance(self.cone, Cone):
            raise InputError(f"cone must be a Cone, got {type(self.cone).__name__}")
        put("nside", check_int(self.nside, "nside", 1))
        if self.nside & (self.nside - 1):
            raise InputError(f"nside must be a power of 2, got {self.nside}")
        src = tuple(check_reals(self.source_redshifts, "source_redshifts", self.z_min, self.z_max, lo_open=True)) \
            if len(self.source_redshifts) else (self.z_max,)
        put("source_redshifts", src)
        check_bool(self.particles, "particles")

    def to_dict(self) -> dict:
        return {"observer": None if self.observer is None else list(self.observer), "z_min": self.z_min,
                "z_max": self.z_max, "n_shells": self.n_shells, "substeps": self.substeps,
                "interpolation": self.interpolation, "cone": self.cone.to_dict(), "nside": self.nside,
                "source_redshifts": list(self.source_redshifts), "particles": self.particles}

    def edges(self, table: DistanceTable) -> tuple[np.ndarray, np.ndarray]:
        """Shell edges: ``(chi, z)``, each of shape ``(n_shells + 1,)``."""
        chi = np.linspace(table.distance(self.z_min), table.distance(self.z_max), self.n_shells + 1)
        z = table.redshift(chi)
        z[0], z[-1] = self.z_min, self.z_max
        return chi, z


def spec_digest(spec: LightconeSpec, extra: dict) -> str:
    """SHA-256 of the spec and the run's other inputs (ICs, cosmology, backend): what a resume must match."""
    blob = json.dumps({"spec": spec.to_dict(), **extra}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class ShellSummary:
    """One shell of a build: index, file, particle count, replicas, and seconds (0 when reused)."""

    index: int
    path: Path
    n_particles: int
    n_replicas: int
    seconds: float
    reused: bool


def particle_arrays(snap: Snapshot) -> tuple[np.ndarray, np.ndarray]:
    """Unwrapped positions ``q + s`` [Mpc/h] (float64) and velocities [km/s], both (N, 3) in Lagrangian-id order.

    The displacement ``s`` is the minimal periodic image of ``position - q`` (``q`` the particle's grid point),
    so consecutive outputs of a particle give a continuous trajectory.
    """
    n, box = snap.grid, snap.box_size
    order = np.argsort(snap.ids, kind="stable")
    ids = snap.ids[order]
    q = np.stack(np.unravel_index(ids, (n, n, n)), axis=1) * (box / n)
    s = snap.positions[order].astype(np.float64) - q
    s -= box * np.round(s / box)
    return q + s, snap.velocities[order].astype(np.float64)


def _power(snap: Snapshot):
    delta = density_mesh(snap.positions, snap.box_size, snap.grid, window="cic", interlace=True)
    return power_spectrum(delta, snap.box_size)


class _Outputs:
    """Snapshots at requested redshifts, two kept: the current pair of a step."""

    def __init__(self, snapshot_at: Callable[[float], Snapshot]):
        self._at, self._cache = snapshot_at, {}

    def get(self, z: float):
        if z not in self._cache:
            snap = self._at(float(z))
            if not isinstance(snap, Snapshot):
                raise ComputationError(f"snapshot_at({z}) returned {type(snap).__name__}, not a Snapshot")
            if abs(snap.z - z) > 1e-6 * (1 + z):
                raise ComputationError(f"snapshot_at({z}) returned a snapshot at z = {snap.z}")
            x, v = particle_arrays(snap)
            self._cache = {k: val for k, val in self._cache.items() if k in self._keep} | {z: (snap, x, v)}
        return self._cache[z]

    def keep(self, zs):
        self._keep = set(zs)


def build_lightcone(snapshot_at: Callable[[float], Snapshot], spec: LightconeSpec, folder, *, digest: str,
                    progress: bool = False) -> list[ShellSummary]:
    """Build the particle lightcone of ``spec`` into ``folder`` (one ``shell_XXX.h5`` per shell).

    Parameters
    ----------
    snapshot_at : callable
        ``snapshot_at(z) -> Snapshot`` at redshift ``z`` (all of one box, grid, cosmology and particle ids);
        e.g. the emulator through :func:`emu_backend.simulate`.
    spec : LightconeSpec
    folder : str or Path
        Output folder (the caller holds its lock).
    digest : str
        The run's :func:`spec_digest`; shell files carrying it are reused.
    progress : bool
        A progress bar over shells.

    Returns
    -------
    list of ShellSummary
    """
    if not isinstance(spec, LightconeSpec):
        raise InputError(f"spec must be a LightconeSpec, got {type(spec).__name__}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".shell_*.h5.*.part"):  # a shell a killed run was writing (the caller holds the lock)
        logger.info("removing %s, left by a killed run", stale)
        stale.unlink()
    outputs = _Outputs(snapshot_at)
    outputs.keep(())
    summaries, first, table = [], None, None
    for i in tqdm(range(spec.n_shells), desc="lightcone shells", disable=not progress):
        path = shell_path(folder, i)
        if path.is_file():
            if not check_digest(path, digest):
                raise InputError(f"{str(path)!r} belongs to another lightcone run; use a new output folder")
            attrs = read_shell_attrs(path)
            summaries.append(ShellSummary(i, path, int(attrs["n_particles"]), int(attrs["n_replicas"]), 0.0, True))
            logger.info("lightcone shell %d: reusing %s", i, path)
            continue
        if first is None:
            first = outputs.get(spec.z_min)[0]  # the box, grid, cosmology of the run
            table = DistanceTable(first.cosmology.omega_m, spec.z_max * 1.01 + 0.01)
        summaries.append(_build_shell(i, path, outputs, spec, first, digest, table))
    return summaries


def _build_shell(i: int, path: Path, outputs: _Outputs, spec: LightconeSpec, ref: Snapshot, digest: str,
                 table: DistanceTable):
    t0 = time.perf_counter()
    box, n, om = ref.box_size, ref.grid, ref.cosmology.omega_m
    chi_edges, z_edges = spec.edges(table)
    obs = np.full(3, box / 2) if spec.observer is None else np.asarray(spec.observer, dtype=np.float64)
    chi_lo, chi_hi = chi_edges[i], chi_edges[i + 1]
    chi_steps = np.linspace(chi_lo, chi_hi, spec.substeps + 1)
    z_steps = table.redshift(chi_steps)
    z_steps[0], z_steps[-1] = z_edges[i], z_edges[i + 1]
    nbar = n**3 / box**3
    source_chis = table.distance(np.asarray(spec.source_redshifts))
    acc = MapAccumulator(spec.nside, nbar, chi_lo, chi_hi, source_chis, table, om)
    attrs = {"config_digest": digest, "shell": i, "z_lo": z_edges[i], "z_hi": z_edges[i + 1], "chi_lo": chi_lo,
             "chi_hi": chi_hi, "step_redshifts": z_steps, "observer": obs, "box_size": box, "grid": n,
             "interpolation": spec.interpolation, "omega_m": om, "cone": json.dumps(spec.cone.to_dict())}
    n_reps = 0
    with ShellWriter(path, attrs) as writer:
        for j in range(spec.substeps):
            outputs.keep((z_steps[j], z_steps[j + 1]))
            snap_a, xa_box, va = outputs.get(z_steps[j])
            if j == 0:
                p_lo = _power(snap_a)
            snap_b, xb_box, vb = outputs.get(z_steps[j + 1])
            if (snap_a.grid, snap_a.box_size) != (n, box) or (snap_b.grid, snap_b.box_size) != (n, box):
                raise ComputationError("the snapshots of a lightcone must share one box and grid")
            q = np.stack(np.unravel_index(np.arange(n**3), (n, n, n)), axis=1) * (box / n)
            pad = max(np.abs(xa_box - q).max(), np.abs(xb_box - q).max()) + 1e-6
            reps = replicas(box, obs, chi_steps[j], chi_steps[j + 1], pad, spec.cone)
            n_reps = max(n_reps, len(reps))
            for r in reps:
                shift = r * box - obs
                xa, xb = xa_box + shift, xb_box + shift
                sel = np.flatnonzero(crosses(xa, xb, chi_steps[j], chi_steps[j + 1]))
                if not sel.size:
                    continue
                c = solve_crossing(xa[sel], va[sel], xb[sel], vb[sel], chi_steps[j], chi_steps[j + 1],
                                   spec.interpolation)
                inside = spec.cone.contains(c.position)
                if not inside.all():
                    sel, c = sel[inside], type(c)(c.chi[inside], c.position[inside], c.velocity[inside])
                if not sel.size:
                    continue
                acc.add(c.position, c.chi)
                if spec.particles:
                    _write(writer, sel, c, r, table)
                else:
                    writer.n += sel.size  # counted, not written
        counts, kappa = acc.finish()
        p_hi = _power(snap_b)
        writer.finish({"counts": counts, "kappa": kappa},
                      {"nside": spec.nside, "volume": acc.volume, "nbar": nbar,
                       "source_redshifts": np.asarray(spec.source_redshifts), "source_chis": source_chis},
                      {"k": p_hi.k, "power_lo": p_lo.power, "power_hi": p_hi.power},
                      {"shot_noise": box**3 / n**3, "z_lo": z_edges[i], "z_hi": z_edges[i + 1]},
                      n_replicas=n_reps)
        count = writer.n
    seconds = time.perf_counter() - t0
    logger.info("lightcone shell %d [z %.4f, %.4f]: %d particles, %d replicas, %.1f s", i, z_edges[i],
                z_edges[i + 1], count, n_reps, seconds)
    return ShellSummary(i, path, count, n_reps, seconds, False)


def _write(writer: ShellWriter, sel, c, r, table: DistanceTable) -> None:
    ra, dec = radec(c.position)
    z_cos = table.redshift(c.chi)
    r_hat = c.position / np.linalg.norm(c.position, axis=1)[:, None]
    v_los = np.einsum("ij,ij->i", c.velocity, r_hat)
    writer.append(position=c.position, velocity=c.velocity, chi=c.chi, ra=ra, dec=dec, z_cos=z_cos,
                  z_obs=(1 + z_cos) * (1 + v_los / C_KM_S) - 1, v_los=v_los, id=sel,
                  replica=np.broadcast_to(r, (sel.size, 3)))
