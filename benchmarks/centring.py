"""Mixing of the joint (field, Omega_m, sigma8) NUTS chains with and without partial centring.

For each repeat, Omega_m and sigma8 are drawn uniformly (Omega_m in [0.11, 0.49], inside the shipped
emulator's trained range, sigma8 in [0.6, 1.0]), the white noise from its prior, and the data are the
forward model's density (``--dynamics``: the shipped emulator, a closed loop, or the linear model) plus
Gaussian noise of ``--noise-sigma`` per voxel. The same posterior is then sampled twice with the same
seeds, in the preconditioned coordinates alone (``SamplerConfig(centre=False)``) and partially centred on
the linear amplitude (the default, :mod:`emu_backend.fieldlevel.coordinates`), and per run the script prints
each parameter's posterior mean, std, split R-hat and bulk ESS (numpyro.diagnostics), the gradients per
draw, and the seconds. Same process, same data, same settings: the ratio of the ESS per gradient is the
measured effect of the centring (the seconds also carry the centring's own cost, one linear amplitude and
its gradient per gradient of the posterior).

Usage: python benchmarks/centring.py [--dynamics emulator] [--grid 8] [--z 0.5] [--noise-sigma 0.5]
       [--window tsc] [--centre both] [--repeats 1] [--steps 100] [--num-chains 2] [--max-tree-depth 6]
       [--seed 31] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from emu_backend.differentiable import ForwardModel
from emu_backend.fieldlevel import FieldLikelihood, SamplerConfig, sample_posterior


def run(args) -> list:
    box = args.grid * 1000.0 / 512 if args.dynamics == "emulator" else 250.0
    fm = ForwardModel(args.grid, box, args.z, output="density", dynamics=args.dynamics, window=args.window)
    rng = np.random.default_rng(args.seed)
    rows = []
    for repeat in range(args.repeats):
        truth = {"omega_m": float(rng.uniform(0.11, 0.49)), "sigma8": float(rng.uniform(0.6, 1.0))}
        w = rng.normal(size=(args.grid,) * 3)
        with torch.no_grad():
            delta = fm(torch.from_numpy(w), **truth).double().numpy()
        data = delta + args.noise_sigma * rng.normal(size=delta.shape)
        lik = FieldLikelihood(fm, data, noise_sigma=args.noise_sigma, infer=tuple(truth))
        for centre in {"both": (False, True), "yes": (True,), "no": (False,)}[args.centre]:
            config = SamplerConfig(num_warmup=args.steps, num_samples=args.steps, num_chains=args.num_chains,
                                   max_tree_depth=args.max_tree_depth, seed=repeat, centre=centre)
            t0 = time.perf_counter()
            post = sample_posterior(lik, config)
            seconds = time.perf_counter() - t0
            gradients = float(post.stats["num_steps"].sum())
            row = {"repeat": repeat, "centre": centre, "seconds": seconds,
                   "gradients_per_draw": gradients / post.stats["num_steps"].size}
            for name, value in truth.items():
                d = post.diagnostics.get(name, {})
                row[name] = {"truth": value, "mean": float(post.samples[name].mean()),
                             "std": float(post.samples[name].std()), "r_hat": d.get("r_hat"), "n_eff": d.get("n_eff"),
                             "n_eff_per_1000_gradients": (None if d.get("n_eff") is None
                                                          else 1000.0 * d["n_eff"] / gradients)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dynamics", choices=("emulator", "linear"), default="emulator")
    p.add_argument("--grid", type=int, default=8, help="particles per side (emulator: box = grid * 1000/512 Mpc/h)")
    p.add_argument("--z", type=float, default=0.5)
    p.add_argument("--noise-sigma", type=float, default=0.5)
    p.add_argument("--window", choices=("tsc", "cic"), default="tsc",
                   help="mass assignment of the data and the model (emulator: the particles' density)")
    p.add_argument("--centre", choices=("both", "yes", "no"), default="both", help="which coordinates to run")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--steps", type=int, default=100, help="warm-up steps and draws per chain")
    p.add_argument("--num-chains", type=int, default=2)
    p.add_argument("--max-tree-depth", type=int, default=6)
    p.add_argument("--seed", type=int, default=31)
    p.add_argument("--smoke", action="store_true", help="8^3, a few steps of depth-2 trees: numbers mean nothing")
    args = p.parse_args(argv)
    if args.smoke:
        args.grid, args.repeats, args.steps, args.max_tree_depth = 8, 1, 3, 2
    print(json.dumps({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "smoke": args.smoke, "args": vars(args)}))
    run(args)


if __name__ == "__main__":
    main()
