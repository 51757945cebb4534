"""A run (``emu-backend run``): seeded ICs -> backend -> snapshot files, a figure and ``run.json``.

A sequence of library calls (:class:`~emu_backend.ics.InitialConditions`,
:func:`~emu_backend.simulator.simulate`, the writers of :mod:`emu_backend.io`,
:func:`~emu_backend.pipelines.plot.plot_power`). The figure compares the run's P(k) with the
realization's own linear power, the baseline (2LPT), halofit (where classy is installed) and, with
``reference="jaxpm"`` or ``"pmwd"``, a PM N-body run from the same ICs, beside density slices. Every output path is checked before anything is
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
import time
from dataclasses import dataclass
from pathlib import Path

from ..adapters.classy import ClassPower
from ..cosmology.linear_power import EisensteinHuPower, TabulatedPower
from ..datatypes.meta import meta_to_json
from ..errors import EmuBackendError, InputError, MissingDependencyError
from ..ics import InitialConditions
from ..inference.memory import BOX_BASE_BYTES, MemoryEstimate, box_bytes, check_memory, pm_bytes
from ..io.atomic import atomic_path, check_overwrite
from ..io.fields import write_fields
from ..io.gadget import write_gadget_hdf5
from ..io.output_lock import output_lock
from ..io.output_path import check_free_space, check_writable, os_errors_as_package_errors
from ..simulator import EmulatorBackend, get_backend, simulate
from .plot import density_slice, plot_power, plotted_k_max, power_curves
from .provenance import versions
from .run_config import RunConfig
from .steps import Steps
from .weights_record import weights_record

__all__ = ["RunConfig", "RunResult", "run", "planned_files", "memory_estimate", "SUMMARY_NAME", "PLOT_NAME"]

logger = logging.getLogger(__name__)

SUMMARY_NAME = "run.json"
PLOT_NAME = "power.png"
#: Mesh cells per particle per side of the PM backends' default runs (the figure's reference).
REFERENCE_MESH_FACTOR = {"jaxpm": 2, "pmwd": 3}


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
    weights : dict or None
        The emulator's weights as recorded in ``run.json`` (:func:`~.weights_record.weights_record`):
        ``label``, ``path``, ``checksum`` and, for the shipped weights, their documented accuracy.
    """

    config: RunConfig
    files: tuple
    untrained: bool
    checksum: str | None
    seconds: float
    weights: dict | None = None


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
    its mesh (:func:`~emu_backend.inference.memory.pm_bytes`), and so has the figure's N-body reference.
    """
    n, n_z = config.grid, len(config.redshifts)
    mesh_factor = getattr(backend, "mesh_factor", None)
    pm = pm_bytes(n, mesh_factor, backend.name) if mesh_factor is not None else 0
    if config.plot and config.reference != "none":  # the figure's N-body reference, at its default mesh
        pm = max(pm, pm_bytes(n, REFERENCE_MESH_FACTOR[config.reference], config.reference))
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


def _halofit(cosmo, redshifts, k_max: float):
    """``(k, z) -> (P_halofit, P_lin)`` from CLASS, or None where classy is not installed."""
    try:
        power = ClassPower.from_cosmology(cosmo, extra_params={"non_linear": "halofit"},
                                          k_max_h_mpc=max(2.0 * k_max, 1.0), z_max=max(max(redshifts), 0.1) + 0.1)
    except MissingDependencyError:
        logger.info("classy is not installed: the figure has no halofit curve (pip install '.[class]')")
        return None
    except EmuBackendError as exc:  # a curve of the figure is not worth the run: say so and go on without it
        logger.warning("no halofit curve on the figure: %s", exc)
        return None
    if max(redshifts) > power.z_max or min(redshifts) < 0:
        logger.warning("no halofit curve on the figure: CLASS tabulates z in [0, %g]", power.z_max)
        return None
    return lambda k, z: (power.nonlinear(k, z), power(k, z))


def _run_steps(config: RunConfig) -> list[str]:
    steps = ["initial conditions", config.backend, "write snapshots"]
    if config.plot:
        steps += [f"baseline {config.baseline}"] if config.baseline != "none" else []
        steps += [f"reference {config.reference}"] if config.reference != "none" else []
        steps += ["halofit"] if config.halofit else []
        steps += ["figure"]
    return steps


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
    steps = Steps("run", _run_steps(config), progress)
    try:
        return _run_steps_in(config, backend, steps, t0)
    finally:
        steps.close()


def _run_steps_in(config: RunConfig, backend, steps: Steps, t0: float) -> RunResult:
    cosmo = config.cosmology
    with steps("initial conditions"):
        power = (TabulatedPower.from_file(config.power, cosmology=cosmo) if config.power is not None
                 else EisensteinHuPower(cosmo))
        ics = InitialConditions.from_noise(config.grid, config.box_size_mpc_h, cosmo, config.seed, power=power,
                                           fixed_amplitude=config.fixed_amplitude, paired=config.paired)
    provenance = {"config": config.to_dict(), "versions": versions()}
    with steps(config.backend):
        snaps = simulate(ics, cosmo, z=config.z, a=config.a, backend=backend, meta=provenance)
    untrained = bool(snaps[0].meta.get("untrained", False))
    checksum = snaps[0].meta.get("checksum")
    weights = weights_record(config.weights, checksum, untrained) if backend.name == "emulator" else None

    Path(config.out).mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with steps("write snapshots"):
        for i, snap in enumerate(snaps):
            written.extend(_write_snapshot(config, snap, i))
    if config.plot:
        written.append(_figure(config, ics, snaps, backend, weights, steps, provenance, untrained, checksum))
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
        "weights": weights,
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
    return RunResult(config, tuple(written), untrained, checksum, seconds, weights)


def _figure(config: RunConfig, ics, snaps, backend, weights, steps: Steps, provenance, untrained, checksum) -> Path:
    """The run's ``power.png``: P(k) against the realization's linear power, the baseline, the reference
    and halofit, and density slices at the first output time."""
    cosmo = config.cosmology
    baselines = references = halofit = None
    if config.baseline != "none":
        with steps(f"baseline {config.baseline}"):
            baselines = simulate(ics, cosmo, z=config.z, a=config.a, backend=config.baseline)
    if config.reference != "none":
        with steps(f"reference {config.reference}"):
            references = simulate(ics, cosmo, z=config.z, a=config.a, backend=config.reference)
    if config.halofit:
        with steps("halofit"):
            halofit = _halofit(cosmo, config.redshifts, plotted_k_max(config.grid, config.box_size_mpc_h))
    with steps("figure"):
        curves = power_curves(snaps, ics.density, baselines=baselines, references=references, halofit=halofit)
        slices = {f"{backend.name} z={snaps[0].z:g}": density_slice(snaps[0])}
        if baselines is not None:
            slices[f"{config.baseline.upper()} z={snaps[0].z:g}"] = density_slice(baselines[0])
        if references is not None:
            slices[f"{config.reference} z={snaps[0].z:g}"] = density_slice(references[0])
        plot_meta = {**provenance, "seed": ics.seed, "checksum": checksum, "untrained": untrained,
                     "cosmology": cosmo.to_dict(), "backend": backend.name, "baseline": config.baseline,
                     "reference": config.reference, "halofit": halofit is not None, "weights": weights,
                     "k_max_h_mpc": curves.k_max}
        return plot_power(Path(config.out) / PLOT_NAME, curves, slices, label=backend.name,
                          baseline_label=config.baseline.upper(), reference_label=config.reference,
                          weights_label=(weights or {}).get("label"), box_size=ics.box_size, grid=ics.n,
                          untrained=untrained, metadata=plot_meta, overwrite=config.overwrite)
