"""A validation (``emu-backend validate``): the emulator and baselines against a reference N-body
snapshot, measured by every statistic of :mod:`emu_backend.validation` and written as a report.

Two sources of truth:

* ``against="quijote"``: a Quijote simulation (``root``, ``sim``, ``snapnum``, ``halos_dir``; the
  download layout or a folder, :class:`~emu_backend.io.quijote_layout.QuijoteLayout`). The ICs
  (z = 127) give the linear displacement (:func:`~emu_backend.io.quijote.linear_displacement_from_ics`)
  and the ID map that orders the snapshot and the halo members, the set the cosmology,
  ``snapdir_XXX`` the truth and ``groups_XXX`` (found in the Halos tree) its FoF halos.
* ``against="jaxpm"`` or ``"pmwd"``: the truth is that PM backend run from seeded ICs.

The candidates (default: emulator, then 2LPT) run from the same ICs at the truth's redshift;
:func:`~emu_backend.validation.compare.compare` measures every statistic and
:func:`~emu_backend.validation.report.write_report` writes ``report.json``, ``report.md`` and the PNG
plots into ``out``, which is locked for the whole run (a second run into it is refused). The first
candidate is judged against the thresholds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..checks import check_bool, check_choice, check_int, check_positive, check_real
from ..cosmology.params import Cosmology
from ..errors import InputError
from ..ics import InitialConditions
from ..inference.tiling import check_tile_size
from ..io.atomic import check_overwrite
from ..io.output_lock import output_lock
from ..io.output_path import check_writable, os_errors_as_package_errors
from ..io.quijote import QuijoteSimulation, linear_displacement_from_ics
from ..simulator import get_backend, simulate
from ..validation.compare import compare
from ..validation.report import REPORT_FILES, Report, Thresholds, write_report
from .provenance import versions
from .steps import Steps
from .weights_record import weights_record

__all__ = ["ValidateConfig", "ValidateResult", "validate", "AGAINST", "CANDIDATES"]

logger = logging.getLogger(__name__)

#: Sources of the reference snapshot.
AGAINST = ("quijote", "jaxpm", "pmwd")
#: Backends that can be candidates.
CANDIDATES = ("emulator", "2lpt", "za")


def _optional(check, value, *args, **kwargs):
    return None if value is None else check(value, *args, **kwargs)


@dataclass(frozen=True)
class ValidateConfig:
    """Everything :func:`validate` needs; validated on construction.

    Parameters
    ----------
    against : {"quijote", "jaxpm", "pmwd"}
        Source of the reference snapshot.
    root : str or None
        Quijote folder: the download root or ``Snapshots/<set>`` (with ``sim``), or one simulation
        folder. Needed by, and only allowed with, ``against="quijote"`` (as are ``sim``, ``snapnum``
        and ``halos_dir``).
    sim : int or None
        Simulation index under ``root`` (latin-hypercube row), >= 0.
    snapnum : int or None
        Snapshot number, >= 0; None: the last ``snapdir_XXX``.
    correct_2lpt : bool
        Remove the 2LPT part of the Quijote ICs' displacement before dividing by D(127).
    seed : int
        White-noise seed of a PM reference, >= 0.
    grid : int
        Particles per side of a PM reference, in [8, 4096].
    box_size : float or None
        Box side of a PM reference [Mpc/h], > 0; None: ``1000 grid / 512``.
    cosmology : str
        Preset of a PM reference (``"quijote"``, ``"planck18"``).
    omega_m : float or None
        Overrides Omega_m of the preset (the cosmology is then named ``"custom"``).
    z : float
        Redshift of a PM reference, > -1/3.
    mesh_factor : int
        PM mesh cells per particle per side, >= 1.
    a_start : float or None
        Scale factor of the PM run's LPT start, in (0, 1).
    candidates : tuple of str
        Distinct names from ``("emulator", "2lpt", "za")``; the first is judged, the others are baselines.
    weights : str or None
        Emulator checkpoint; None: the shipped default weights.
    tile_size : int or None
        Emulator output cells per tile side, a positive multiple of 8; None: automatic.
    batch_size : int
        Tiles per network call, >= 1.
    device : str
        Torch device of the emulator.
    allow_extrapolation : bool
        Let the emulator run outside its training domain (with a warning).
    n_mesh : int or None
        Mesh per side for P(k), B and RSD, >= 1; None: the particle grid.
    k_max : float or None
        Largest k [h/Mpc] of the checks, > 0; None: half the mesh Nyquist frequency.
    max_pk_error, min_r : float or None
        Thresholds on ``max |P/P_ref - 1|`` and ``min r(k)`` over ``k <= k_max`` (see
        :class:`~emu_backend.validation.report.Thresholds`).
    halos : bool
        Compare FoF halos and mass functions.
    halos_dir : str or None
        Folder holding the Quijote FoF catalogue's ``groups_XXX/`` (``--halos``); None: searched in the
        simulation folder and the download's ``Halos/FoF_id``, ``Halos/FoF`` trees.
    out : str
        Report folder.
    overwrite : bool
        Replace existing report files (otherwise refused before anything is computed).

    Examples
    --------
    >>> ValidateConfig(against="jaxpm", grid=16, candidates=("2lpt",)).thresholds.judged
    ('2lpt',)
    """

    against: str
    root: str | None = None
    sim: int | None = None
    snapnum: int | None = None
    correct_2lpt: bool = True
    seed: int = 42
    grid: int = 32
    box_size: float | None = None
    cosmology: str = "quijote"
    omega_m: float | None = None
    z: float = 0.0
    mesh_factor: int = 2
    a_start: float | None = None
    candidates: tuple = ("emulator", "2lpt")
    weights: str | None = None
    tile_size: int | None = None
    batch_size: int = 1
    device: str = "cpu"
    allow_extrapolation: bool = False
    n_mesh: int | None = None
    k_max: float | None = None
    max_pk_error: float | None = 0.05
    min_r: float | None = 0.95
    halos: bool = True
    halos_dir: str | None = None
    out: str = "validate_out"
    overwrite: bool = False

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)
        check_choice(self.against, "against", AGAINST)
        if self.against == "quijote" and self.root is None:
            raise InputError("against='quijote' needs root, the Quijote folder (ROOT)")
        if self.against != "quijote" and (self.root is not None or self.sim is not None or self.snapnum is not None):
            raise InputError(f"root, sim and snapnum (ROOT, --sim, --snapnum) apply to --against quijote, "
                             f"not --against {self.against}")
        if self.against != "quijote" and self.halos_dir is not None:
            raise InputError(f"halos_dir (--halos) applies to --against quijote, not --against {self.against}")
        if self.halos_dir is not None and not self.halos:
            raise InputError("halos_dir (--halos) and halos=False (--no-halos) contradict each other")
        for key in ("root", "halos_dir"):
            if getattr(self, key) is not None:
                put(key, str(getattr(self, key)))
        put("sim", _optional(check_int, self.sim, "sim", 0))
        put("snapnum", _optional(check_int, self.snapnum, "snapnum", 0))
        put("seed", check_int(self.seed, "seed", 0))
        put("grid", check_int(self.grid, "grid", 8, 4096))
        put("box_size", _optional(check_positive, self.box_size, "box_size"))
        Cosmology.preset(self.cosmology)
        put("omega_m", _optional(check_real, self.omega_m, "omega_m", 0.0, 1.0, lo_open=True))
        put("z", check_real(self.z, "z", -1.0 / 3.0, 1000.0, lo_open=True))
        put("mesh_factor", check_int(self.mesh_factor, "mesh_factor", 1))
        put("a_start", _optional(check_real, self.a_start, "a_start", 0.0, 1.0, lo_open=True, hi_open=True))
        names = (self.candidates,) if isinstance(self.candidates, str) else tuple(self.candidates)
        for name in names:
            check_choice(name, "candidate", CANDIDATES)
        if not names or len(set(names)) != len(names):
            raise InputError(f"candidates must be distinct names from {list(CANDIDATES)}, got {list(names)}")
        put("candidates", names)
        if self.weights is not None:
            put("weights", str(self.weights))
        put("tile_size", _optional(check_tile_size, self.tile_size, "tile_size"))
        put("batch_size", check_int(self.batch_size, "batch_size", 1, what="a positive integer"))
        if not isinstance(self.device, str) or not self.device:
            raise InputError(f"device must be a non-empty string, got {self.device!r}")
        put("n_mesh", _optional(check_int, self.n_mesh, "n_mesh", 1))
        put("k_max", _optional(check_positive, self.k_max, "k_max"))
        for key in ("correct_2lpt", "allow_extrapolation", "halos", "overwrite"):
            put(key, check_bool(getattr(self, key), key))
        put("out", str(self.out))
        _ = self.thresholds  # Thresholds validates max_pk_error and min_r

    @property
    def thresholds(self) -> Thresholds:
        """The accuracy requirements, judging the first candidate."""
        return Thresholds(max_pk_error=self.max_pk_error, min_r=self.min_r, judged=(self.candidates[0],))

    def pm_cosmology(self) -> Cosmology:
        """Cosmology of a PM reference: the preset, with ``omega_m`` if given (then named ``"custom"``)."""
        cosmo = Cosmology.preset(self.cosmology)
        return cosmo if self.omega_m is None else cosmo.clone(omega_m=self.omega_m, name="custom")

    def to_dict(self) -> dict:
        """JSON-serialisable dict of the keys (recorded in the report's ``meta.config``)."""
        d = asdict(self)
        d["candidates"] = list(self.candidates)
        return d


@dataclass(frozen=True)
class ValidateResult:
    """What :func:`validate` wrote and measured.

    Attributes
    ----------
    report : Report
        The written files and the threshold checks.
    comparison : dict
        The :func:`~emu_backend.validation.compare.compare` result, with the provenance in ``meta``.
    """

    report: Report
    comparison: dict

    @property
    def passed(self) -> bool:
        """Whether the judged candidate met every threshold."""
        return self.report.passed


def _reference_quijote(config: ValidateConfig):
    sim = QuijoteSimulation.open(config.root, config.sim, halos=config.halos_dir)
    snapnums = sim.snapnums()
    snapnum = config.snapnum if config.snapnum is not None else (snapnums[-1] if snapnums else None)
    if snapnum is None:
        raise InputError(f"{str(sim.folder)!r} holds no snapdir_XXX folder")
    cosmo = sim.cosmology()
    ics_snapshot, lagrangian_map = sim.read_ics_with_map(cosmo)  # the ID map orders snapshot and halo members
    psi = linear_displacement_from_ics(ics_snapshot, cosmo, correct_2lpt=config.correct_2lpt)
    ics = InitialConditions.from_linear_displacement(
        psi, ics_snapshot.box_size, seed=sim.seed(),
        provenance={"source": "quijote", "folder": str(sim.folder), "sim": sim.sim,
                    "correct_2lpt": config.correct_2lpt})
    truth = sim.read_snapshot(snapnum, cosmo, lagrangian_map=lagrangian_map)
    halos = None
    if config.halos and sim.has_halos(snapnum):
        halos = sim.read_halos(snapnum, truth, lagrangian_map=lagrangian_map)
    source = {"against": "quijote", "folder": str(sim.folder), "sim": sim.sim, "snapnum": snapnum,
              "lagrangian_map": lagrangian_map.proof,
              "halos_from": str(sim.groups_dir(snapnum)) if halos is not None else ("fof" if config.halos else None)}
    return cosmo, ics, truth, halos, source


def _reference_pm(config: ValidateConfig):
    cosmo = config.pm_cosmology()
    ics = InitialConditions.from_noise(config.grid, config.box_size, cosmo, seed=config.seed)
    options = {"mesh_factor": config.mesh_factor}
    if config.a_start is not None:
        options["a_start"] = config.a_start
    truth = simulate(ics, cosmo, z=config.z, backend=config.against, **options)[0]
    source = {"against": config.against, "seed": config.seed, "grid": config.grid, "box_size_mpc_h": ics.box_size,
              "backend_options": options, "halos_from": "fof" if config.halos else None}
    return cosmo, ics, truth, None, source


def validate(config: ValidateConfig, *, progress: bool = False) -> ValidateResult:
    """Run the configured comparison and write the report into ``config.out``.

    Parameters
    ----------
    config : ValidateConfig
    progress : bool
        Show the emulator's tile progress bar (only drawn on a terminal).

    Returns
    -------
    ValidateResult
        ``passed`` is False when the judged candidate misses a threshold (the report is written).

    Raises
    ------
    InputError
        A report file exists and ``config.overwrite`` is false (nothing is computed), a bad value, or a
        report folder that cannot be written.
    OutputLockedError
        Another run is writing into ``config.out`` (its lock file ``.emu_backend.lock`` names it).
    FileFormatError
        Missing or corrupt Quijote files.
    MissingDependencyError
        The PM backend's extra is not installed.
    """
    t0 = time.perf_counter()
    with os_errors_as_package_errors(config.out), output_lock(check_writable(config.out, folder=True), folder=True):
        return _validate(config, progress, t0)


def _validate(config: ValidateConfig, progress: bool, t0: float) -> ValidateResult:
    """:func:`validate` with the report folder locked."""
    for name in REPORT_FILES:  # refuse before computing anything
        check_overwrite(Path(config.out) / name, config.overwrite)
    steps = Steps("validate", [f"reference {config.against}", *config.candidates, "statistics", "report"], progress)
    try:
        return _validate_steps(config, progress, t0, steps)
    finally:
        steps.close()


def _validate_steps(config: ValidateConfig, progress: bool, t0: float, steps: Steps) -> ValidateResult:
    reference = _reference_quijote if config.against == "quijote" else _reference_pm
    with steps(f"reference {config.against}"):
        cosmo, ics, truth, halos, source = reference(config)
    candidates, meta = {}, {}
    for name in config.candidates:
        options = {}
        if name == "emulator":
            options = {"weights": config.weights, "tile_size": config.tile_size, "batch_size": config.batch_size,
                       "device": config.device, "allow_extrapolation": config.allow_extrapolation,
                       "progress": progress}
        with steps(name):
            snap = simulate(ics, cosmo, z=truth.z, backend=get_backend(name, **options))[0]
        candidates[name] = snap
        if name == "emulator":
            untrained = bool(snap.meta.get("untrained"))
            meta = {"untrained": untrained, "checksum": snap.meta.get("checksum"),
                    "weights_source": snap.meta.get("weights_source"),
                    "weights": weights_record(config.weights, snap.meta.get("checksum"), untrained)}
    with steps("statistics"):
        result = compare(truth, candidates, n_mesh=config.n_mesh, k_max=config.k_max, truth_halos=halos,
                         halos=config.halos)
    result["meta"].update({"reference": source, "truth_source": config.against, "seed": ics.seed, **meta,
                           "package_version": versions()["emu_backend"], "config": config.to_dict(),
                           "versions": versions(), "wall_seconds": round(time.perf_counter() - t0, 3)})
    with steps("report"):
        report = write_report(result, config.out, thresholds=config.thresholds, overwrite=config.overwrite)
    logger.info("validation %s in %.1f s: %d file(s) in %s", "passed" if report.passed else "failed",
                time.perf_counter() - t0, len(report.files), config.out)
    return ValidateResult(report, result)
