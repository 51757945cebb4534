"""Cost of field-level inference with the shipped emulator, as ratios against the forward model in the
same process, and the closed-loop quality of a short run.

For each grid of ``--grids`` (default 32 and 64 particles per side, the trained cell 1000/512 Mpc/h, z = 0)
item 1, and for those of ``--run-grids`` (default 32) also items 2 and 3:

1. one forward pass of the density (no autograd) and one gradient of the log posterior with respect to
   the white noise, Omega_m and sigma8 (the unit of cost of the MAP and of NUTS), and their ratio; and one
   gradient of the sampler's potential (numpyro, through the JAX bridge, jitted, best of 3) in the
   preconditioned coordinates alone and partially centred on the linear amplitude (the default with
   Omega_m and sigma8 inferred), and their ratio: the centring's cost per gradient;
2. the MAP at the data's cosmology (L-BFGS, at most ``--map-iterations``): wall time, gradients, whether
   the convergence rule was met, and r(k) of the MAP noise with the true noise on the largest scales;
3. a short NUTS run (``--num-warmup`` + ``--num-samples``, one chain, started at the MAP): wall time,
   gradients per draw, the ESS of sigma8 and Omega_m, hence the time per effective sample, and the time
   of 200 draws at the measured gradients per draw (an extrapolation, printed as such).

The data is a closed-loop observation: the emulator's density of seeded ICs plus Gaussian noise of
``--noise-sigma`` per voxel. ``--smoke`` runs a 16^3 box with a few steps of each, to exercise every code
path in CI; its numbers mean nothing.

Usage: python benchmarks/bench_fieldlevel.py [--grids 32 64] [--run-grids 32] [--map-iterations 10] [--map-inner 10]
       [--num-warmup 20] [--num-samples 20] [--max-tree-depth 6] [--noise-sigma 0.5] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
from _timing import best_time
from emu_backend.validation import cross_correlation

from emu_backend.differentiable import ForwardModel
from emu_backend.fieldlevel import (
    FieldLikelihood,
    NoiseCoordinates,
    SamplerConfig,
    find_map,
    numpyro_model,
    sample_posterior,
)
from emu_backend.fieldlevel.observations import synthetic_observation
from emu_backend.fieldlevel.precondition import fourier_scale


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sampler_gradient(lik: FieldLikelihood, noise: np.ndarray, theta: dict) -> dict:
    """Seconds of one jitted gradient of numpyro's potential, plain and partially centred coordinates."""
    import jax
    from numpyro.infer.util import potential_energy

    scale = fourier_scale(lik)
    out = {}
    with jax.enable_x64(True):
        for name, centre in (("plain_s", False), ("centred_s", True)):
            coords = NoiseCoordinates(lik.model, scale, theta, centre=centre)
            model = numpyro_model(lik, coords)
            point = {"u": jax.numpy.asarray(coords.from_noise(noise, theta)),
                     **{k: jax.numpy.asarray(0.0) for k in lik.infer}}
            grad = jax.jit(jax.grad(lambda p, m=model: potential_energy(m, (), {}, p)))
            out[name] = best_time(lambda g=grad: jax.block_until_ready(g(point)), 3)
    out["centred_over_plain"] = out["centred_s"] / out["plain_s"]
    return out


def bench(grid: int, args, run: bool) -> dict:
    z = 0.0
    obs = synthetic_observation(grid, z, args.noise_sigma, seed=1)
    fm = ForwardModel(grid, obs.box_size, z, output="density")
    lik = FieldLikelihood(fm, obs.density, noise_sigma=args.noise_sigma)
    fixed = FieldLikelihood(fm, obs.density, noise_sigma=args.noise_sigma, infer=())
    noise = torch.from_numpy(obs.initial_noise).requires_grad_(True)
    om = torch.tensor(0.3175, dtype=torch.float64, requires_grad=True)
    s8 = torch.tensor(0.834, dtype=torch.float64, requires_grad=True)

    def forward():
        with torch.no_grad():
            fm(noise.detach())

    def gradient():
        torch.autograd.grad(lik.log_prob(noise, omega_m=om, sigma8=s8), (noise, om, s8))

    forward()  # warm-up: the first call allocates
    t_fwd, t_grad = _time(forward), _time(gradient)
    theta = {k: sum(lik.priors.bounds(k)) / 2 for k in lik.infer}
    timing = {"grid": grid, "box_size": obs.box_size, "forward_s": t_fwd, "gradient_s": t_grad,
              "gradient_over_forward": t_grad / t_fwd,
              "sampler_gradient": sampler_gradient(lik, obs.initial_noise, theta)}
    if not run:
        return timing
    t0 = time.perf_counter()
    best = find_map(fixed, max_iterations=args.map_iterations, inner_iterations=args.map_inner)
    t_map = time.perf_counter() - t0
    edges = np.linspace(2 * np.pi / obs.box_size, np.pi * grid / obs.box_size, 5)
    r = cross_correlation(best.noise, obs.initial_noise, obs.box_size, edges).r
    config = SamplerConfig(num_warmup=args.num_warmup, num_samples=args.num_samples, num_chains=1,
                           max_tree_depth=args.max_tree_depth)
    t0 = time.perf_counter()
    post = sample_posterior(lik, config, init={"noise": best.noise, "omega_m": 0.3175, "sigma8": 0.834})
    t_nuts = time.perf_counter() - t0
    steps = int(post.stats["num_steps"].sum())
    per_draw_grads = steps / config.num_samples
    ess = {k: post.diagnostics.get(k, {}).get("n_eff") for k in ("omega_m", "sigma8")}
    per_step = t_nuts / (config.num_warmup + config.num_samples)
    return {
        **timing,
        "map": {"seconds": t_map, "gradients": best.evaluations, "iterations": best.iterations,
                "converged": best.converged, "r_k": [float(x) for x in r], "k": edges.tolist()},
        "nuts": {"seconds": t_nuts, "warmup": config.num_warmup, "draws": config.num_samples,
                 "gradients_per_draw": per_draw_grads, "ess": ess,
                 "seconds_per_effective_sample": {k: (t_nuts / v if v else None) for k, v in ess.items()},
                 "extrapolated_seconds_for_200_draws_after_as_many_warmup": 400 * per_step},
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grids", type=int, nargs="+", default=[32, 64], help="grids of the gradient timing")
    p.add_argument("--run-grids", type=int, nargs="*", default=[32], help="grids that also run the MAP and NUTS")
    p.add_argument("--map-iterations", type=int, default=10)
    p.add_argument("--map-inner", type=int, default=10, help="L-BFGS evaluations per outer iteration")
    p.add_argument("--num-warmup", type=int, default=20)
    p.add_argument("--num-samples", type=int, default=20)
    p.add_argument("--max-tree-depth", type=int, default=6)
    p.add_argument("--noise-sigma", type=float, default=0.5)
    p.add_argument("--smoke", action="store_true", help="16^3, a few steps: exercises the code, numbers mean nothing")
    args = p.parse_args(argv)
    if args.smoke:
        args.grids, args.run_grids = [16], [16]
        args.map_iterations, args.map_inner, args.num_warmup, args.num_samples, args.max_tree_depth = 1, 2, 2, 2, 2
    header = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "smoke": args.smoke}
    print(json.dumps(header))
    for grid in args.grids:
        print(json.dumps(bench(grid, args, grid in args.run_grids)), flush=True)


if __name__ == "__main__":
    main()
