"""A run (``emu-backend run``): seeded ICs -> backend -> snapshot files, a P(k) plot and ``run.json``.

A sequence of library calls (:class:`~emu_backend.ics.InitialConditions`,
:func:`~emu_backend.simulator.simulate`, the writers of :mod:`emu_backend.io`,
:func:`~emu_backend.pipelines.plot.plot_power`). Every output path is checked before anything is
computed, so an existing result is never replaced without ``overwrite``. The output folder is locked
for the whole run (:func:`~emu_backend.io.output_lock.output_lock`): a second run into it is refused.

Examples
--------
>>> import tempfile
>>> out = tempfile.mkdtemp()
>>> result = run(RunConfig(grid=8, z=(0.0,), backend="za", plot=False, out=out, overwrite=True))
>>> [p.name for p in result.files]
['snap_000.hdf5', 'run.json']
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..cosmology.linear_power import EisensteinHuPower, TabulatedPower
from ..datatypes.meta import meta_to_json
from ..errors import InputError
from ..ics import InitialConditions
from ..inference.memory import BOX_BASE_BYTES, MemoryEstimate, box_bytes, check_memory, pm_bytes
from ..io.atomic import atomic_path, check_overwrite
from ..io.fields import write_fields
from ..io.gadget import write_gadget_hdf5
from ..io.output_lock import output_lock
from ..io.output_path import check_free_space, check_writable, os_errors_as_package_errors
from ..simulator import EmulatorBackend, get_backend, simulate
from .plot import plot_power
from .provenance import versions
from .run_config import RunConfig

__all__ = ["RunConfig", "RunResult", "run", "planned_files", "memory_estimate", "SUMMARY_NAME", "PLOT_NAME"]

logger = logging.getLogger(__name__)

SUMMARY_NAME = "run.json"
PLOT_NAME = "power.png"


@dataclass(frozen=True)
class RunResult:
    """What a run produced.

    Attributes
    ----------
    config : RunConfig
    files : tuple of Path
        Every file written, in order (snapshots, plot, summary last).
    untrained : bool
        The emulator ran untrained (random) weights: outputs are not physical.
    checksum : str or None
        Checksum of the emulator weights.
    seconds : float
        Wall time of the run [s].
    """

    config: RunConfig
    files: tuple
    untrained: bool
    checksum: str | None
    seconds: float


def _snapshot_stem(config: RunConfig, index: int) -> str:
    return f"snap_{index:03d}" if config.format == "gadget" else f"fields_{index:03d}"


def planned_files(config: RunConfig) -> list[Path]:
    """Every file a run with ``config`` writes, in order."""
    out = Path(config.out)
    files = []
    for i in range(len(config.redshifts)):
        stem = _snapshot_stem(config, i)
        if config.format == "gadget":
            if config.n_files == 1:
                files.append(out / f"{stem}.hdf5")
            else:
                files.extend(out / f"{stem}.{j}.hdf5" for j in range(config.n_files))
        else:
            files.append(out / f"{stem}.{'h5' if config.format == 'fields' else 'npz'}")
    if config.plot:
        files.append(out / PLOT_NAME)
    files.append(out / SUMMARY_NAME)
    return files


def _backend_options(config: RunConfig, progress: bool) -> dict:
    if config.backend != "emulator":
        return {}
    return {"weights": config.weights, "tile_size": config.tile_size, "batch_size": config.batch_size,
            "device": config.device, "allow_extrapolation": config.allow_extrapolation,
            "check_memory": config.check_memory, "progress": progress}


def _write_snapshot(config: RunConfig, snap, index: int) -> list[Path]:
    out = Path(config.out)
    stem = _snapshot_stem(config, index)
    if config.format == "gadget":
        return write_gadget_hdf5(snap, out / stem, n_files=config.n_files, length_unit=config.length_unit,
                                 overwrite=config.overwrite)
    suffix = "h5" if config.format == "fields" else "npz"
    return [write_fields(out / f"{stem}.{suffix}", snap.displacement_field(), snap.velocity_field(),
                         box_size=snap.box_size, a=snap.a, cosmology=snap.cosmology, meta=snap.meta,
                         overwrite=config.overwrite)]


def _data_bytes(config: RunConfig) -> int:
    """Bytes of the snapshots' particle data (float32 positions and velocities, 64-bit IDs for Gadget)."""
    per_particle = 3 * 4 * 2 + (8 if config.format == "gadget" else 0)
    return len(config.redshifts) * config.grid ** 3 * per_particle


def memory_estimate(config: RunConfig, backend) -> MemoryEstimate:
    """The peak memory of a run with ``config`` and its constructed ``backend``.

    The box: ICs, snapshots, a writer, the plot's P(k) and baseline
    (:func:`~emu_backend.inference.memory.box_bytes`); with the emulator its tile pass and in-memory
    outputs (:meth:`EmulatorBackend.memory_estimate`); with a PM backend (one that has a ``mesh_factor``)
    its mesh (:func:`~emu_backend.inference.memory.pm_bytes`).
    """
    n, n_z = config.grid, len(config.redshifts)
    mesh_factor = getattr(backend, "mesh_factor", None)
    pm = pm_bytes(n, mesh_factor, backend.name) if mesh_factor is not None else 0
    baseline = config.plot and config.baseline != "none"
    host = box_bytes(n, n_z, backend=backend.name, plot=config.plot, baseline=baseline, pm=pm)
    what = f"run -n {n} ({backend.name}, {n_z} output time(s){', with the plot' if config.plot else ''})"
    advice = "use a smaller grid (-n)" + (" or --no-plot" if config.plot else "")
    if isinstance(backend, EmulatorBackend):
        tiles = backend.memory_estimate(n)
        return MemoryEstimate(what, host + tiles.host_bytes - BOX_BASE_BYTES, tiles.device_bytes, tiles.device,
                              advice + ", a smaller --tile-size or --batch-size")
    return MemoryEstimate(what, host, advice=advice)


