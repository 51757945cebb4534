"""Accuracy of an emulator on held-out N-body runs (training-sample files), with 2LPT as the baseline.

For every held-out simulation and redshift: the emulator and 2LPT run from the run's own z = 0 linear
displacement, :func:`~emu_backend.validation.compare.compare` measures them against the N-body
snapshot, and a per-(simulation, z) report is written. The summary scalars are then averaged over
simulations per redshift: this is the table published for the shipped weights
(``docs/shipped_weights.md``, made by ``python benchmarks/evaluate_weights.py``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .._version import __version__
from ..datatypes.snapshot import Snapshot
from ..errors import InputError
from ..ics import InitialConditions
from ..io.atomic import atomic_path, check_overwrite
from ..io.output_lock import output_lock
from ..io.training_sample import read_training_sample
from ..simulator import EmulatorBackend, simulate
from .compare import compare
from .report import Thresholds, write_report

__all__ = ["evaluate_heldout", "SUMMARY_COLUMNS"]

logger = logging.getLogger(__name__)

#: Summary scalars tabulated per redshift and candidate.
SUMMARY_COLUMNS = ("max_abs_pk_ratio_minus_1", "min_r", "rms_displacement_error_mpc_h", "rms_velocity_error_km_s",
                   "max_abs_mass_function_ratio_minus_1")


def _truth_snapshot(sample, i_z: int):

    z = float(sample.z[i_z])
    return Snapshot.from_displacement(sample.displacement[i_z], sample.velocity[i_z], 1.0 / (1.0 + z),
                                      sample.box_size, sample.cosmology, meta={"source": "held-out N-body run"})


def evaluate_heldout(emulator, sample_files: Sequence, z: Sequence[float], out_dir, *, k_max: float = 1.0,
                     halos: bool | None = None, overwrite: bool = False, thresholds=None) -> dict:
    """Compare ``emulator`` and 2LPT with held-out N-body runs at the redshifts ``z``.

    Parameters
    ----------
    emulator : Emulator
        The model under test.
    sample_files : sequence of path
        Training-sample files (:mod:`emu_backend.io.training_sample`) NOT used in training.
    z : sequence of float
        Redshifts to test; each must be one of every file's output redshifts.
    out_dir : path
        Folder for one report per (simulation, z) (``sim<i>_z<z>/``) and ``summary.json``.
    k_max : float
        Largest k [h/Mpc] of the summary scalars (capped at each mesh's Nyquist frequency).
    halos : bool, optional
        Compare FoF halo mass functions (default: when halotools is installed).
    overwrite : bool
        Replace existing reports.
    thresholds : Thresholds, optional
        Pass/fail marks in the per-run reports (default: P within 1%, r > 0.99, the published targets).

    Returns
    -------
    dict
        ``{"z": [...], "files": [...], "mean": {z: {candidate: {column: value}}}, "runs": [...]}`` with
        the provenance (``package_version``, ``checksum`` and ``emulator`` source of the weights,
        ``config``; each run's ``seed`` and ``cosmology``), also written to ``out_dir/summary.json``.
        Each per-run ``report.json`` records the same in its ``meta``.

    Raises
    ------
    InputError
        No files or redshifts, a redshift missing from a file, or existing outputs without
        ``overwrite`` (checked before anything is computed).
    OutputLockedError
        Another evaluation is writing into ``out_dir`` (its lock file ``out_dir/.emu_backend.lock``).
    """


    files = [Path(f) for f in sample_files]
    if not files:
        raise InputError("sample_files is empty: give at least one held-out training-sample file")
    zs = [float(v) for v in z]
    if not zs:
        raise InputError("z is empty: give at least one redshift")
    thresholds = thresholds or Thresholds(max_pk_error=0.01, min_r=0.99)
    out_dir = Path(out_dir)
    # the folder's lock for the whole evaluation: a second evaluation into it is refused, not interleaved
    with output_lock(out_dir, folder=True, command="evaluate_heldout"):
        return _evaluate(emulator, files, zs, out_dir, k_max, halos, overwrite, thresholds)


def _evaluate(emulator, files: list[Path], zs: list[float], out_dir: Path, k_max: float, halos, overwrite: bool,
              thresholds: Thresholds) -> dict:
    """:func:`evaluate_heldout` with the folder locked and the arguments checked."""
    for path in [out_dir / "summary.json"] + [out_dir / f"sim{i}_z{zi:g}" / name for i in range(len(files))
                                              for zi in zs for name in ("report.json", "report.md")]:
        check_overwrite(path, overwrite)  # refuse before computing anything
    checksum = getattr(emulator, "checksum", "") or None
    config = {"z": zs, "k_max": k_max, "halos": halos, "thresholds": json.loads(json.dumps(asdict(thresholds)))}
    backend = EmulatorBackend(emulator)
    runs = []
    for i, path in enumerate(files):
        sample = read_training_sample(path)
        ics = InitialConditions.from_linear_displacement(sample.input_displacement, sample.box_size,
                                                         seed=sample.seed, provenance={"file": str(path)})
        for zi in zs:
            hits = np.flatnonzero(np.isclose(sample.z, zi, rtol=0, atol=1e-9))
            if hits.size != 1:
                raise InputError(f"{str(path)!r} has no output at z = {zi} (it has {sample.z.tolist()})")
            truth = _truth_snapshot(sample, int(hits[0]))
            emu = simulate(ics, sample.cosmology, z=zi, backend=backend)[0]
            lpt = simulate(ics, sample.cosmology, z=zi, backend="2lpt")[0]
            k_nyq = math.pi * sample.grid / sample.box_size
            result = compare(truth, {"emulator": emu, "2lpt": lpt}, k_max=min(k_max, k_nyq), halos=halos)
            result["heldout"] = {"file": str(path), "z": zi, "omega_m": sample.cosmology.omega_m,
                                 "sigma8": sample.cosmology.sigma8, "seed": sample.seed}
            result["meta"].update({"package_version": __version__, "seed": sample.seed, "checksum": checksum,
                                   "weights_source": emulator.source, "untrained": bool(emu.meta.get("untrained")),
                                   "config": config})
            write_report(result, out_dir / f"sim{i}_z{zi:g}", thresholds=thresholds, overwrite=overwrite)
            runs.append({"file": str(path), "z": zi, "seed": sample.seed, "cosmology": sample.cosmology.to_dict(),
                         "summary": result["summary"]})
            logger.info("held-out %s z=%g: emulator %s", path.name, zi, result["summary"]["emulator"])
    mean = {}
    for zi in zs:
        mean[f"{zi:g}"] = {}
        for cand in ("emulator", "2lpt"):
            cols = {}
            for col in SUMMARY_COLUMNS:
                vals = [r["summary"][cand].get(col) for r in runs if r["z"] == zi]
                vals = [v for v in vals if v is not None and math.isfinite(v)]
                cols[col] = float(np.mean(vals)) if vals else None
            mean[f"{zi:g}"][cand] = cols
    summary = {"z": zs, "files": [str(f) for f in files], "k_max": k_max, "emulator": emulator.source,
               "package_version": __version__, "checksum": checksum, "config": config, "mean": mean, "runs": runs}
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "summary.json", overwrite=overwrite) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=1, sort_keys=True))
    return summary
