"""Cost of the differentiable EH98 linear P(k) and its sigma8 normalisation, by the size of the Simpson rule.

``emu_backend.cosmology.linear_power.eisenstein_hu_power`` normalises the Eisenstein & Hu spectrum by
sigma(8 Mpc/h), a Simpson rule in ln k over 1e-6-1e4 h/Mpc evaluated (with its gradient in every parameter)
on each call: the field-level posterior pays it once per gradient for its own P(k) and once more for the
partially centred coordinates' linear amplitude. Since 2026-12-08 the rule has 4097 nodes (its agreement
with adaptive quad is 1.4e-10 either way, tests/test_linear_power.py) and its nodes and weights are computed
once; before, 8193 nodes recomputed on every call.

Timed in one process, best of ``--repeat`` (one untimed call first), single-threaded by default:

* ``eisenstein_hu_power`` forward and backward (Omega_m and sigma8 tensors with gradients) on the k mesh of a
  ``grid^3`` box of side ``grid * 1000 / 512`` Mpc/h (``rfftn`` half mesh), with the default rule and two
  reference runs of the same function with the module's quadrature swapped: ``8193`` (the 8193-node rule,
  computed once) and ``before`` (the 8193-node rule recomputed on every call, the code before 2026-12-08);
  the largest relative difference of the default and the 8193-node P(k);
* the log-posterior gradient of the field-level likelihood with the linear model (``dynamics="linear"``,
  noise, Omega_m and sigma8) at the same grids, all three ways.

Printed: one JSON line per grid with the times [ms] and the ratios reference / default (> 1: faster now).

Usage: python benchmarks/bench_linear_power.py [--grids 8 16 32] [--repeat 20] [--threads 1] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform

import numpy as np
import torch
from _timing import best_time, smoke_banner

from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.cosmology import linear_power as lp
from emu_backend.differentiable import ForwardModel
from emu_backend.fieldlevel import FieldLikelihood

F64 = torch.float64
REFERENCE_NODES = 8193


class _PerCall:
    """Stands for the module's cached (nodes, factors): computes them anew each time they are unpacked."""

    def __iter__(self):
        return iter(lp._sigma8_quadrature())


@contextlib.contextmanager
def simpson_nodes(n: int, *, per_call: bool = False):
    """The module's sigma8 quadrature with ``n`` Simpson nodes (recomputed on every call if ``per_call``),
    restored on exit."""
    saved = lp._SIGMA_N_POINTS, lp._SIGMA8_QUADRATURE
    lp._SIGMA_N_POINTS = n
    try:
        lp._SIGMA8_QUADRATURE = _PerCall() if per_call else lp._sigma8_quadrature()
        yield
    finally:
        lp._SIGMA_N_POINTS, lp._SIGMA8_QUADRATURE = saved


def k_mesh(grid: int, box: float) -> torch.Tensor:
    """|k| [h/Mpc] of the rfftn half mesh of a grid^3 box, the zero mode set to the fundamental."""
    kf = 2 * np.pi / box
    k1 = np.fft.fftfreq(grid, 1.0 / grid) * kf
    kz = np.fft.rfftfreq(grid, 1.0 / grid) * kf
    k = np.sqrt(k1[:, None, None] ** 2 + k1[None, :, None] ** 2 + kz[None, None, :] ** 2)
    k[0, 0, 0] = kf
    return torch.from_numpy(k)


def power_call(k: torch.Tensor):
    """``eisenstein_hu_power`` with Omega_m and sigma8 tensors, forward and backward; returns P(k)."""
    c = QUIJOTE_FIDUCIAL
    om = torch.tensor(c.omega_m, dtype=F64, requires_grad=True)
    s8 = torch.tensor(c.sigma8, dtype=F64, requires_grad=True)
    p = lp.eisenstein_hu_power(k, om, c.omega_b, c.h, c.n_s, s8)
    p.sum().backward()
    return p.detach()


def posterior_gradient(lik: FieldLikelihood, grid: int) -> None:
    """One log-posterior gradient in the noise, Omega_m and sigma8."""
    w = torch.zeros((grid,) * 3, dtype=F64, requires_grad=True)
    om = torch.tensor(0.3, dtype=F64, requires_grad=True)
    s8 = torch.tensor(0.8, dtype=F64, requires_grad=True)
    lik.log_prob(w, omega_m=om, sigma8=s8).backward()


def run_grid(grid: int, repeat: int) -> dict:
    box = grid * 1000.0 / 512
    k = k_mesh(grid, box)
    fm = ForwardModel(grid, box, 0.5, output="density", dynamics="linear")
    lik = FieldLikelihood(fm, np.zeros((grid,) * 3), noise_sigma=0.5, infer=("omega_m", "sigma8"))
    row = {"grid": grid, "box_size": box, "nodes": lp._SIGMA_N_POINTS, "reference_nodes": REFERENCE_NODES}
    p_default = power_call(k)
    row["power_ms"] = 1e3 * best_time(lambda: power_call(k), repeat)
    row["gradient_ms"] = 1e3 * best_time(lambda: posterior_gradient(lik, grid), repeat)
    for name, per_call in (("8193", False), ("before", True)):
        with simpson_nodes(REFERENCE_NODES, per_call=per_call):
            p_reference = power_call(k)
            row[f"power_{name}_ms"] = 1e3 * best_time(lambda: power_call(k), repeat)
            row[f"gradient_{name}_ms"] = 1e3 * best_time(lambda: posterior_gradient(lik, grid), repeat)
        row[f"power_ratio_{name}"] = row[f"power_{name}_ms"] / row["power_ms"]
        row[f"gradient_ratio_{name}"] = row[f"gradient_{name}_ms"] / row["gradient_ms"]
    row["max_relative_difference"] = float(((p_default - p_reference).abs() / p_reference).max())
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grids", type=int, nargs="+", default=[8, 16, 32], help="grids (default 8 16 32)")
    p.add_argument("--repeat", type=int, default=20, help="timed calls, best of (default 20)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--smoke", action="store_true", help="8^3, 2 repeats: numbers mean nothing")
    args = p.parse_args(argv)
    smoke_banner(args.smoke)
    if args.smoke:
        args.grids, args.repeat = [8], 2
    torch.set_num_threads(args.threads)
    print(json.dumps({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "repeat": args.repeat}), flush=True)
    for grid in args.grids:
        print(json.dumps(run_grid(grid, args.repeat)), flush=True)


if __name__ == "__main__":
    main()
