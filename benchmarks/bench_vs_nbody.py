"""Emulator time against real PM N-body codes on the same box, grid and machine, as ratios.

Runs one ``n^3`` box at the trained cell size (``n * 1000/512`` Mpc/h) from the same ICs through
:func:`emu_backend.simulator.simulate` with

- the emulator, shipped weights (displacement + velocity, the simulator's default);
- the emulator at the published width (``--width``, seeded random weights: the cost of a trained
  full-width network, not its output), whole box as one tile;
- pmwd (mesh 2x, ``--pmwd-steps`` steps uniform in a from a = 1/16: the N-body backend's default,
  the step count of our pmwd runs), where pmwd is installed;
- with ``--jaxpm``, JaxPM with the training set's settings (mesh 3x, compensated force, adaptive ODE
  at rtol = atol = 1e-4, ``DEFAULT_JAXPM_OPTIONS``; slow: its mesh-3x run moves ``(3n)^3`` particles).

Each is timed twice; the second (warm: JAX compilation, oneDNN primitive creation and the shipped
weights' loading excluded) is the one reported, and the first is printed beside it. Ratios are N-body
time over emulator time, same process, same ICs, one output at z = 0.

Usage: python benchmarks/bench_vs_nbody.py [--n 64] [--width 64] [--pmwd-steps 32] [--jaxpm] [--smoke]
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import time

import torch


def timed(fn):
    """(cold seconds, warm seconds) of two calls of ``fn``."""
    t = time.perf_counter()
    fn()
    cold = time.perf_counter() - t
    t = time.perf_counter()
    fn()
    return cold, time.perf_counter() - t


def compare(n: int = 64, width: int = 64, pmwd_steps: int = 32, jaxpm: bool = False, seed: int = 7) -> dict:
    """Time the backends on one ``n^3`` box; returns ``{name: (cold s, warm s)}`` and prints the table."""
    from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    from emu_backend.ics import InitialConditions
    from emu_backend.inference import Emulator, ZdepConvention
    from emu_backend.nn import StyledVNet
    from emu_backend.simulator import simulate
    from emu_backend.simulator.backends import EmulatorBackend

    cosmo = QUIJOTE_FIDUCIAL
    ics = InitialConditions.from_noise(n, None, cosmo, seed)
    torch.manual_seed(0)
    wide = Emulator(ZdepConvention(StyledVNet(2, 3, 3, width)))
    runs = {
        "emulator, shipped weights": lambda: simulate(ics, cosmo, z=0.0, backend="emulator"),
        f"emulator, width {width}": lambda: simulate(ics, cosmo, z=0.0, backend=EmulatorBackend(wide, tile_size=n)),
    }
    if importlib.util.find_spec("pmwd") is not None:
        runs[f"pmwd, mesh 2x, {pmwd_steps} steps"] = lambda: simulate(
            ics, cosmo, z=0.0, backend="pmwd", mesh_factor=2, steps=pmwd_steps)
    else:
        print("pmwd not installed: its row is skipped (extra 'pmwd', installed from its git repository)")
    if jaxpm and importlib.util.find_spec("jaxpm") is not None:
        from emu_backend.training.make_set import DEFAULT_JAXPM_OPTIONS

        runs["JaxPM, training-set settings"] = lambda: simulate(ics, cosmo, z=0.0, backend="jaxpm",
                                                                **DEFAULT_JAXPM_OPTIONS)
    times = {name: timed(fn) for name, fn in runs.items()}
    ref = times["emulator, shipped weights"][1]
    wide_t = times[f"emulator, width {width}"][1]
    print(f"{n}^3 particles, box {n * 1000 / 512:.1f} Mpc/h, z = 0, displacement + velocity; "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'backend':36s} {'warm s':>9s} {'cold s':>9s} {'/ shipped':>10s} {'/ width ' + str(width):>10s}")
    for name, (cold, warm) in times.items():
        print(f"{name:36s} {warm:9.2f} {cold:9.2f} {warm / ref:10.2f} {warm / wide_t:10.2f}")
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=64, help="particles per side (default 64)")
    p.add_argument("--width", type=int, default=64, help="network width of the full-size row (default 64)")
    p.add_argument("--pmwd-steps", type=int, default=32)
    p.add_argument("--jaxpm", action="store_true", help="also JaxPM with the training-set settings (slow)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="smallest sizes, every code path (for CI; numbers mean nothing)")
    args = p.parse_args()
    if args.smoke:
        print("SMOKE MODE: smallest sizes, every code path exercised; the numbers below mean nothing", flush=True)
        args.n, args.width, args.pmwd_steps, args.jaxpm = 16, 4, 2, True
    if args.threads:
        torch.set_num_threads(args.threads)
    compare(args.n, args.width, args.pmwd_steps, args.jaxpm)


if __name__ == "__main__":
    main()
