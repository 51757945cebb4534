"""Lightcone accuracy and cost with the shipped emulator (numbers for docs/lightcone.md).

1. Interpolation error: for intervals ``[z_a, z_b]`` of several widths (``--widths`` in redshift, centred on
   ``--z-centre``), the emulator is evaluated at both ends and at the interval's midpoint in comoving
   distance; the cubic Hermite trajectory (with the emulated velocities, dx/dchi = -v/c) and the straight
   line between the end positions are compared with the emulator evaluated exactly at the midpoint
   (the worst place for both): rms and largest position error [Mpc/h], rms velocity error [km/s].
   A position error moves the lightcone crossing by its radial part, so it bounds the crossing error.
2. Substeps: the crossings of a shell built from its two edge outputs (``substeps=1``) against the same
   shell built with ``--ref-substeps`` outputs (the emulator at many times, converging on the emulator at each
   crossing), matched by (Lagrangian id, replica): rms and largest difference of the crossing distance.
3. Cost: a ``--grid``^3 box (trained resolution), z from ``--z-min`` to ``--z-max`` in ``--n-shells`` shells,
   a cone of ``--radius`` degrees: particles, wall time with and without the emulator's outputs,
   particles per second, peak resident memory.

Prints rates and ratios, never pass/fail. ``--smoke`` runs the smallest sizes that pass every code path.

Usage: python benchmarks/bench_lightcone.py [--grid 64] [--z-max 1] [--radius 5] [--n-shells 8] [--widths ...]
       [--items error substeps cost] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time

import numpy as np

import emu_backend as eb
from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.cosmology.distance import DistanceTable
from emu_backend.lightcone.build import LightconeSpec, build_lightcone, particle_arrays
from emu_backend.lightcone.crossing import trajectory
from emu_backend.lightcone.geometry import Cone
from emu_backend.lightcone.store import read_shell
from emu_backend.simulator import get_backend

COSMO = QUIJOTE_FIDUCIAL


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _snapshots(grid: int, seed: int = 1):
    ics = eb.InitialConditions.from_noise(grid, None, COSMO, seed=seed)
    backend = get_backend("emulator")
    calls = {"n": 0, "seconds": 0.0, "peak_rss_after_first_output_mib": None}

    def at(z):
        t = time.perf_counter()
        snap = eb.simulate(ics, COSMO, z=[z], backend=backend)[0]
        calls["n"] += 1
        calls["seconds"] += time.perf_counter() - t
        if calls["peak_rss_after_first_output_mib"] is None:
            calls["peak_rss_after_first_output_mib"] = _peak_rss_mib()
        return snap
    return at, calls


def interpolation_error(at, widths, z_centre: float) -> list[dict]:
    table = DistanceTable(COSMO.omega_m, z_centre + max(widths) + 0.5)
    rows = []
    for w in widths:
        za, zb = z_centre - w / 2, z_centre + w / 2
        ca, cb = table.distance(za), table.distance(zb)
        zm = float(table.redshift(0.5 * (ca + cb)))
        xa, va = particle_arrays(at(za))
        xb, vb = particle_arrays(at(zb))
        xm, vm = particle_arrays(at(zm))
        s = np.full(len(xa), 0.5)
        row = {"z_a": za, "z_b": zb, "z_mid": zm, "dchi_mpc_h": float(cb - ca),
               "displacement_rms_mpc_h": float(np.sqrt(np.mean(np.sum((xb - xa) ** 2, 1))))}
        for name in ("hermite", "linear"):
            x, v = trajectory(s, xa, va, xb, vb, float(cb - ca), name)
            dx = np.linalg.norm(x - xm, axis=1)
            row[name] = {"pos_rms_mpc_h": float(np.sqrt(np.mean(dx**2))), "pos_max_mpc_h": float(dx.max()),
                         "vel_rms_km_s": float(np.sqrt(np.mean(np.sum((v - vm) ** 2, 1))))}
        rows.append(row)
    return rows


def substep_error(at, z_lo: float, z_hi: float, radius: float, ref_substeps: int) -> dict:
    spec = dict(z_min=z_lo, z_max=z_hi, n_shells=1, nside=8, cone=Cone(20.0, 30.0, radius))
    out = {}
    data = {}
    for sub in (1, ref_substeps):
        for interp in (("hermite", "linear") if sub == 1 else ("hermite",)):
            with tempfile.TemporaryDirectory() as d:
                build_lightcone(at, LightconeSpec(substeps=sub, interpolation=interp, **spec), d, digest="b")
                s = read_shell(f"{d}/shell_000.h5", fields=("id", "replica", "chi", "position"))
            key = s["id"] * 10**9 + (s["replica"] + 500) @ np.array([10**6, 10**3, 1])
            data[(sub, interp)] = dict(zip(key.tolist(), zip(s["chi"], s["position"])))
    ref = data[(ref_substeps, "hermite")]
    for interp in ("hermite", "linear"):
        test = data[(1, interp)]
        common = sorted(set(ref) & set(test))
        dchi = np.array([test[k][0] - ref[k][0] for k in common])
        dpos = np.array([np.linalg.norm(test[k][1] - ref[k][1]) for k in common])
        out[interp] = {"matched": len(common), "only_one_side": len(set(ref) ^ set(test)),
                       "chi_rms_mpc_h": float(np.sqrt(np.mean(dchi**2))), "chi_max_mpc_h": float(np.abs(dchi).max()),
                       "pos_rms_mpc_h": float(np.sqrt(np.mean(dpos**2))), "pos_max_mpc_h": float(dpos.max())}
    out.update(z_lo=z_lo, z_hi=z_hi, ref_substeps=ref_substeps)
    return out


def cost(grid: int, z_min: float, z_max: float, n_shells: int, radius: float) -> dict:
    at, calls = _snapshots(grid)
    spec = LightconeSpec(z_min=z_min, z_max=z_max, n_shells=n_shells, nside=64, cone=Cone(20.0, 30.0, radius),
                         source_redshifts=(z_max,))
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        shells = build_lightcone(at, spec, d, digest="cost")
        wall = time.perf_counter() - t
        size = sum(s.path.stat().st_size for s in shells)
    n = sum(s.n_particles for s in shells)
    lightcone_s = wall - calls["seconds"]
    return {"grid": grid, "box_size_mpc_h": 1000 * grid / 512, "z": [z_min, z_max], "cone_radius_deg": radius,
            "n_shells": n_shells, "particles": n, "replicas_largest_shell": max(s.n_replicas for s in shells),
            "wall_s": wall, "emulator_outputs": calls["n"], "emulator_s": calls["seconds"],
            "lightcone_s": lightcone_s, "particles_per_s_total": n / wall,
            "particles_per_s_lightcone": n / lightcone_s, "bytes_written": size, "bytes_per_particle": size / max(n, 1),
            "peak_rss_mib": _peak_rss_mib(),
            "peak_rss_after_first_output_mib": calls["peak_rss_after_first_output_mib"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", type=int, default=64)
    p.add_argument("--error-grid", type=int, default=32, help="box of items 1 and 2")
    p.add_argument("--z-min", type=float, default=0.0)
    p.add_argument("--z-max", type=float, default=1.0)
    p.add_argument("--n-shells", type=int, default=8)
    p.add_argument("--radius", type=float, default=5.0, help="cone radius [deg] of item 3")
    p.add_argument("--widths", type=float, nargs="+", default=[0.025, 0.05, 0.1, 0.2, 0.4])
    p.add_argument("--z-centre", type=float, default=0.5)
    p.add_argument("--ref-substeps", type=int, default=8)
    p.add_argument("--items", nargs="+", choices=("error", "substeps", "cost"), default=["error", "substeps", "cost"],
                   help="what to measure (run cost alone for a clean peak memory)")
    p.add_argument("--smoke", action="store_true", help="smallest sizes, every code path")
    args = p.parse_args()
    if args.smoke:
        args.grid, args.error_grid, args.z_min, args.z_max, args.n_shells = 8, 8, 0.02, 0.05, 2
        args.widths, args.radius, args.ref_substeps = [0.05], 10.0, 2
    print(json.dumps({"machine": platform.processor() or platform.machine(), "smoke": args.smoke}))
    if "error" in args.items or "substeps" in args.items:
        at, _ = _snapshots(args.error_grid)
    if "error" in args.items:
        for row in interpolation_error(at, args.widths, args.z_centre):
            print(json.dumps({"interpolation_error": row}))
    if "substeps" in args.items:
        z_lo, z_hi = (0.02, 0.05) if args.smoke else (0.3, 0.4)
        print(json.dumps({"substeps": substep_error(at, z_lo, z_hi, 10.0 if args.smoke else 4.0, args.ref_substeps)}))
    if "cost" in args.items:
        print(json.dumps({"cost": cost(args.grid, args.z_min, args.z_max, args.n_shells, args.radius)}))


if __name__ == "__main__":
    main()
