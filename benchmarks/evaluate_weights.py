"""Accuracy of a trained model file on its held-out N-body runs, against 2LPT (the shipped-weights table).

Reads the validation files recorded in the model's provenance (or --data), runs
:func:`emu_backend.validation.heldout.evaluate_heldout` at the requested redshifts and prints the
per-redshift means as a Markdown table (the table of ``docs/shipped_weights.md``).

Usage: python benchmarks/evaluate_weights.py --weights emu_backend/data/default_zdep.emu \
           --out docs/shipped_weights (--data-dir SET | --data FILE ...) [--z 0 0.5 1 2] [--k-max 1.0]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from emu_backend.validation.heldout import SUMMARY_COLUMNS, evaluate_heldout

from emu_backend.checkpoints.native import load_model_file
from emu_backend.inference import Emulator


def smoke_sample(folder: Path) -> Path:
    """One 16^3 held-out sample at z = 0 whose target is 2LPT (instant): exercises the evaluation, not the
    weights (smoke mode only)."""
    import numpy as np

    from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    from emu_backend.ics import InitialConditions
    from emu_backend.io.training_sample import TrainingSample, write_training_sample
    from emu_backend.simulator import simulate

    ics = InitialConditions.from_noise(16, None, QUIJOTE_FIDUCIAL, seed=5)
    (snap,) = simulate(ics, QUIJOTE_FIDUCIAL, z=[0.0], backend="2lpt")
    sample = TrainingSample(ics.displacement, np.asarray([0.0]), snap.displacement_field()[None],
                            snap.velocity_field()[None], ics.box_size, QUIJOTE_FIDUCIAL, seed=5,
                            provenance={"backend": "2lpt", "generator": "benchmarks/evaluate_weights.py --smoke"})
    return write_training_sample(folder / "sim_000.h5", sample)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", help="model file (required unless --smoke)")
    p.add_argument("--data", nargs="+", help="held-out sample files (default: the model's validation files in --data-dir)")
    p.add_argument("--data-dir", help="folder of the training set the model was trained on")
    p.add_argument("--z", nargs="+", type=float, default=[0.0, 0.5, 1.0, 2.0])
    p.add_argument("--k-max", type=float, default=1.0)
    p.add_argument("--out", help="report folder (required unless --smoke)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--smoke", action="store_true",
                   help="the shipped weights on one 16^3 2LPT sample in a temporary folder (for CI; numbers mean "
                        "nothing)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.smoke:
        print("SMOKE MODE: smallest sizes, every code path exercised; the numbers below mean nothing", flush=True)
        from emu_backend.inference.default import default_weights_path

        tmp = Path(tempfile.mkdtemp(prefix="evaluate_weights_smoke_"))
        args.weights, args.data, args.z = str(default_weights_path()), [str(smoke_sample(tmp))], [0.0]
        args.out = str(tmp / "out")
    elif not (args.weights and args.out):
        p.error("--weights and --out are required (or --smoke)")
    files = args.data
    if not files:
        if not args.data_dir:
            p.error("give --data FILE ... or --data-dir DIR (the folder of the model's training set)")
        val = load_model_file(args.weights).provenance["training"]["data"]["val"]
        files = [f"{args.data_dir}/{d['name']}" for d in val]
    emu = Emulator.from_checkpoint(args.weights)
    s = evaluate_heldout(emu, files, args.z, args.out, k_max=args.k_max, overwrite=args.overwrite)
    print(f"held-out runs: {len(files)}; k <= {args.k_max} h/Mpc; mean over runs")
    print("| z | model | " + " | ".join(SUMMARY_COLUMNS) + " |")
    print("|---|---|" + "---|" * len(SUMMARY_COLUMNS))
    for z, by_cand in s["mean"].items():
        for cand, cols in by_cand.items():
            vals = ["n/a" if cols[c] is None else f"{cols[c]:.4g}" for c in SUMMARY_COLUMNS]
            print(f"| {z} | {cand} | " + " | ".join(vals) + " |")


if __name__ == "__main__":
    main()