def _files_of(written: list[Path], config: RunConfig, index: int) -> list[Path]:
    stem = _snapshot_stem(config, index)
    return [p for p in written if p.name.startswith(stem + ".")]


def run(config: RunConfig, *, progress: bool = False) -> RunResult:
    """Run the configured simulation and write its files into ``config.out``.

    Writes one snapshot per redshift (``snap_XXX[.i].hdf5`` or ``fields_XXX.h5|.npz``), the P(k)
    plot ``power.png`` (when ``config.plot``; with the baseline run from the same ICs) and the
    summary ``run.json`` (versions, config, seed, cosmology, backend, weights checksum, files).

    Parameters
    ----------
    config : RunConfig
    progress : bool
        Show progress bars (only drawn on a terminal).

    Returns
    -------
    RunResult

    Raises
    ------
    InputError
        An output file exists and ``config.overwrite`` is false (nothing is computed), a bad value, or an
        output folder that cannot be written (a file, under a file, no permission).
    OutputLockedError
        Another run is writing into ``config.out`` (its lock file ``.emu_backend.lock`` names it).
    ResourceError
        Less free disk space than the snapshots need, or an estimated peak memory (:func:`memory_estimate`)
        larger than the available memory without ``config.check_memory = False``.
    DomainError
        The emulator's training domain is left without ``allow_extrapolation``.
    """
    t0 = time.perf_counter()
    with os_errors_as_package_errors(config.out), output_lock(check_writable(config.out, folder=True), folder=True):
        return _run(config, progress, t0)


def _run(config: RunConfig, progress: bool, t0: float) -> RunResult:
    """:func:`run` with the output folder locked."""
    files = planned_files(config)
    for path in files:  # refuse before computing anything
        if path.is_dir():
            raise InputError(f"output {str(path)!r} is a folder; remove it or choose another --out")
        check_overwrite(path, config.overwrite)
    backend = get_backend(config.backend, **_backend_options(config, progress))
    if config.check_memory:  # before the ICs, the first large arrays
        check_memory(memory_estimate(config, backend))
    check_free_space(config.out, _data_bytes(config), f"the snapshots of {str(config.out)!r}")
    cosmo = config.cosmology
    power = (TabulatedPower.from_file(config.power, cosmology=cosmo) if config.power is not None
             else EisensteinHuPower(cosmo))
    ics = InitialConditions.from_noise(config.grid, config.box_size_mpc_h, cosmo, config.seed, power=power,
                                       fixed_amplitude=config.fixed_amplitude, paired=config.paired)
    provenance = {"config": config.to_dict(), "versions": versions()}
    snaps = simulate(ics, cosmo, z=config.z, a=config.a, backend=backend, meta=provenance)
    untrained = bool(snaps[0].meta.get("untrained", False))
    checksum = snaps[0].meta.get("checksum")

    Path(config.out).mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    show = progress and sys.stderr.isatty()
    for i, snap in enumerate(tqdm(snaps, desc="writing snapshots", unit="snap", disable=not show)):
        written.extend(_write_snapshot(config, snap, i))
    if config.plot:
        baselines = None
        if config.baseline != "none":
            baselines = simulate(ics, cosmo, z=config.z, a=config.a, backend=config.baseline)
        plot_meta = {**provenance, "seed": ics.seed, "checksum": checksum, "untrained": untrained,
                     "cosmology": cosmo.to_dict(), "backend": backend.name, "baseline": config.baseline}
        written.append(plot_power(Path(config.out) / PLOT_NAME, snaps, baselines, power, label=backend.name,
                                  baseline_label=config.baseline.upper(), untrained=untrained,
                                  metadata=plot_meta, overwrite=config.overwrite))
    seconds = time.perf_counter() - t0
    summary = {
        "package": "emu_backend",
        "versions": provenance["versions"],
        "config": provenance["config"],
        "seed": ics.seed,
        "cosmology": cosmo.to_dict(),
        "backend": backend.name,
        "checksum": checksum,
        "weights_source": snaps[0].meta.get("weights_source"),
        "untrained": untrained,
        "outputs": [{"z": s.z, "a": s.a, "files": [str(p) for p in _files_of(written, config, i)]}
                    for i, s in enumerate(snaps)],
        "files": [str(p) for p in written],
        "wall_seconds": round(seconds, 3),
    }
    summary_path = Path(config.out) / SUMMARY_NAME
    text = json.dumps(json.loads(meta_to_json(summary)), indent=2, sort_keys=False)
    with atomic_path(summary_path, overwrite=config.overwrite) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    written.append(summary_path)
    logger.info("run finished in %.1f s: %d file(s) in %s", seconds, len(written), config.out)
    return RunResult(config, tuple(written), untrained, checksum, seconds)
