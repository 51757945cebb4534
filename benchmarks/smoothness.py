"""Leapfrog energy error of the field-level posterior against step size, per dynamics and mass assignment.

NUTS builds its trajectories with the velocity Verlet (leapfrog) integrator and accepts along them by the
energy error ``|Delta H|``; for a potential with a Lipschitz-continuous gradient that error falls as the
step size squared (halving the step divides it by 4), and the step size NUTS adapts to is set by it. CIC
mass assignment paints each particle with a linear (tent) kernel whose derivative jumps at every mesh
plane, so the posterior's gradient jumps whenever a particle crosses one and the error falls only about
linearly; TSC's quadratic B-spline has a continuous derivative.

For each ``--dynamics`` and window (CIC, TSC): data = the model's density at a white-noise draw plus
Gaussian noise, the posterior of the field at fixed cosmology in the chains' preconditioned coordinates
(:func:`~emu_backend.fieldlevel.precondition.hessian_scale` at the true noise), trajectories of length 1
from the true noise with ``--momenta`` standard-normal momenta, numpyro's own ``velocity_verlet`` at step
sizes 0.2, 0.1, 0.05, 0.025. Printed per run: the mean ``|Delta H|`` per step size, its ratio per halving
(4 for a second-order integrator), the fitted order (slope of log |Delta H| against log step), and per
step size the CIC / TSC ratio of the same trajectories (same process, same data and momenta).

Usage: python benchmarks/smoothness.py [--dynamics za emulator] [--grid 8] [--z 0.5] [--noise-sigma 0.5]
       [--momenta 8] [--seed 5] [--dtype float32] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import platform

import numpy as np
import torch
from emu_backend.adapters.jax import jax_module

from emu_backend.differentiable import ForwardModel
from emu_backend.fieldlevel import FieldLikelihood, NoiseCoordinates
from emu_backend.fieldlevel.precondition import hessian_scale
from emu_backend.fieldlevel.sampling import numpyro_model
from emu_backend.inference import default_emulator

STEP_SIZES = (0.2, 0.1, 0.05, 0.025)


def energy_errors(dynamics: str, window: str, args, step_sizes=STEP_SIZES) -> np.ndarray:
    """``|Delta H|`` (momenta, step sizes) after trajectories of length 1 from the true noise."""
    from numpyro.infer.hmc_util import euclidean_kinetic_energy, velocity_verlet
    from numpyro.infer.util import initialize_model

    jax = jax_module()
    jnp = jax.numpy
    n = args.grid
    box = n * 1000.0 / 512 if dynamics == "emulator" else 250.0
    emulator = default_emulator(dtype=args.dtype) if dynamics == "emulator" else None
    fm = ForwardModel(n, box, args.z, output="density", dynamics=dynamics, window=window, emulator=emulator)
    rng = np.random.default_rng(args.seed)
    w = rng.normal(size=(n,) * 3)
    with torch.no_grad():
        delta = fm(torch.from_numpy(w)).double().numpy()
    lik = FieldLikelihood(fm, delta + args.noise_sigma * rng.normal(size=delta.shape), noise_sigma=args.noise_sigma,
                          infer=())
    errors = np.zeros((args.momenta, len(step_sizes)))
    with jax.enable_x64(True):
        coords = NoiseCoordinates(fm, hessian_scale(lik, w), {})
        potential = initialize_model(jax.random.PRNGKey(0), numpyro_model(lik, coords)).potential_fn
        start = {"u": jnp.asarray(coords.from_noise(w, {}))}
        init, update = velocity_verlet(potential, euclidean_kinetic_energy)
        inverse_mass = jnp.ones(n**3)

        def energy(state):
            return float(state.potential_energy + euclidean_kinetic_energy(inverse_mass, state.r["u"].ravel()))

        for i in range(args.momenta):
            momentum = {"u": jnp.asarray(np.random.default_rng(args.seed + 100 + i).normal(size=(n,) * 3))}
            for j, eps in enumerate(step_sizes):
                state = init(start, momentum)
                h0 = energy(state)
                for _ in range(round(1.0 / eps)):
                    state = update(eps, inverse_mass, state)
                errors[i, j] = abs(energy(state) - h0)
    return errors


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dynamics", nargs="+", choices=("za", "emulator"), default=["za", "emulator"])
    p.add_argument("--grid", type=int, default=8, help="particles per side (emulator: box = grid * 1000/512 Mpc/h)")
    p.add_argument("--z", type=float, default=0.5)
    p.add_argument("--noise-sigma", type=float, default=0.5)
    p.add_argument("--momenta", type=int, default=8, help="trajectories per step size")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="the emulator's arithmetic (float64: no float32 round-off in the gradients)")
    p.add_argument("--smoke", action="store_true", help="ZA 8^3, two momenta: numbers mean nothing")
    args = p.parse_args(argv)
    if args.smoke:
        args.dynamics, args.grid, args.momenta = ["za"], 8, 2
    print(json.dumps({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "smoke": args.smoke, "args": vars(args)}))
    log_eps = np.log(STEP_SIZES)
    for dynamics in args.dynamics:
        means = {}
        for window in ("cic", "tsc"):
            errors = energy_errors(dynamics, window, args)
            mean = errors.mean(axis=0)
            means[window] = mean
            print(json.dumps({"dynamics": dynamics, "window": window, "step_sizes": STEP_SIZES,
                              "mean_abs_energy_error": mean.tolist(),
                              "ratio_per_halving": (mean[:-1] / mean[1:]).tolist(),
                              "order": float(np.polyfit(log_eps, np.log(mean), 1)[0])}), flush=True)
        print(json.dumps({"dynamics": dynamics, "step_sizes": STEP_SIZES,
                          "cic_over_tsc": (means["cic"] / means["tsc"]).tolist()}), flush=True)


if __name__ == "__main__":
    main()
