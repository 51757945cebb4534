"""Generate a training set: one PM N-body run per design cosmology, one HDF5 sample file per run.

For simulation ``i`` of the design, :func:`make_training_set`

1. draws seeded white noise (seed ``seed + i``) and the z = 0 linear field with the cosmology's P(k)
   (Eisenstein & Hu, or CLASS) on an ``n^3`` grid at the trained cell size, box ``1000 n / 512``
   Mpc/h (:meth:`InitialConditions.from_noise`);
2. runs the N-body backend (``"jaxpm"``, or ``"pmwd"`` where its adapter is installed) through
   :func:`~emu_backend.simulator.simulate` to the output redshifts;
3. writes ``sample_XXXX.h5`` (:func:`~emu_backend.io.training_sample.write_training_sample`,
   atomic) with the linear input, the targets and the provenance.

A ``manifest.json`` (written atomically before the first run) records the settings, the design
table and the package versions. Running again with the same settings resumes: complete sample files
are kept (the atomic writer guarantees that a file with its final name is complete, so a crash loses
at most the simulation in progress) and only missing ones are computed. Different settings on an
existing folder are refused unless ``overwrite=True``, which recomputes everything. The folder is locked
while a set is made (``.emu_backend.lock``, :mod:`emu_backend.io.output_lock`): a second run into it is
refused, with or without ``overwrite``.

The shipped default JaxPM settings (:data:`DEFAULT_JAXPM_OPTIONS`: mesh factor 3, rtol = atol = 1e-4,
2LPT start at a = 0.1) come from the convergence study in ``docs/training_data.md``: the ODE tolerance
is converged (rtol 1e-4 vs 1e-5: < 0.2% in P(k) to k = 1 h/Mpc) but the PM force resolution is not
(P(k = 1 h/Mpc) is ~8% low with mesh factor 2, ~4% with 3, ~2% with 4, against the finest run
available); mesh factor 3 is the compromise at ~3x the cost of 2. The force smoothing by the CIC
paint and read is compensated (``compensate=True``, see :mod:`emu_backend.adapters.jaxpm`), which in
the same study brings mesh factor 3 to ~1% up to k = 1 h/Mpc (0.3% at z = 0).
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import h5py
from tqdm.auto import tqdm

from .._version import __version__
from ..adapters.classy import ClassPower
from ..checks import check_int, check_reals
from ..cosmology.linear_power import EisensteinHuPower
from ..cosmology.params import Cosmology
from ..datatypes.meta import meta_to_json
from ..errors import DomainError, FileFormatError, InputError
from ..ics import InitialConditions
from ..inference import memory
from ..inference.domain import TRAINED_CELL_SIZE_MPC_H, TrainingDomain
from ..io.atomic import atomic_path
from ..io.jsonfile import read_json
from ..io.output_lock import output_lock
from ..io.output_path import check_writable, os_errors_as_package_errors
from ..io.training_sample import FORMAT_VERSION as SAMPLE_FORMAT_VERSION
from ..io.training_sample import write_training_sample
from ..simulator import get_backend, simulate
from .design import Design
from .user_data import sample_from_snapshots

__all__ = ["make_training_set", "memory_estimate", "MakeSetResult", "DEFAULT_JAXPM_OPTIONS", "MANIFEST_NAME",
           "sample_path", "read_manifest"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "emu_backend/training_set"
MANIFEST_VERSION = 1
#: Default JaxPM settings of a training run (docs/training_data.md): time stepping converged to 0.2% in
#: P(k <= 1 h/Mpc); force resolution within ~4% at k = 1 h/Mpc and ~1% at k <= 0.5 h/Mpc of the finest
#: JaxPM run (mesh factor 4, compensated), at ~3x the cost of mesh factor 2.
DEFAULT_JAXPM_OPTIONS = {"mesh_factor": 3, "rtol": 1e-4, "atol": 1e-4, "a_start": 0.1, "lpt_order": 2,
                         "compensate": True}
_POWERS = {"eisenstein_hu": "eisenstein_hu", "eh": "eisenstein_hu", "class": "class"}


@dataclass(frozen=True)
class MakeSetResult:
    """What :func:`make_training_set` did.

    Attributes
    ----------
    out_dir : Path
    files : tuple of Path
        Every sample file of the set, in design order.
    computed : tuple of int
        Indices of the simulations run by this call.
    skipped : tuple of int
        Indices whose complete file already existed.
    seconds : float
        Wall time of this call.
    """

    out_dir: Path
    files: tuple
    computed: tuple
    skipped: tuple
    seconds: float


def sample_path(out_dir, index: int) -> Path:
    """``out_dir / sample_XXXX.h5`` of simulation ``index``."""
    return Path(out_dir) / f"sample_{index:04d}.h5"


def _versions(backend: str) -> dict:
    out = {"emu_backend": __version__, "python": platform.python_version()}
    for dist in ("numpy", "scipy", "h5py", "torch", *({"jaxpm": ("jax", "jaxpm"), "pmwd": ("jax", "pmwd")}
                                                       .get(backend, ())), "classy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _check_redshifts(z) -> list[float]:
    lo, hi = TrainingDomain().z
    out = []
    for v in check_reals(z, "z", item="redshift"):
        if not lo <= v <= hi:
            raise DomainError(f"redshift z = {v!r} is outside the emulator's training range [{lo}, {hi}]")
        if v in out:
            raise InputError(f"redshift z = {v!r} is requested twice")
        out.append(v)
    return sorted(out)


def _as_design(design) -> Design:
    if isinstance(design, Design):
        out = design
    elif isinstance(design, Cosmology):
        out = Design.from_cosmologies([design])
    elif isinstance(design, Sequence) and not isinstance(design, (str, bytes)):
        out = Design.from_cosmologies(design)
    else:
        raise InputError(f"design must be a Design or a sequence of Cosmology, got {type(design).__name__}")
    lo, hi = TrainingDomain().omega_m
    for i, c in enumerate(out.cosmologies):
        if not lo <= c.omega_m <= hi:
            raise DomainError(f"design cosmology {i} has omega_m = {c.omega_m!r}, outside the training range "
                              f"[{lo}, {hi}]")
        if c.sigma8 is None:
            raise InputError(f"design cosmology {i} has no sigma8 (A_s normalisation is not supported here)")
    return out


def _power(name: str, cosmology: Cosmology):
    if name == "class":
        return ClassPower.from_cosmology(cosmology)
    return EisensteinHuPower(cosmology)


def read_manifest(out_dir) -> dict:
    """The ``manifest.json`` of a training-set folder (FileFormatError if missing or malformed)."""
    path = Path(out_dir) / MANIFEST_NAME
    manifest = read_json(path, "training-set manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise FileFormatError(f"{str(path)!r} is not a training-set manifest (format {MANIFEST_FORMAT!r})")
    return manifest


def _differences(old, new, prefix="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def _check_existing_sample(path: Path, index: int, settings: dict, cosmology: Cosmology, seed: int) -> None:
    """Refuse a complete-looking sample file that belongs to another configuration."""

    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            shape = f["displacement"].shape
            z = f["z"][...].tolist()
    except (OSError, KeyError, ValueError) as exc:
        raise FileFormatError(f"{str(path)!r} exists but cannot be read ({exc}); delete it to recompute it") from exc
    problems = []
    if int(attrs.get("seed", -2)) != seed:
        problems.append(f"seed {attrs.get('seed')!r} != {seed}")
    if json.loads(attrs.get("cosmology", "{}")) != json.loads(json.dumps(cosmology.to_dict())):
        problems.append("cosmology differs")
    n = settings["grid"]
    if tuple(shape) != (len(settings["z"]), 3, n, n, n) or z != settings["z"]:
        problems.append(f"shape {tuple(shape)} / z {z} differ from grid {n}, z {settings['z']}")
    if problems:
        raise InputError(f"{str(path)!r} (simulation {index}) does not match this configuration: "
                         f"{'; '.join(problems)}; delete it or pass overwrite=True")


def memory_estimate(grid: int, n_z: int, backend) -> memory.MemoryEstimate:
    """The peak memory of one simulation of a training set: its ICs, the N-body run of ``backend`` (its
    PM mesh where it has a ``mesh_factor``), the snapshots and the sample written from them."""
    mesh_factor = getattr(backend, "mesh_factor", None)
    pm = memory.pm_bytes(grid, mesh_factor, backend.name) if mesh_factor is not None else 0
    mesh = f", mesh {mesh_factor * grid}^3" if mesh_factor is not None else ""
    advice = "use a smaller --grid" + (" or --mesh-factor" if mesh_factor is not None else "")
    return memory.MemoryEstimate(f"make-training-set --grid {grid} ({backend.name}{mesh}, {n_z} redshift(s))",
                                 memory.box_bytes(grid, n_z, backend=backend.name, sample=True, pm=pm), advice=advice)


def make_training_set(out_dir, design, *, grid: int, z, backend: str = "jaxpm", backend_options: dict | None = None,
                      seed: int = 0, power: str = "eisenstein_hu", overwrite: bool = False,
                      progress: bool | None = None, check_memory: bool = True) -> MakeSetResult:
    """Run one N-body simulation per design cosmology and write the training samples.

    Parameters
    ----------
    out_dir : str or Path
        Folder of ``sample_XXXX.h5`` and ``manifest.json`` (created if needed).
    design : Design or sequence of Cosmology
        E.g. :func:`~emu_backend.training.design.latin_hypercube`; every Omega_m in [0.1, 0.5].
    grid : int
        Particles per side n >= 8; the box is ``1000 n / 512`` Mpc/h (the trained cell size).
    z : float or sequence of float
        Output redshifts in [0, 3], stored in increasing order.
    backend : str
        N-body backend of :func:`~emu_backend.simulator.simulate`: ``"jaxpm"`` (default) or ``"pmwd"``
        (or any registered name).
    backend_options : dict, optional
        Constructor options of the backend; for ``"jaxpm"`` default :data:`DEFAULT_JAXPM_OPTIONS`
        (given keys override them).
    seed : int
        Simulation ``i`` uses white-noise seed ``seed + i``.
    power : {"eisenstein_hu", "eh", "class"}
        Linear P(k) of the ICs: Eisenstein & Hu (1998) or CLASS (extra ``class``), normalised to sigma8.
    overwrite : bool
        Recompute every sample and replace the manifest, even with different settings.
    progress : bool, optional
        Progress bar over simulations; default on when stderr is a terminal.
    check_memory : bool
        Estimate the peak memory of one simulation (:func:`memory_estimate`) before anything is
        written and refuse a set whose simulations do not fit in the available memory; False runs anyway.

    Returns
    -------
    MakeSetResult

    Raises
    ------
    InputError
        Bad arguments, or an existing folder made with other settings (without ``overwrite``).
    OutputLockedError
        Another run is writing into ``out_dir`` (its lock file ``.emu_backend.lock`` names it).
    DomainError
        Omega_m or z outside the emulator's training domain.
    ResourceError
        One simulation's estimated peak memory exceeds the available memory (without ``check_memory=False``).

    Examples
    --------
    >>> import tempfile
    >>> from emu_backend.training.design import latin_hypercube
    >>> out = make_training_set(tempfile.mkdtemp(), latin_hypercube(2, seed=0), grid=8, z=[0.0, 1.0],
    ...                         backend="2lpt")
    >>> [p.name for p in out.files], out.computed
    (['sample_0000.h5', 'sample_0001.h5'], (0, 1))
    """


    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"out_dir {str(out)!r} exists and is not a folder")
    design = _as_design(design)
    n = check_int(grid, "grid", 8)
    zs = _check_redshifts(z)
    seed = check_int(seed, "seed", 0)
    if not isinstance(power, str) or power.lower() not in _POWERS:
        raise InputError(f"power must be one of {sorted(_POWERS)}, got {power!r}")
    power = _POWERS[power.lower()]
    if not isinstance(backend, str):
        raise InputError(f"backend must be a backend name, got {type(backend).__name__}")
    if backend_options is not None and not isinstance(backend_options, dict):
        raise InputError(f"backend_options must be a dict, got {type(backend_options).__name__}")
    options = {**(DEFAULT_JAXPM_OPTIONS if backend == "jaxpm" else {}), **(backend_options or {})}
    if backend in ("emulator",):
        raise InputError("backend 'emulator' cannot make training data; use an N-body backend (jaxpm, pmwd)")
    impl = get_backend(backend, **options)
    if check_memory:
        memory.check_memory(memory_estimate(n, len(zs), impl))
    box = TRAINED_CELL_SIZE_MPC_H * n
    settings = {"grid": n, "box_size": box, "z": zs, "backend": impl.name, "backend_settings": impl.describe(),
                "seed": seed, "power": power, "n_sims": len(design), "sample_format_version": SAMPLE_FORMAT_VERSION}
    manifest = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "settings": settings,
                "design": design.to_dict(), "versions": _versions(impl.name),
                "samples": [{"file": sample_path(out, i).name, "seed": seed + i, "cosmology": c.to_dict()}
                            for i, c in enumerate(design.cosmologies)]}
    manifest = json.loads(meta_to_json(manifest))  # plain JSON types, as read back
    # locked before the folder is looked at; a full disk while writing is the package's error
    with os_errors_as_package_errors(out), output_lock(check_writable(out, folder=True), folder=True):
        _prepare_folder(out, manifest, overwrite)
        files = tuple(sample_path(out, i) for i in range(len(design)))
        computed, skipped = [], []
        show = sys.stderr.isatty() if progress is None else bool(progress)
        bar = tqdm(total=len(design), desc="training set", unit="sim", disable=not show)
        try:
            for i, (cosmo, path) in enumerate(zip(design.cosmologies, files)):
                if path.exists() and not overwrite:
                    _check_existing_sample(path, i, settings, cosmo, seed + i)
                    skipped.append(i)
                    bar.update(1)
                    continue
                t_sim = time.perf_counter()
                ics = InitialConditions.from_noise(n, box, cosmo, seed + i, power=_power(power, cosmo))
                snaps = simulate(ics, cosmo, z=zs, backend=impl)
                seconds = time.perf_counter() - t_sim
                prov = {"training_set": str(out.resolve()), "index": i, "power": power, "backend": impl.name,
                        "backend_settings": impl.describe(), "seconds": round(seconds, 3),
                        "versions": manifest["versions"], "settings": manifest["settings"]}
                sample = sample_from_snapshots(ics, snaps, cosmology=cosmo, seed=seed + i, provenance=prov)
                write_training_sample(path, sample, overwrite=overwrite)
                computed.append(i)
                logger.info("simulation %d/%d (Omega_m = %.4f, sigma8 = %.4f, seed %d): %.1f s", i + 1, len(design),
                            cosmo.omega_m, cosmo.sigma8, seed + i, seconds)
                bar.update(1)
        finally:
            bar.close()
        logger.info("training set %s: %d computed, %d already there", out, len(computed), len(skipped))
        return MakeSetResult(out, files, tuple(computed), tuple(skipped), time.perf_counter() - t0)


def _prepare_folder(out: Path, manifest: dict, overwrite: bool) -> None:
    """Write the manifest, or check that an existing folder was made with the same settings."""
    path = out / MANIFEST_NAME
    if path.exists() and not overwrite:
        old = read_manifest(out)
        diffs = _differences({"settings": old.get("settings"), "design": old.get("design")},
                             {"settings": manifest["settings"], "design": manifest["design"]})
        if diffs:
            shown = "; ".join(diffs[:5]) + (f"; ... ({len(diffs)} differences)" if len(diffs) > 5 else "")
            raise InputError(f"{str(out)!r} holds a training set made with other settings ({shown}); use another "
                             f"folder, the same settings to resume, or overwrite=True (--overwrite) to start again")
        if old.get("versions") != manifest["versions"]:
            logger.warning("resuming %s with other package versions (%s); each sample records its own", out,
                           "; ".join(_differences(old.get("versions"), manifest["versions"])))
        for part in sorted(out.glob(".sample_*.part")):  # left by a killed run (atomic_path's temporary)
            logger.warning("removing %s, the partial file of an interrupted run", part)
            part.unlink(missing_ok=True)
        logger.info("resuming the training set in %s", out)
        return
    stray = sorted(p.name for p in out.glob("sample_*.h5")) if out.is_dir() else []
    if stray and not overwrite:
        raise InputError(f"{str(out)!r} holds sample files ({stray[0]}, ...) but no {MANIFEST_NAME}; their settings "
                         f"cannot be checked: use another folder or overwrite=True (--overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    logger.info("wrote %s", path)
