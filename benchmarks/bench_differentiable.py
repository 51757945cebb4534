"""Cost of gradients through the emulator, as ratios against forward passes in the same process.

Prints, in one run:

1. for each width and output kind (``displacement``; ``velocity``, which needs the forward-mode
   tangent), the time of one gradient of a scalar loss with respect to the white noise, Omega_m and
   sigma8 (forward + backward, :class:`~emu_backend.differentiable.ForwardModel`) over the time of one
   forward pass of the same model without autograd, for the recomputation variants: the default (every
   tile recomputed in the backward but the last, which keeps its activations: a box of one tile is never
   recomputed), ``"all"`` (the last tile recomputed too: on a one-tile box, the cost per tile of a box of
   many tiles), ``torch.utils.checkpoint``, and every tile kept (``recompute=False``); targets: <= 3x for
   the displacement, <= 4x with velocities;
2. the peak memory of one gradient for several tile sizes at each width, each measured in a fresh
   process on a box of one tile (peak resident set minus the resident set before the gradient) beside
   the forward pass's: with recomputation the peak is one tile's, whatever the box;
3. pmwd's own gradient on the same particle grid and machine: ``jax.grad`` of the same kind of loss
   through ``pmwd.nbody`` (its adjoint integration) over pmwd's forward, and pmwd's gradient time over
   the emulator's (where pmwd is installed).

The networks have seeded random weights: the cost of a network of that width, not its output.
``--smoke`` runs the smallest sizes that exercise every code path, for CI; its numbers mean nothing.

Usage: python benchmarks/bench_differentiable.py [--grid 32] [--widths 8 64] [--tiles 8 16 32]
       [--pmwd-steps 32] [--repeat 1] [--no-warm-up] [--smoke]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import time

import torch

from emu_backend.differentiable import ForwardModel
from emu_backend.inference import Emulator, ZdepConvention
from emu_backend.nn import StyledVNet

CELL = 1000 / 512  # the trained cell size [Mpc/h]
#: Time a warm-up call before the timed ones (off in smoke mode, whose numbers mean nothing).
WARM_UP = True


def best_time(fn, repeat: int) -> float:
    """Smallest wall time of ``repeat`` calls after one warm-up call [s]."""
    if WARM_UP:
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def forward_model(grid: int, width: int, tile: int, output: str, recompute: bool = True) -> ForwardModel:
    """A float32 forward model of a seeded random-weight network of ``width`` (the cost, not the output)."""
    torch.manual_seed(0)
    emu = Emulator(ZdepConvention(StyledVNet(2, width=width)), dtype="float32")
    return ForwardModel(grid, grid * CELL, 0.5, emulator=emu, output=output, tile_size=tile, recompute=recompute)


def gradient_step(fm: ForwardModel, noise: torch.Tensor):
    """One gradient of ``sum(w * out)`` with respect to the noise, Omega_m and sigma8."""
    weight = torch.linspace(-1.0, 1.0, noise.numel() * (3 if fm.output != "density" else 1)).reshape(-1)

    def step():
        x = noise.detach().requires_grad_(True)
        om = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        s8 = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
        out = fm(x, omega_m=om, sigma8=s8)
        loss = (out.reshape(-1) * weight.to(out.dtype)).sum()
        return torch.autograd.grad(loss, (x, om, s8))

    return step


VARIANTS = {True: "default", "all": "all recomputed", "checkpoint": "torch checkpoint", False: "kept"}


def time_ratios(grid: int, widths, tile: int, repeat: int, variants=tuple(VARIANTS.values())) -> list[dict]:
    """Gradient time over forward time per width, output kind and recomputation variant (each row printed as
    soon as it is measured, so a long run killed part-way keeps what it measured)."""
    noise = torch.randn(grid, grid, grid, generator=torch.Generator().manual_seed(1))
    chosen = {v: name for v, name in VARIANTS.items() if name in variants}
    print(f"\n1. gradient time / forward time: {grid}^3 particles, tile {tile}, float32, z = 0.5, "
          f"loss sum(w * out) w.r.t. noise, Omega_m, sigma8 (best of {repeat}"
          f"{' after a warm-up' if WARM_UP else ', no warm-up'}); default: tiles recomputed in the backward "
          "after an inference-path forward except the last (kept); 'all recomputed': the last too (the cost "
          "per tile of a many-tile box); torch.utils.checkpoint; kept (memory grows with the box)")
    head = "".join(f"{name + ' s':>20s} {'ratio':>6s}" for name in chosen.values())
    print(f"{'width':>5s} {'output':>12s} {'forward s':>10s}{head} {'target':>7s}", flush=True)
    rows = []
    for width in widths:
        for output in ("displacement", "velocity"):
            fm = forward_model(grid, width, tile, output)
            with torch.no_grad():
                fwd = best_time(lambda: fm(noise), repeat)
            row = {"width": width, "output": output, "forward_s": fwd}
            for variant, name in chosen.items():
                fm.recompute = variant
                row[name] = best_time(gradient_step(fm, noise), repeat)
            rows.append(row)
            target = 3.0 if output == "displacement" else 4.0
            cols = "".join(f"{row[name]:20.2f} {row[name] / fwd:6.2f}" for name in chosen.values())
            print(f"{width:5d} {output:>12s} {fwd:10.2f}{cols} {target:7.1f}", flush=True)
    return rows


def _status_mib(key: str) -> float:
    """A memory line of /proc/self/status (Linux) [MiB]."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status (Linux only)")


