"""A large box through the bounded-memory streaming path: time per tile and peak memory.

Writes (once, in a child process, so its memory does not count) a z = 0 linear displacement field of
``n^3`` cells (box ``n * 1000/512`` Mpc/h: the trained resolution) as an HDF5 field file, then runs
:func:`~emu_backend.inference.streaming.predict_to_file` from it with the chosen tile size, logging
every tile. Killed and started again with the same arguments, it resumes where it stopped (the
``.partial`` file's progress record) and adds to the cumulative timing kept in ``<workdir>/timing.json``.

The emulator is the package default (the shipped weights); ``--width 64`` runs the published
width instead (seeded random weights: the cost of a trained full-width network, not its output). The
log records the machine's load average beside every tile, so that times taken on a shared machine
can be told apart from quiet ones. Peak memory is the process's maximum resident set size (``getrusage``).

Usage::

    nice -n 19 python benchmarks/run_512.py --workdir /tmp/run512 --tile 128 [--velocity] [--n 512]
    python benchmarks/run_512.py --n 128 --tile 128 --workdir /tmp/one_tile   # one tile: memory per tile

The last line of a finished run reads ``DONE n=512 tile=128 ...: total X s over 64 tiles (Y s per
tile), peak RSS Z GiB``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import resource
import tempfile
import time
from pathlib import Path


def peak_rss_gib() -> float:
    """Peak resident set size of this process [GiB] (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_input(path: Path, n: int, seed: int) -> None:
    """Seeded Zel'dovich displacement of a Quijote-fiducial box, written atomically (HDF5 field file)."""
    from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    from emu_backend.ics import InitialConditions
    from emu_backend.io.fields import write_fields

    ics = InitialConditions.from_noise(n, None, QUIJOTE_FIDUCIAL, seed)
    write_fields(path, ics.displacement, box_size=ics.box_size, a=1.0, cosmology=QUIJOTE_FIDUCIAL,
                 meta={"seed": seed, "generator": "benchmarks/run_512.py"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=512, help="cells per side (default 512)")
    p.add_argument("--tile", type=int, default=128, help="output tile size (input tiles: tile + 96)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--velocity", action="store_true", help="also velocities (about 2.5x the time)")
    p.add_argument("--z", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workdir", default="/tmp/run512")
    p.add_argument("--width", type=int, default=None,
                   help="run a seeded random network of this width instead of the shipped weights")
    p.add_argument("--smoke", action="store_true",
                   help="a 16^3 box in 8^3 tiles with velocities, width 4, in a temporary folder (for CI; numbers "
                        "mean nothing)")
    args = p.parse_args()
    if args.smoke:
        print("SMOKE MODE: smallest sizes, every code path exercised; the numbers below mean nothing", flush=True)
        args.n, args.tile, args.velocity, args.width = 16, 8, True, 4
        args.workdir = tempfile.mkdtemp(prefix="run_512_smoke_")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("run_512")

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"linear_{args.n}_seed{args.seed}.h5"
    if not src.exists():
        t = time.perf_counter()
        child = mp.get_context("spawn").Process(target=make_input, args=(src, args.n, args.seed))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"input generation failed (exit code {child.exitcode})")
        log.info("input %s written in %.1f s (child process)", src, time.perf_counter() - t)

    import torch

    from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    from emu_backend.inference import default_emulator
    from emu_backend.inference.streaming import predict_to_file
    from emu_backend.io.atomic import atomic_path
    from emu_backend.nn.flops import network_flops

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.width:
        from emu_backend.inference import Emulator, ZdepConvention
        from emu_backend.nn import StyledVNet

        torch.manual_seed(0)
        emu = Emulator(ZdepConvention(StyledVNet(2, 3, 3, args.width)))
    else:
        emu = default_emulator()
    tag = (f"n{args.n}_t{args.tile}_b{args.batch}{'_vel' if args.velocity else ''}"
           f"{f'_w{args.width}' if args.width else ''}")
    out = work / f"nonlinear_{tag}.h5"
    timing_path = work / f"timing_{tag}.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {"seconds": 0.0, "tiles": 0, "runs": 0}
    flops = network_flops(emu.model.net, args.tile + 96)
    log.info("machine %s, torch %s, %d threads; %d^3 box, tile %d (input %d^3, %.0f GFLOP per tile%s)",
             platform.processor() or platform.machine(), torch.__version__, torch.get_num_threads(), args.n,
             args.tile, args.tile + 96, flops / 1e9, ", + velocity" if args.velocity else "")
    if out.exists():
        log.info("%s already complete", out)
    partial = out.with_name(out.name + ".partial")
    start = 0
    if partial.exists():
        import h5py

        with h5py.File(partial, "r") as f:
            start = int(f.attrs["next_tile"])
        log.info("resuming %s from tile %d", partial, start)
    state = {"t": time.perf_counter(), "tile": start, "done": 0}

    def on_batch(next_tile: int, n_tiles: int) -> None:
        now = time.perf_counter()
        done = next_tile - state["tile"]
        state["tile"] = next_tile
        state["done"] += done
        dt = now - state["t"]
        state["t"] = now
        timing["seconds"] += dt
        timing["tiles"] += done
        with atomic_path(timing_path) as tmp:  # a kill mid-write leaves the previous record
            tmp.write_text(json.dumps(timing))
        log.info("tile %d/%d: %.1f s (%.1f s per tile), peak RSS %.2f GiB, load average %.2f", next_tile, n_tiles,
                 dt, dt / done, peak_rss_gib(), os.getloadavg()[0])

    t0 = time.perf_counter()
    if not out.exists():
        timing["runs"] += 1
        predict_to_file(emu, src, out, QUIJOTE_FIDUCIAL.omega_m, args.z, velocity=args.velocity, tile_size=args.tile,
                        batch_size=args.batch, on_batch=on_batch)
    wall = time.perf_counter() - t0
    per = timing["seconds"] / max(timing["tiles"], 1)
    log.info("this invocation: %.1f s wall, %d tiles, peak RSS %.2f GiB, load average (1/5/15 min) %s", wall,
             state["done"], peak_rss_gib(), os.getloadavg())
    print(f"DONE n={args.n} tile={args.tile} batch={args.batch} velocity={args.velocity}: total {timing['seconds']:.1f} s "
          f"over {timing['tiles']} tiles ({per:.1f} s per tile, {timing['runs']} invocation(s)), "
          f"peak RSS {peak_rss_gib():.2f} GiB (this invocation), output {out}", flush=True)


if __name__ == "__main__":
    main()
