"""``trees``: halo merger trees from a multi-redshift run, with the same trees of a PM run for comparison.

Steps, all in the output folder (held under its lock; every file written atomically; a rerun resumes):

1. ICs: seeded white noise, or a linear density file (``.npy``, z = 0, shape (n, n, n));
2. per backend (the emulator, then the comparison backend, e.g. ``pmwd``): the snapshots at the output
   times, FoF halos of each (:func:`~emu_backend.trees.find_output_halos`), saved per output as
   ``<backend>/halos_<k>.npz`` (the emulator runs once per output time and a rerun skips the outputs
   already saved; a PM backend integrates once through all missing outputs);
3. the links (:func:`~emu_backend.trees.link_halos`) and the trees in the consistent-trees format that ytree
   loads (``<backend>/tree_0_0_0.dat``);
4. the statistics (:func:`~emu_backend.trees.tree_statistics`) and the report: ``report.json``,
   ``report.md``, ``report.png`` (mass accretion histories, formation redshifts, progenitor counts per
   mass bin, both backends, and the formation redshifts of halos matched between them by particle IDs).

Examples
--------
>>> import tempfile
>>> config = TreesConfig(out=tempfile.mkdtemp(), grid=16, n_outputs=3, backend="za", compare_backend="2lpt")
>>> config.redshifts
(3.0, 1.0, 0.0)
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._version import __version__
from ..checks import check_bool, check_int, check_real, check_reals
from ..cosmology.params import QUIJOTE_FIDUCIAL, Cosmology
from ..errors import FileFormatError, InputError
from ..ics import InitialConditions
from ..io.atomic import atomic_path
from ..io.output_lock import output_lock
from ..simulator import get_backend, simulate
from ..trees import (
    TREE_FILE_NAME,
    LinkConfig,
    OutputHalos,
    compare_statistics,
    find_output_halos,
    link_halos,
    match_final_halos,
    tree_statistics,
    write_consistent_trees,
)
from ..trees.report import figure, markdown

__all__ = ["TreesConfig", "TreesResult", "trees", "log_spaced_redshifts"]

logger = logging.getLogger(__name__)

CONFIG_NAME = "trees_config.json"


def log_spaced_redshifts(n_outputs: int, z_max: float, z_min: float) -> tuple:
    """``n_outputs`` redshifts from ``z_max`` to ``z_min``, evenly spaced in ``ln(1 + z)``, rounded to 1e-4.

    Examples
    --------
    >>> log_spaced_redshifts(3, 3.0, 0.0)
    (3.0, 1.0, 0.0)
    """
    x = np.linspace(math.log1p(z_max), math.log1p(z_min), n_outputs)
    return tuple(float(round(v, 4)) for v in np.expm1(x))


@dataclass(frozen=True)
class TreesConfig:
    """Settings of ``emu-backend trees``.

    Parameters
    ----------
    out : str or Path
        Output folder.
    grid : int
        Particles per side (>= 8).
    box_size : float, optional
        Box side [Mpc/h]; default the emulator's training resolution ``1000 grid / 512``.
    seed : int
        White-noise seed of the ICs (ignored with ``linear_density``).
    linear_density : str or Path, optional
        ``.npy`` file of the z = 0 linear density contrast, shape (grid, grid, grid).
    cosmology : Cosmology
    z : sequence of float, optional
        Output redshifts (any order; sorted earliest first). Default: ``n_outputs`` from ``z_max`` to
        ``z_min``, evenly in ``ln(1 + z)``.
    n_outputs : int
        Number of output times (>= 2) without ``z``.
    z_max, z_min : float
        Range of the default output times.
    backend : str
        Backend of the trees (default the emulator).
    compare_backend : str or None
        Backend of the comparison trees (default ``pmwd``); None: no comparison.
    weights : str or Path, optional
        Emulator weights (default the shipped ones).
    allow_extrapolation : bool
        Let the emulator run outside its training domain (with a warning).
    linking_length : float
        FoF ``b`` in mean inter-particle separations, in (0, 1).
    min_particles : int
        Smallest FoF halo, >= 2.
    min_shared_fraction : float
        See :class:`~emu_backend.trees.LinkConfig`.
    skip_one_output : bool
        See :class:`~emu_backend.trees.LinkConfig`.
    plot : bool
        Write ``report.png``.
    """

    out: Path
    grid: int = 64
    box_size: float | None = None
    seed: int = 42
    linear_density: Path | None = None
    cosmology: Cosmology = QUIJOTE_FIDUCIAL
    z: tuple | None = None
    n_outputs: int = 10
    z_max: float = 3.0
    z_min: float = 0.0
    backend: str = "emulator"
    compare_backend: str | None = "pmwd"
    weights: Path | None = None
    allow_extrapolation: bool = False
    linking_length: float = 0.2
    min_particles: int = 20
    min_shared_fraction: float = 0.5
    skip_one_output: bool = True
    plot: bool = True

    def __post_init__(self):
        put = object.__setattr__
        put(self, "out", Path(self.out))
        put(self, "grid", check_int(self.grid, "grid", 8))
        if self.box_size is not None:
            put(self, "box_size", check_real(self.box_size, "box_size", 0.0, lo_open=True, unit="Mpc/h"))
        put(self, "seed", check_int(self.seed, "seed", 0))
        if self.linear_density is not None:
            put(self, "linear_density", Path(self.linear_density))
        if not isinstance(self.cosmology, Cosmology):
            raise InputError(f"cosmology must be a Cosmology, got {type(self.cosmology).__name__}")
        if self.z is not None:
            zs = check_reals(self.z, "z", -1.0 / 3.0, lo_open=False, item="output redshift")
            if len(zs) < 2 or len(set(zs)) != len(zs):
                raise InputError(f"z must hold at least two distinct output redshifts, got {zs}")
            put(self, "z", tuple(sorted(zs, reverse=True)))
        put(self, "n_outputs", check_int(self.n_outputs, "n_outputs", 2, 1000))
        put(self, "z_max", check_real(self.z_max, "z_max", 0.0))
        put(self, "z_min", check_real(self.z_min, "z_min", -1.0 / 3.0, self.z_max, hi_open=True))
        for name in ("backend", "compare_backend"):
            value = getattr(self, name)
            if name == "compare_backend" and value is None:
                continue
            if not isinstance(value, str) or not value:
                raise InputError(f"{name} must be a backend name, got {value!r}")
        if self.compare_backend == self.backend:
            raise InputError(f"compare_backend must differ from backend ({self.backend!r})")
        if self.weights is not None:
            put(self, "weights", Path(self.weights))
        check_bool(self.allow_extrapolation, "allow_extrapolation")
        put(self, "linking_length", check_real(self.linking_length, "linking_length", 0.0, 1.0, lo_open=True,
                                               hi_open=True, unit="mean separations"))
        put(self, "min_particles", check_int(self.min_particles, "min_particles", 2))
        check_bool(self.plot, "plot")
        LinkConfig(self.min_shared_fraction, self.skip_one_output)  # checks both

    @property
    def redshifts(self) -> tuple:
        """Output redshifts, earliest first."""
        return self.z if self.z is not None else log_spaced_redshifts(self.n_outputs, self.z_max, self.z_min)

    @property
    def backends(self) -> tuple:
        return (self.backend,) if self.compare_backend is None else (self.backend, self.compare_backend)

    def link_config(self) -> LinkConfig:
        return LinkConfig(self.min_shared_fraction, self.skip_one_output)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(out=str(self.out), cosmology=self.cosmology.to_dict(), z=list(self.redshifts),
                 linear_density=None if self.linear_density is None else str(self.linear_density),
                 weights=None if self.weights is None else str(self.weights))
        return d

    def run_key(self) -> dict:
        """What the saved halos depend on: a rerun with another key into the same folder is refused."""
        d = self.to_dict()
        for k in ("out", "plot", "min_shared_fraction", "skip_one_output", "n_outputs", "z_max", "z_min",
                  "allow_extrapolation"):  # the links are recomputed; extrapolation permits, it changes nothing
            d.pop(k)
        return d


@dataclass(frozen=True)
class TreesResult:
    """What ``trees`` wrote: the tree file of each backend and the report (paths and JSON content)."""

    tree_files: dict
    report_json: Path
    report_md: Path
    report_png: Path | None
    report: dict


def _ics(config: TreesConfig) -> InitialConditions:
    if config.linear_density is None:
        return InitialConditions.from_noise(config.grid, config.box_size, config.cosmology, config.seed)
    path = config.linear_density
    try:
        delta = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"{str(path)!r} is not a readable .npy linear density: {exc}") from exc
    if delta.shape != (config.grid,) * 3:
        raise InputError(f"linear density {str(path)!r} has shape {delta.shape}; --grid {config.grid} needs "
                         f"{(config.grid,) * 3}")
    box = config.box_size if config.box_size is not None else 1000.0 * config.grid / 512
    return InitialConditions.from_linear_density(delta, box, provenance={"file": str(path)})


def _backend(config: TreesConfig, name: str):
    options = {}
    if name == "emulator":
        options = {"weights": config.weights, "allow_extrapolation": config.allow_extrapolation}
    return get_backend(name, **options)


def _halo_path(out: Path, backend: str, k: int) -> Path:
    return out / backend / f"halos_{k:03d}.npz"


def _load_halos(path: Path, z: float):
    try:
        with np.load(path, allow_pickle=False) as f:
            halos = OutputHalos.from_arrays(f)
            seconds = {"simulate": float(f["seconds_simulate"]), "fof": float(f["seconds_fof"])}
    except (OSError, ValueError, KeyError) as exc:
        raise FileFormatError(f"{str(path)!r} is not a readable halo file ({exc}); remove it to redo it") from exc
    if not math.isclose(halos.z, z, rel_tol=1e-9, abs_tol=1e-9):
        raise InputError(f"{str(path)!r} holds z = {halos.z}, not {z}; use a new output folder")
    return halos, seconds


def _save_halos(path: Path, halos: OutputHalos, seconds_simulate: float, seconds_fof: float) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, seconds_simulate=seconds_simulate, seconds_fof=seconds_fof, **halos.to_arrays())


def _halos_of(config: TreesConfig, name: str, ics: InitialConditions) -> tuple[list, dict]:
    """The halos of every output of one backend: loaded where saved, else simulated and found now."""
    zs = config.redshifts
    out = config.out
    found: dict[int, tuple] = {}
    for k, z in enumerate(zs):
        if _halo_path(out, name, k).is_file():
            found[k] = _load_halos(_halo_path(out, name, k), z)
    missing = [k for k in range(len(zs)) if k not in found]
    if missing:
        backend = _backend(config, name)
        groups = [[k] for k in missing] if name == "emulator" else [missing]  # the emulator: once per time
        for group in groups:
            t0 = time.perf_counter()
            snaps = simulate(ics, config.cosmology, z=[zs[k] for k in group], backend=backend)
            share = (time.perf_counter() - t0) / len(group)
            for k, snap in zip(group, snaps):
                t1 = time.perf_counter()
                halos = find_output_halos(snap, config.linking_length, config.min_particles)
                t_fof = time.perf_counter() - t1
                _save_halos(_halo_path(out, name, k), halos, share, t_fof)
                found[k] = (halos, {"simulate": share, "fof": t_fof})
                logger.info("trees: %s z = %g: %d halos", name, zs[k], halos.catalog.n_halos)
    halos = [found[k][0] for k in range(len(zs))]
    seconds = {key: float(sum(found[k][1][key] for k in range(len(zs)))) for key in ("simulate", "fof")}
    return halos, seconds


def _check_key(config: TreesConfig) -> None:
    path = config.out / CONFIG_NAME
    key = config.run_key()
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FileFormatError(f"{str(path)!r} is unreadable ({exc}); remove it to start again") from exc
        if old != json.loads(json.dumps(key)):
            raise InputError(f"{str(config.out)!r} holds a trees run with other settings ({str(path)!r}); "
                             "use a new output folder")
        return
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(key, indent=2))


def _matched(halos: dict, stats: dict, config: TreesConfig) -> dict | None:
    """Formation redshifts of the final halos of the two backends matched by shared particle IDs."""
    if config.compare_backend is None:
        return None
    a_name, b_name = config.backends
    ia, ib = match_final_halos(halos[a_name][-1], halos[b_name][-1], config.min_shared_fraction)
    za, zb = stats[a_name].z_form[ia], stats[b_name].z_form[ib]
    both = np.isfinite(za) & np.isfinite(zb)
    entry = {"pairs": int(ia.size), "with_z_form": int(both.sum()),
             "final_mass_ratio_median": float(np.median(stats[a_name].final_mass[ia] / stats[b_name].final_mass[ib]))
             if ia.size else None,
             "z_form": [za[both].tolist(), zb[both].tolist()], "z_form_pearson_r": None,
             "z_form_median_abs_difference": float(np.median(np.abs(za[both] - zb[both]))) if both.any() else None}
    if both.sum() >= 3 and np.std(za[both]) > 0 and np.std(zb[both]) > 0:
        entry["z_form_pearson_r"] = float(np.corrcoef(za[both], zb[both])[0, 1])
    return entry


def trees(config: TreesConfig) -> TreesResult:
    """Build the merger trees of ``config`` for each backend and the comparison report (resuming a rerun).

    Returns
    -------
    TreesResult
    """
    if not isinstance(config, TreesConfig):
        raise InputError(f"config must be a TreesConfig, got {type(config).__name__}")
    ics = _ics(config)
    out = config.out
    report = {"package_version": __version__, "config": config.to_dict(), "backends": {}}
    tree_files, stats, halos = {}, {}, {}
    with output_lock(out, folder=True, command="emu-backend trees"):
        _check_key(config)
        for name in config.backends:
            halos[name], seconds = _halos_of(config, name, ics)
            t0 = time.perf_counter()
            forest = link_halos(halos[name], config.link_config())
            seconds["link"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            tree_files[name] = write_consistent_trees(forest, out / name / TREE_FILE_NAME, config.cosmology,
                                                      comment=f"backend {name}")
            seconds["write"] = time.perf_counter() - t0
            seconds["trees"] = seconds["fof"] + seconds["link"] + seconds["write"]
            seconds["trees_over_simulate"] = seconds["trees"] / seconds["simulate"] if seconds["simulate"] else None
            edges = None if not stats else next(iter(stats.values())).bin_edges
            stats[name] = tree_statistics(forest, edges)
            report["backends"][name] = {"tree_file": str(tree_files[name]), "counts": forest.counts,
                                        "seconds": seconds, "particle_mass_msun_h": forest.particle_mass,
                                        "statistics": stats[name].summary()}
        if config.compare_backend is not None:
            report["comparison"] = {"bins": compare_statistics(*(stats[b] for b in config.backends)),
                                    "matched_final_halos": _matched(halos, stats, config)}
        paths = out / "report.json", out / "report.md", out / "report.png"
        with atomic_path(paths[0]) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        with atomic_path(paths[1]) as tmp:
            tmp.write_text(markdown(report))
        if config.plot:
            figure(paths[2], report, stats)
    logger.info("trees: report in %s", out)
    return TreesResult(tree_files, paths[0], paths[1], paths[2] if config.plot else None, report)
