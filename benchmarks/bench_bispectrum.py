"""Benchmark (not a test): time the FFT bispectrum estimator on Gaussian meshes with ~100 triangle bins.

Timings are printed as ratios against a reference run in the same process: one forward real 3D FFT of
the same mesh (``scipy.fft.rfftn``, same number of workers, best of ``--repeat``).

    python benchmarks/bench_bispectrum.py                 # 128^3 and 256^3, float64
    python benchmarks/bench_bispectrum.py --dtype float32 --meshes 128
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import scipy.fft
from _timing import best_time, smoke_banner
from emu_backend.validation.bispectrum import bispectrum, triangle_bins


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meshes", type=int, nargs="+", default=[128, 256], help="mesh sizes N (N^3 cells)")
    parser.add_argument("--box", type=float, default=1000.0, help="box side [Mpc/h]")
    parser.add_argument("--shells", type=int, default=9, help="shells per side: 9 gives 115 triangle bins")
    parser.add_argument("--k-max-frac", type=float, default=0.75, help="largest shell centre / k_Nyquist")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--workers", type=int, default=-1, help="scipy.fft threads (-1: all cores)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats of the reference FFT (best taken)")
    parser.add_argument("--smoke", action="store_true", help="one 32^3 mesh, 3 shells (for CI; numbers mean nothing)")
    args = parser.parse_args(argv)
    smoke_banner(args.smoke)
    if args.smoke:
        args.meshes, args.shells, args.repeat = [32], 3, 1

    dtype = np.dtype(args.dtype)
    print(f"{'N':>5} {'bins':>5} {'shells':>6} {'B time [s]':>10} {'FFT [s]':>8} {'B / FFT':>8} {'peak RSS [GB]':>13}")
    for n in args.meshes:
        field = np.random.default_rng(n).standard_normal((n, n, n)).astype(dtype)
        k_nyq = np.pi * n / args.box
        dk = args.k_max_frac * k_nyq / args.shells
        tri = triangle_bins(args.shells * dk, dk)
        t_fft = best_time(lambda: scipy.fft.rfftn(field, workers=args.workers), args.repeat, warm_up=False)
        t0 = time.perf_counter()
        res = bispectrum(field, args.box, tri, k_width=dk, dtype=dtype, workers=args.workers)
        t_b = time.perf_counter() - t0
        n_shells = np.unique(tri).size
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # ru_maxrss is in kB on Linux
        assert np.all(res.n_triangles > 0)
        print(f"{n:>5} {len(tri):>5} {n_shells:>6} {t_b:>10.2f} {t_fft:>8.3f} {t_b / t_fft:>8.1f} {peak_gb:>13.2f}")


if __name__ == "__main__":
    main()
