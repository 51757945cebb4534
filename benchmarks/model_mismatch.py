"""Model mismatch of field-level inference (issue #17): the same MAP on closed-loop data and on PM data.

From one white-noise seed, two observations of the same initial conditions at the same grid, redshift and
noise level (Gaussian, ``--noise-sigma`` per voxel, the same noise seed):

* closed loop: the shipped emulator's density (``synthetic_observation(..., backend="emulator")``), the
  forward model itself;
* PM data: pmwd's particle-mesh density (``backend="pmwd"``, ``--pmwd-mesh-factor``, ``--pmwd-steps``).

On each, the same MAP (L-BFGS, ``find_map``) of the white noise with Omega_m and sigma8 free (uniform priors:
Omega_m the emulator's trained range, sigma8 0.6-1.0; started at the prior midpoints, the noise at zero),
with the emulator as the forward model. Printed: a table of r(k) of each MAP noise with the true white noise
per k bin, the Omega_m and sigma8 estimates with their bias against the truth (the data's cosmology), the
scales where r > 0.9, the gradients and the wall time of each MAP. The MAP has no posterior std: the biases
are in MAP terms (and, as docs/field_level.md says, the joint MAP of sigma8 is not an estimate of sigma8:
the joint mode drifts toward the upper edge of its prior), so the closed loop is the reference that the PM
run is compared with at the same budget.

Default: 32^3 particles in 62.5 Mpc/h (the emulator's trained cell), z = 0.5, noise 0.5, at most 6 outer
L-BFGS iterations of 10 (at most 72 gradients per MAP at 4-6 s each: 12-14 minutes in all on one core of
machine B). ``--smoke``: 8^3, a 2-step pmwd run and 1 L-BFGS iteration of 1: exercises every code path in
CI (~45 s, most of it pmwd's JAX compilation); its numbers mean nothing. Results: docs/field_level.md,
"Model mismatch".

Usage: python benchmarks/model_mismatch.py [--grid 32] [--z 0.5] [--noise-sigma 0.5] [--seed 1]
       [--map-iterations 6] [--map-inner 10] [--pmwd-mesh-factor 3] [--pmwd-steps 32] [--json PATH] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from _timing import smoke_banner

from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.differentiable import ForwardModel
from emu_backend.fieldlevel import FieldLikelihood, find_map
from emu_backend.fieldlevel.bias import bias_section, table_cell
from emu_backend.fieldlevel.observations import synthetic_observation

PARAMETERS = ("omega_m", "sigma8")


def k_edges(grid: int, box: float) -> np.ndarray:
    """The report's bins (``emu-backend reconstruct``): fundamental to Nyquist, ``max(3, N/2)`` edges."""
    return np.linspace(2 * np.pi / box, np.pi * grid / box, max(3, grid // 2))


def run_one(label: str, backend: str, args, backend_options: dict) -> dict:
    """Observation of ``backend``, the joint MAP on it with the emulator, and its bias section."""
    t0 = time.perf_counter()
    obs = synthetic_observation(args.grid, args.z, args.noise_sigma, seed=args.seed, backend=backend,
                                cosmology=QUIJOTE_FIDUCIAL, **backend_options)
    t_data = time.perf_counter() - t0
    fm = ForwardModel(args.grid, obs.box_size, args.z, output="density", cosmology=obs.cosmology)
    lik = FieldLikelihood(fm, obs.density, noise_sigma=args.noise_sigma, infer=PARAMETERS)
    logging.info("%s: data from %s in %.1f s; MAP (%d x %d)", label, backend, t_data, args.map_iterations,
                 args.map_inner)
    t0 = time.perf_counter()
    best = find_map(lik, max_iterations=args.map_iterations, inner_iterations=args.map_inner)
    t_map = time.perf_counter() - t0
    estimates = {name: {"value": best.theta[name], "std": None, "estimator": "map"} for name in lik.infer}
    section = bias_section(obs, {"map": best.noise}, estimates, k_edges(args.grid, obs.box_size))
    return {"label": label, "backend": backend, "data_seconds": t_data, "map_seconds": t_map,
            "gradients": best.evaluations, "iterations": best.iterations, "converged": best.converged,
            "log_prob": best.log_prob, "data_std": float(obs.density.std()), "bias": section,
            "priors": {name: list(lik.priors.bounds(name)) for name in lik.infer}}


def table(rows: list) -> str:
    """The printed (markdown) table of the runs."""
    a, b = rows
    ra, rb = a["bias"]["r_k"], b["bias"]["r_k"]
    lines = [f"| k [h/Mpc] | modes | r MAP, {a['label']} | r MAP, {b['label']} |", "|---|---|---|---|"]
    for k, m, x, y in zip(ra["k"], ra["n_modes"], ra["fields"]["map"]["r"], rb["fields"]["map"]["r"]):
        lines.append(f"| {k:.3f} | {m} | {x:.3f} | {y:.3f} |")
    lines += ["", "| | " + " | ".join(r["label"] for r in rows) + " |", "|---|---|---|"]
    for name in PARAMETERS:
        truth = a["bias"]["parameters"][name]["truth"]
        cells = [f"{table_cell(r['bias']['parameters'][name]['estimate'])} "
                 f"({table_cell(r['bias']['parameters'][name]['bias'], '+.4f')})" for r in rows]
        lo, hi = a["priors"][name]
        lines.append(f"| {name} MAP (bias; truth {truth:g}, start {0.5 * (lo + hi):.4f}) | " + " | ".join(cells)
                     + " |")
    for key, what in (("k_max_contiguous", "r > 0.9 up to k [h/Mpc]"), ("k_max_above", "largest k with r > 0.9")):
        lines.append(f"| {what} | " + " | ".join(table_cell(r["bias"]["r_k"]["fields"]["map"][key], ".3f")
                                                for r in rows) + " |")
    lines.append("| MAP gradients (iterations, converged) | " + " | ".join(
        f"{r['gradients']} ({r['iterations']}, {r['converged']})" for r in rows) + " |")
    lines.append("| MAP wall time [s] | " + " | ".join(f"{r['map_seconds']:.0f}" for r in rows) + " |")
    lines.append("| data generation [s] | " + " | ".join(f"{r['data_seconds']:.1f}" for r in rows) + " |")
    lines.append("| std of the observed density | " + " | ".join(f"{r['data_std']:.3f}" for r in rows) + " |")
    return "\n".join(lines)


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", type=int, default=32, help="particles (and mesh cells) per side (default 32)")
    p.add_argument("--z", type=float, default=0.5, help="redshift of the observations (default 0.5)")
    p.add_argument("--noise-sigma", type=float, default=0.5, help="observation noise per voxel (default 0.5)")
    p.add_argument("--seed", type=int, default=1, help="white-noise seed of the ICs (default 1)")
    p.add_argument("--map-iterations", type=int, default=6, help="outer L-BFGS iterations at most (default 6)")
    p.add_argument("--map-inner", type=int, default=10, help="L-BFGS iterations per outer iteration (default 10)")
    p.add_argument("--pmwd-mesh-factor", type=int, default=3, help="pmwd mesh points per particle per side (3)")
    p.add_argument("--pmwd-steps", type=int, default=32, help="pmwd N-body steps (32)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--smoke", action="store_true", help="8^3, 2 pmwd steps, 1 L-BFGS iteration: numbers mean nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    smoke_banner(args.smoke)
    if args.smoke:
        args.grid, args.map_iterations, args.map_inner, args.pmwd_mesh_factor, args.pmwd_steps = 8, 1, 1, 1, 2
    header = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "commit": _commit(), "smoke": args.smoke, "grid": args.grid,
              "box_size": args.grid * 1000 / 512, "z": args.z, "noise_sigma": args.noise_sigma, "seed": args.seed,
              "map": [args.map_iterations, args.map_inner], "pmwd": [args.pmwd_mesh_factor, args.pmwd_steps],
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps(header), flush=True)
    t0 = time.perf_counter()
    rows = [run_one("closed loop (emulator data)", "emulator", args, {}),
            run_one("PM data (pmwd)", "pmwd", args,
                    {"mesh_factor": args.pmwd_mesh_factor, "steps": args.pmwd_steps})]
    total = time.perf_counter() - t0
    print(table(rows))
    print(f"total wall time {total:.0f} s", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"header": header, "runs": rows, "total_seconds": total}, indent=2))


if __name__ == "__main__":
    main()
