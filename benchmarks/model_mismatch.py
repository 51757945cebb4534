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
scales where r > 0.9, the gradients and the wall time of each MAP. The MAP has no posterior std: its biases
are in MAP terms (and, as docs/field_level.md says, the joint MAP of Omega_m and sigma8 is not an estimate of
them: the joint mode drifts toward the edges of their priors), so the closed loop is the reference that the
PM run is compared with at the same budget.

``--sample``: on each data set also NUTS over the field, Omega_m and sigma8 (``sample_posterior``: the
Hessian preconditioner, partially centred coordinates, TSC painting as the data; ``--num-chains`` chains,
started at one prior draw of the white noise, the same on both data sets, and the middle of the parameter
boxes, as benchmarks/calibration.py). Then the table adds, per data set, r(k) of the posterior-mean white noise, the
posterior mean +- std of Omega_m and sigma8 with ``bias / std`` against the truth, R-hat, ESS and the
sampler's cost, and the mismatch itself: the PM posterior mean minus the closed-loop posterior mean of the
same initial conditions and noise, in closed-loop posterior stds (the part of the bias the PM data add; the
closed loop's own ``bias / std`` is the realisation's scatter, ~N(0, 1) for a calibrated posterior), each
with its Monte Carlo error (std / sqrt(ESS); for the difference the two in quadrature).
``--out DIR`` keeps each chain's states there (``DIR/emulator``, ``DIR/pmwd``), so a killed run resumes.
``--table-from JSON`` prints the tables of a saved ``--json`` result without running anything.

