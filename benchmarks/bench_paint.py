"""Cost of painting particles on the mesh, forward and backward, and its share of a field-level gradient.

``emu_backend.mesh.paint_cells`` deposits every particle on its ``p^3`` stencil (CIC p = 2, TSC p = 3) with
one ``index_add``; the field-level forward model paints particle counts (no per-particle values) of one
box (one batch). Since 2026-12-08 those two cases skip the product with unit values and the batch offset,
passes over ``P p^3`` elements in the forward and the backward that change no bit of the result
(tests/test_paint.py). The reference in the same process is the general path itself: the same particles
painted with explicit unit values, which runs the product (the batch offset, a further integer add for
more than one batch, is not in the reference).

Timed in one process, best of ``--repeat`` after one untimed call, for each grid and window:

* ``counts``: ``paint_cells`` of the ``grid^3`` particles of a Lagrangian lattice displaced by a random
  field (std ``--displacement`` cells), float32 as in the forward model, then the gradient of
  ``sum(mesh^2)`` with respect to the positions;
* ``unit values``: the same with ``values = ones`` (the general path);
* ``gradient``: one gradient of ``sum(delta^2)`` of ``ForwardModel(grid, grid * 1000 / 512, 0.5)`` (shipped
  emulator, that window) with respect to the white noise and Omega_m, for the painting's share of it.

Printed: one JSON line per grid and window with the times [s] and the ratios.

Usage: python benchmarks/bench_paint.py [--grids 32 64] [--windows tsc cic] [--repeat 10] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
from _timing import best_time, smoke_banner

from emu_backend.differentiable import ForwardModel
from emu_backend.mesh import paint_cells


def paint_time(grid: int, window: str, values: bool, displacement: float, repeat: int) -> float:
    """Best time [s] of painting ``grid^3`` displaced lattice particles and back-propagating ``sum(mesh^2)``."""
    gen = torch.Generator().manual_seed(0)
    axes = torch.meshgrid(*[torch.arange(grid, dtype=torch.float32)] * 3, indexing="ij")
    lattice = torch.stack(axes).reshape(1, 3, -1)
    shift = torch.randn(lattice.shape, generator=gen) * displacement
    ones = torch.ones(1, 1, grid ** 3) if values else None

    def run():
        pos = torch.remainder(lattice + shift, float(grid)).requires_grad_()
        mesh = paint_cells(pos, (grid,) * 3, ones, window=window)
        (mesh ** 2).sum().backward()

    return best_time(run, repeat)


def gradient_time(grid: int, window: str, repeat: int) -> float:
    """Best time [s] of one gradient of ``sum(delta^2)`` of the emulator forward model (noise, Omega_m)."""
    fm = ForwardModel(grid, grid * 1000.0 / 512.0, 0.5, window=window)
    noise = torch.randn((grid,) * 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def run():
        w = noise.clone().requires_grad_()
        om = torch.tensor(0.3175, dtype=torch.float64, requires_grad=True)
        (fm(w, omega_m=om, sigma8=0.834) ** 2).sum().backward()

    return best_time(run, repeat)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grids", type=int, nargs="+", default=[32, 64])
    p.add_argument("--windows", nargs="+", default=["tsc", "cic"])
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--displacement", type=float, default=1.0, help="std of the random displacement [cells]")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="16^3, one window, one repetition (numbers mean nothing)")
    args = p.parse_args()
    smoke_banner(args.smoke)
    if args.smoke:
        args.grids, args.windows, args.repeat = [16], ["tsc"], 1
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps({"machine": platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads()}))
    for grid in args.grids:
        for window in args.windows:
            fast = paint_time(grid, window, False, args.displacement, args.repeat)
            general = paint_time(grid, window, True, args.displacement, args.repeat)
            grad = gradient_time(grid, window, args.repeat)
            print(json.dumps({"grid": grid, "window": window, "paint_counts_s": round(fast, 4),
                              "paint_unit_values_s": round(general, 4), "ratio": round(general / fast, 2),
                              "forward_model_gradient_s": round(grad, 4),
                              "paint_share_of_gradient": round(fast / grad, 3)}), flush=True)


if __name__ == "__main__":
    main()
