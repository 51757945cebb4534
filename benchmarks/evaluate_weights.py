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

from emu_backend.validation.heldout import SUMMARY_COLUMNS, evaluate_heldout

from emu_backend.checkpoints.native import load_model_file
from emu_backend.inference import Emulator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--data", nargs="+", help="held-out sample files (default: the model's validation files in --data-dir)")
    p.add_argument("--data-dir", help="folder of the training set the model was trained on")
    p.add_argument("--z", nargs="+", type=float, default=[0.0, 0.5, 1.0, 2.0])
    p.add_argument("--k-max", type=float, default=1.0)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