Default: 32^3 particles in 62.5 Mpc/h (the emulator's trained cell), z = 0.5, noise 0.5, at most 6 outer
L-BFGS iterations of 10 (at most 72 gradients per MAP at 4-6 s each: 12-14 minutes in all on one core of
machine B). ``--smoke``: 8^3, a 2-step pmwd run and 1 L-BFGS iteration of 1: exercises every code path in
CI (~45 s, most of it pmwd's JAX compilation), and samples 3 + 4 steps of depth 2; its numbers mean nothing.
Results: docs/field_level.md, "Model mismatch".

Usage: python benchmarks/model_mismatch.py [--grid 32] [--z 0.5] [--noise-sigma 0.5] [--seed 1]
       [--map-iterations 6] [--map-inner 10] [--pmwd-mesh-factor 3] [--pmwd-steps 32] [--sample]
       [--num-warmup 100] [--num-samples 100] [--num-chains 1] [--max-tree-depth 7] [--out DIR]
       [--json PATH] [--smoke]
       python benchmarks/model_mismatch.py --table-from PATH
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from _timing import smoke_banner

from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.differentiable import ForwardModel
from emu_backend.fieldlevel import FieldLikelihood, SamplerConfig, find_map, sample_posterior
from emu_backend.fieldlevel.bias import bias_section, table_cell
from emu_backend.fieldlevel.observations import synthetic_observation

PARAMETERS = ("omega_m", "sigma8")


def k_edges(grid: int, box: float) -> np.ndarray:
    """The report's bins (``emu-backend reconstruct``): fundamental to Nyquist, ``max(3, N/2)`` edges."""
    return np.linspace(2 * np.pi / box, np.pi * grid / box, max(3, grid // 2))


def run_one(label: str, backend: str, args, backend_options: dict) -> dict:
    """Observation of ``backend``, the joint MAP on it with the emulator (and NUTS), and its bias section."""
    t0 = time.perf_counter()
    obs = synthetic_observation(args.grid, args.z, args.noise_sigma, seed=args.seed, backend=backend,
                                cosmology=QUIJOTE_FIDUCIAL, **backend_options)
    t_data = time.perf_counter() - t0
    fm = ForwardModel(args.grid, obs.box_size, args.z, output="density", cosmology=obs.cosmology,
                      window=obs.meta["window"])
    lik = FieldLikelihood(fm, obs.density, noise_sigma=args.noise_sigma, infer=PARAMETERS)
    logging.info("%s: data from %s in %.1f s; MAP (%d x %d)", label, backend, t_data, args.map_iterations,
                 args.map_inner)
    t0 = time.perf_counter()
    best = find_map(lik, max_iterations=args.map_iterations, inner_iterations=args.map_inner)
    t_map = time.perf_counter() - t0
    fields = {"map": best.noise}
    estimates = {name: {"value": best.theta[name], "std": None, "estimator": "map"} for name in lik.infer}
    row = {"label": label, "backend": backend, "data_seconds": t_data, "map_seconds": t_map,
           "gradients": best.evaluations, "iterations": best.iterations, "converged": best.converged,
           "log_prob": best.log_prob, "data_std": float(obs.density.std()),
           "priors": {name: list(lik.priors.bounds(name)) for name in lik.infer}}
    if args.sample:
        config = SamplerConfig(num_warmup=args.num_warmup, num_samples=args.num_samples, num_chains=args.num_chains,
                               max_tree_depth=args.max_tree_depth, seed=args.seed)
        # from a prior draw of the noise and the middle of the boxes (benchmarks/calibration.py: from the MAP or
        # the prior medians short chains stay near the joint mode at the edges of the boxes); numpyro starts
        # every chain there (they differ by their keys), and the start is the same on both data sets
        init = {"noise": np.random.default_rng([args.seed, 7]).normal(size=(args.grid,) * 3),
                **{name: sum(lik.priors.bounds(name)) / 2 for name in lik.infer}}
        t0 = time.perf_counter()
        post = sample_posterior(lik, config, init=init, out_dir=None if args.out is None else args.out / backend)
        row["sample_seconds"] = time.perf_counter() - t0
        fields["posterior_mean"] = post.mean("noise")
        estimates = {name: {"value": float(post.samples[name].mean()), "std": float(post.samples[name].std()),
                            "estimator": "posterior_mean"} for name in lik.infer}
        row["sampler"] = {"config": config.__dict__, "gradients_per_draw": float(post.stats["num_steps"].mean()),
                          "divergences": int(post.stats["diverging"].sum()),
                          "diagnostics": {name: {"r_hat": post.diagnostics.get(name, {}).get("r_hat"),
                                                 "n_eff": post.diagnostics.get(name, {}).get("n_eff")}
                                          for name in lik.infer},
                          "map": {name: best.theta[name] for name in lik.infer}}
    row["bias"] = bias_section(obs, fields, estimates, k_edges(args.grid, obs.box_size))
    return row


def mc_error(row: dict, name: str) -> float | None:
    """Monte Carlo standard error of the posterior mean of ``name``: std / sqrt(ESS) (None without an ESS)."""
    n_eff = row["sampler"]["diagnostics"][name]["n_eff"]
    std = row["bias"]["parameters"][name]["std"]
    return std / math.sqrt(n_eff) if n_eff and n_eff > 0 and math.isfinite(n_eff) else None


def mismatch(rows: list) -> dict:
    """PM posterior mean minus closed-loop posterior mean per parameter, in closed-loop posterior stds, with
    the Monte Carlo error of that difference (the two chains' errors in quadrature)."""
    closed, pm = (r["bias"]["parameters"] for r in rows)
    out = {}
    for name in PARAMETERS:
        difference = pm[name]["estimate"] - closed[name]["estimate"]
        std = closed[name]["std"]
        errors = [mc_error(r, name) for r in rows]
        error = math.hypot(*errors) if None not in errors else None
        out[name] = {"difference": difference, "over_closed_loop_std": difference / std if std else None,
                     "mc_error": error, "mc_error_over_closed_loop_std": error / std if std and error else None}
    return out


def table(rows: list) -> str:
    """The printed (markdown) tables of the runs."""
    a, b = rows
    ra, rb = a["bias"]["r_k"], b["bias"]["r_k"]
    names = [n for n in ("map", "posterior_mean") if n in ra["fields"]]
    heads = {"map": "r MAP", "posterior_mean": "r posterior mean"}
    lines = ["| k [h/Mpc] | modes | " + " | ".join(f"{heads[n]}, {r['label']}" for n in names for r in rows) + " |",
             "|---|---|" + "---|" * (2 * len(names))]
    for i, (k, m) in enumerate(zip(ra["k"], ra["n_modes"])):
        cells = [f"{r_['fields'][n]['r'][i]:.3f}" for n in names for r_ in (ra, rb)]
        lines.append(f"| {k:.3f} | {m} | " + " | ".join(cells) + " |")
    lines += ["", "| | " + " | ".join(r["label"] for r in rows) + " |", "|---|---|---|"]
    sampled = "sampler" in a
    for name in PARAMETERS:
        truth = a["bias"]["parameters"][name]["truth"]
        if sampled:
            lines.append(f"| {name} MAP (truth {truth:g}) | " + " | ".join(
                f"{r['sampler']['map'][name]:.4f}" for r in rows) + " |")
            cells = []
            for r in rows:
                p = r["bias"]["parameters"][name]
                cells.append(f"{p['estimate']:.4f} +- {p['std']:.4f} (MC error {table_cell(mc_error(r, name))}; bias "
                             f"{p['bias']:+.4f} = {table_cell(p['bias_over_std'], '+.2f')} std)")
            lines.append(f"| {name} posterior mean +- std | " + " | ".join(cells) + " |")
            d = [r["sampler"]["diagnostics"][name] for r in rows]
            lines.append(f"| {name} R-hat, ESS | " + " | ".join(
                f"{table_cell(x['r_hat'], '.3f')}, {table_cell(x['n_eff'], '.0f')}" for x in d) + " |")
        else:
            cells = [f"{table_cell(r['bias']['parameters'][name]['estimate'])} "
                     f"({table_cell(r['bias']['parameters'][name]['bias'], '+.4f')})" for r in rows]
            lo, hi = a["priors"][name]
            lines.append(f"| {name} MAP (bias; truth {truth:g}, start {0.5 * (lo + hi):.4f}) | "
                         + " | ".join(cells) + " |")
    for n in names:
        for key, what in (("k_max_contiguous", "r > 0.9 up to k [h/Mpc]"), ("k_max_above", "largest k with r > 0.9")):
            lines.append(f"| {heads[n]}: {what} | " + " | ".join(
                table_cell(r["bias"]["r_k"]["fields"][n][key], ".3f") for r in rows) + " |")
    lines.append("| MAP gradients (iterations, converged) | " + " | ".join(
        f"{r['gradients']} ({r['iterations']}, {r['converged']})" for r in rows) + " |")
    lines.append("| MAP wall time [s] | " + " | ".join(f"{r['map_seconds']:.0f}" for r in rows) + " |")
    if sampled:
        lines.append("| NUTS gradients per draw, divergences | " + " | ".join(
            f"{r['sampler']['gradients_per_draw']:.1f}, {r['sampler']['divergences']}" for r in rows) + " |")
        lines.append("| NUTS wall time [s] | " + " | ".join(f"{r['sample_seconds']:.0f}" for r in rows) + " |")
    lines.append("| data generation [s] | " + " | ".join(f"{r['data_seconds']:.1f}" for r in rows) + " |")
    lines.append("| std of the observed density | " + " | ".join(f"{r['data_std']:.3f}" for r in rows) + " |")
    if sampled:
        lines.append("")
        for name, m in mismatch(rows).items():
            lines.append(f"mismatch of {name}: PM minus closed-loop posterior mean {m['difference']:+.4f} "
                         f"+- {table_cell(m['mc_error'])} (MC) = {table_cell(m['over_closed_loop_std'], '+.2f')} "
                         f"+- {table_cell(m['mc_error_over_closed_loop_std'], '.2f')} closed-loop std")
    return "\n".join(lines)


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _plain(value):
    """JSON for numpy scalars and arrays in the sampler's diagnostics."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


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
    p.add_argument("--sample", action="store_true", help="also NUTS on each data set (posterior-std biases)")
    p.add_argument("--num-warmup", type=int, default=100, help="NUTS warm-up steps per chain (default 100)")
    p.add_argument("--num-samples", type=int, default=100, help="NUTS draws per chain (default 100)")
    p.add_argument("--num-chains", type=int, default=1, help="NUTS chains per data set (default 1)")
    p.add_argument("--max-tree-depth", type=int, default=7, help="NUTS tree depth at most (default 7)")
    p.add_argument("--out", type=Path, help="keep the chains' states here (a killed run resumes)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--table-from", type=Path, metavar="JSON",
                   help="print the tables of a saved --json result and exit (runs nothing)")
    p.add_argument("--smoke", action="store_true",
                   help="8^3, 2 pmwd steps, 1 L-BFGS iteration, 3 + 4 NUTS steps: numbers mean nothing")
    args = p.parse_args(argv)
    if args.table_from is not None:
        print(table(json.loads(args.table_from.read_text())["runs"]))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    smoke_banner(args.smoke)
    if args.smoke:
        args.grid, args.map_iterations, args.map_inner, args.pmwd_mesh_factor, args.pmwd_steps = 8, 1, 1, 1, 2
        args.sample, args.num_warmup, args.num_samples, args.max_tree_depth = True, 3, 4, 2
    header = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "commit": _commit(), "smoke": args.smoke, "grid": args.grid,
              "box_size": args.grid * 1000 / 512, "z": args.z, "noise_sigma": args.noise_sigma, "seed": args.seed,
              "map": [args.map_iterations, args.map_inner], "pmwd": [args.pmwd_mesh_factor, args.pmwd_steps],
              "sample": args.sample and [args.num_warmup, args.num_samples, args.num_chains, args.max_tree_depth],
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
        result = {"header": header, "runs": rows, "total_seconds": total}
        if args.sample:
            result["mismatch"] = mismatch(rows)
        args.json.write_text(json.dumps(result, indent=2, default=_plain))


if __name__ == "__main__":
    main()