def _reset_peak() -> float:
    """Reset the process's peak resident set (VmHWM) to its current one; returns the current one [MiB]."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mib("VmRSS")


def _peak_child(args) -> None:
    """In a fresh process: the peak resident memory of one forward pass or one gradient [MiB]."""
    grid, width, tile, mode = args.child
    fm = forward_model(grid, width, tile, "velocity")
    noise = torch.randn(grid, grid, grid, generator=torch.Generator().manual_seed(1))
    base = _reset_peak()
    if mode == "forward":
        with torch.no_grad():
            fm(noise)
    else:
        gradient_step(fm, noise)()
    print(json.dumps({"base_mib": base, "peak_mib": _status_mib("VmHWM")}))


def peak_memory(widths, tiles) -> list[dict]:
    """Peak memory of a forward pass and of a gradient (velocity output) per width and tile size.

    Each on a box of one tile (``grid = tile``): with recomputation the peak is one tile's, whatever the
    number of tiles; the box itself adds a few ``(3, N, N, N)`` fields (25 MB each in float32 at N = 128).
    """
    print("\n2. peak memory above the set-up's (MiB, resident set of a fresh process): one tile, "
          "displacement + velocity, float32, default recomputation (the one tile keeps its activations, "
          "as any tile does while it is recomputed)")
    print(f"{'width':>5s} {'tile':>5s} {'input tile':>11s} {'forward':>9s} {'gradient':>9s} {'ratio':>6s}", flush=True)
    rows = []
    for width in widths:
        for tile in tiles:
            row = {"width": width, "tile": tile}
            for mode in ("forward", "gradient"):
                cmd = [sys.executable, __file__, "--child", str(tile), str(width), str(tile), mode]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:  # e.g. killed for memory: say so and go on
                    row[mode] = float("nan")
                    print(f"  width {width} tile {tile} {mode}: child failed (exit {done.returncode}) "
                          f"{done.stderr.strip()[-200:]}", flush=True)
                    continue
                res = json.loads(done.stdout)
                row[mode] = res["peak_mib"] - res["base_mib"]
            rows.append(row)
            print(f"{width:5d} {tile:5d} {str(tile + 96) + '^3':>11s} {row['forward']:9.0f} "
                  f"{row['gradient']:9.0f} {row['gradient'] / max(row['forward'], 1.0):6.2f}", flush=True)
    return rows


def pmwd_gradient(grid: int, steps: int, repeat: int) -> dict | None:
    """pmwd's forward and its adjoint gradient (``jax.grad`` through ``nbody``) on a ``grid^3`` box."""
    if importlib.util.find_spec("pmwd") is None:
        print("\n3. pmwd not installed: its gradient is not measured (extra 'pmwd', from its git repository)")
        return None
    import jax
    import jax.numpy as jnp
    import pmwd
    from emu_backend.adapters.pmwd_convert import configuration_from_grid

    conf = configuration_from_grid(grid, grid * CELL, mesh_factor=2, a_start=1 / 16, a_stop=1 / 1.5,
                                   a_nbody_maxstep=(1 / 1.5 - 1 / 16) / steps)
    white = pmwd.white_noise(1, conf)
    weight = jnp.linspace(-1.0, 1.0, conf.mesh_size).reshape(conf.mesh_shape)

    def loss(modes, omega_m, sigma8):
        cosmo = pmwd.Cosmology.from_sigma8(conf, sigma8=sigma8, n_s=0.9624, Omega_m=omega_m, Omega_b=0.049, h=0.6711)
        cosmo = pmwd.boltzmann(cosmo, conf)
        ptcl, obsvbl = pmwd.lpt(pmwd.linear_modes(modes, cosmo, conf), cosmo, conf)
        ptcl, obsvbl = pmwd.nbody(ptcl, obsvbl, cosmo, conf)
        return jnp.sum(weight * pmwd.scatter(ptcl, conf))

    fwd = jax.jit(loss)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    args = (white, 0.3, 0.8)
    t_fwd = best_time(lambda: jax.block_until_ready(fwd(*args)), repeat)
    t_grad = best_time(lambda: jax.block_until_ready(grad(*args)), repeat)
    n_steps = len(conf.a_nbody) - 1
    print(f"\n3. pmwd {pmwd.__version__ if hasattr(pmwd, '__version__') else ''}: {grid}^3 particles, mesh 2x, "
          f"{n_steps} steps to z = 0.5, float{'64' if jax.config.jax_enable_x64 else '32'}, jit-compiled "
          f"({'compilation excluded' if WARM_UP else 'no warm-up: compilation INCLUDED'}); loss sum(w * density) "
          "w.r.t. modes, Omega_m, sigma8")
    print(f"forward {t_fwd:.2f} s, gradient (adjoint nbody) {t_grad:.2f} s, ratio {t_grad / t_fwd:.2f}")
    return {"forward_s": t_fwd, "grad_s": t_grad, "steps": n_steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grid", type=int, default=32, help="particles per side (default 32)")
    p.add_argument("--widths", type=int, nargs="+", default=[8, 64], help="network widths (default 8 64)")
    p.add_argument("--tile", type=int, default=None, help="tile of the timing runs (default: the grid)")
    p.add_argument("--tiles", type=int, nargs="+", default=[8, 16, 32], help="tile sizes of the memory runs")
    p.add_argument("--pmwd-steps", type=int, default=32, help="pmwd N-body steps (0 skips pmwd)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-warm-up", action="store_true", help="time the first call (long runs: warm-up is noise)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS.values()), default=list(VARIANTS.values()),
                   help="gradient variants timed ('kept' holds every tile's activations: large at width 64; "
                        "on a one-tile box it is the default)")
    p.add_argument("--memory-widths", type=int, nargs="*", default=None,
                   help="widths of the memory runs (default: --widths)")
    p.add_argument("--smoke", action="store_true", help="smallest sizes, every code path (for CI)")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        args.child = [int(v) for v in args.child[:3]] + [args.child[3]]
        _peak_child(args)
        return
    global WARM_UP
    WARM_UP = not (args.smoke or args.no_warm_up)
    if args.smoke:
        args.grid, args.widths, args.tiles, args.tile, args.pmwd_steps, args.repeat = 8, [2], [8], 8, 2, 1
    tile = args.tile or args.grid
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = time_ratios(args.grid, args.widths, tile, args.repeat, args.variants)
    peak_memory(args.widths if args.memory_widths is None else args.memory_widths, args.tiles)
    if args.pmwd_steps:
        pm = pmwd_gradient(args.grid, args.pmwd_steps, args.repeat)
        if pm is not None:
            for r in rows:
                g = r.get("default", r.get("all recomputed"))
                if g is None:
                    continue
                print(f"pmwd gradient / emulator gradient (width {r['width']}, {r['output']}): {pm['grad_s'] / g:.2f}")


if __name__ == "__main__":
    main()
