"""``lightcone``: ICs (or a linear field) + observer + redshift range -> particle lightcone, HEALPix maps, report.

Everything goes to the output folder, held under its lock (docs/lightcone.md):

1. ``run.json``: the config and its digest; a rerun with another config is refused, the same config resumes;
2. ``shell_XXX.h5``: one file per shell, written atomically when the shell is complete (reused on resume);
3. ``maps.h5``: the shell density contrasts and the Born convergence maps (HEALPix, RING), atomically;
4. ``report.json``, ``report.md``, ``report.png``: maps, the convergence angular power spectra against the
   Limber integral of the P(k) measured on the snapshots (and CLASS halofit where classy is installed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from matplotlib.figure import Figure

from .._version import __version__
from ..checks import check_bool, check_int
from ..cosmology.distance import DistanceTable
from ..cosmology.params import QUIJOTE_FIDUCIAL, Cosmology
from ..errors import InputError, ResourceError
from ..ics import InitialConditions
from ..io.atomic import atomic_path
from ..io.fields import read_fields
from ..io.jsonfile import read_json
from ..io.output_lock import output_lock
from ..lightcone.build import LightconeSpec, build_lightcone, spec_digest
from ..lightcone.compare import check_pixel_window_dir, compare_convergence, halofit_power
from ..lightcone.maps import density_contrast, import_healpy
from ..lightcone.store import read_shell
from ..simulator import get_backend, simulate

__all__ = ["LightconeConfig", "LightconeResult", "lightcone"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LightconeConfig:
    """Settings of ``emu-backend lightcone``.

    Parameters
    ----------
    out : str or Path
        Output folder (a rerun resumes it).
    spec : LightconeSpec
        Observer, redshift range, shells, opening, interpolation, NSIDE, sources.
    grid : int
        Particles per side of ICs drawn from noise.
    box_size : float, optional
        Box side [Mpc/h]; default the emulator's trained resolution ``1000 grid / 512``.
    seed : int
        Noise seed.
    linear : str or Path, optional
        A linear displacement field file (``.npy``/HDF5 field file, rescaled to z = 0) instead of noise.
    cosmology : Cosmology
    backend : str
        Simulator backend (``"emulator"``, ``"2lpt"``, ``"za"``, ...).
    weights : str or Path, optional
        Emulator weights (default the shipped ones).
    allow_extrapolation : bool
        Let the emulator leave its trained domain (z, Omega_m, cell size) with a warning.
    tile_size : int, optional
    halofit : bool
        Add CLASS halofit's Limber curve to the report where classy is installed.
    pixel_window_dir : str or Path, optional
        A local folder with healpy's pixel-window files (``pixel_window_n<NSIDE>.fits``): the C_ell
        comparison then models the window and runs to ``2 nside``; without it, to ``nside / 2`` (nothing
        is downloaded).
    """

    out: Path
    spec: LightconeSpec = field(default_factory=LightconeSpec)
    grid: int = 32
    box_size: float | None = None
    seed: int = 42
    linear: Path | None = None
    cosmology: Cosmology = QUIJOTE_FIDUCIAL
    backend: str = "emulator"
    weights: Path | None = None
    allow_extrapolation: bool = False
    tile_size: int | None = None
    halofit: bool = True
    pixel_window_dir: Path | None = None

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))
        if self.linear is not None:
            object.__setattr__(self, "linear", Path(self.linear))
        if not isinstance(self.spec, LightconeSpec):
            raise InputError(f"spec must be a LightconeSpec, got {type(self.spec).__name__}")
        if self.pixel_window_dir is not None:  # refused before any work, not after the shells
            object.__setattr__(self, "pixel_window_dir",
                               check_pixel_window_dir(self.pixel_window_dir, self.spec.nside))
        if not isinstance(self.cosmology, Cosmology):
            raise InputError(f"cosmology must be a Cosmology, got {type(self.cosmology).__name__}")
        check_int(self.grid, "grid", 8)
        check_int(self.seed, "seed", 0)
        check_bool(self.allow_extrapolation, "allow_extrapolation")
        check_bool(self.halofit, "halofit")

    def to_dict(self) -> dict:
        return {"out": str(self.out), "spec": self.spec.to_dict(), "grid": self.grid, "box_size": self.box_size,
                "seed": self.seed, "linear": None if self.linear is None else str(self.linear),
                "cosmology": self.cosmology.to_dict(), "backend": self.backend,
                "weights": None if self.weights is None else str(self.weights),
                "allow_extrapolation": self.allow_extrapolation, "tile_size": self.tile_size,
                "halofit": self.halofit,
                "pixel_window_dir": None if self.pixel_window_dir is None else str(self.pixel_window_dir)}


@dataclass(frozen=True)
class LightconeResult:
    """Where a lightcone run wrote its files and its report's content."""

    folder: Path
    shells: list
    maps: Path
    report_json: Path
    report_md: Path
    report_png: Path
    report: dict


def _ics(config: LightconeConfig) -> InitialConditions:
    if config.linear is None:
        return InitialConditions.from_noise(config.grid, config.box_size, config.cosmology, config.seed)
    if config.linear.suffix == ".npy":
        if config.box_size is None:
            raise InputError("a .npy linear field needs box_size (--box-size)")
        dis = np.load(config.linear, allow_pickle=False)
        return InitialConditions.from_linear_displacement(dis, config.box_size, provenance={"file": str(config.linear)})
    data = read_fields(config.linear)
    dis = data.displacement / float(config.cosmology.growth_factor(data.z))
    return InitialConditions.from_linear_displacement(dis, data.box_size, provenance={"file": str(config.linear)})


def _backend(config: LightconeConfig):
    options = {}
    if config.backend == "emulator":
        options = {"weights": config.weights, "allow_extrapolation": config.allow_extrapolation,
                   "tile_size": config.tile_size}
    return get_backend(config.backend, **options)


#: Bytes per written particle (the datasets of emu_backend.lightcone.store.PARTICLE_FIELDS).
BYTES_PER_PARTICLE = 90


def _check_size(config: LightconeConfig, ics: InitialConditions, out: Path) -> None:
    """Log the expected particle count; refuse a run whose particles cannot fit on the disk."""
    spec = config.spec
    table = DistanceTable(config.cosmology.omega_m, spec.z_max * 1.01 + 0.01)
    chi_lo, chi_hi = (float(c) for c in table.distance(np.array([spec.z_min, spec.z_max])))
    n = ics.n**3 / ics.box_size**3 * 4 * math.pi / 3 * (chi_hi**3 - chi_lo**3) * spec.cone.sky_fraction
    logger.info("lightcone: about %.3g particles (mean density x volume)", n)
    if not spec.particles:
        return
    need = n * BYTES_PER_PARTICLE - sum(p.stat().st_size for p in out.glob("shell_*.h5"))
    free = shutil.disk_usage(out).free
    if need > free:
        raise ResourceError(f"the lightcone holds about {n:.3g} particles, {need / 1e9:.3g} GB to write, but "
                            f"{str(out)!r} has {free / 1e9:.3g} GB free; narrow the cone (--cone), lower z_max, or "
                            f"write maps only (--maps-only)")


def _record(out: Path, config: LightconeConfig, digest: str) -> None:
    path = out / "run.json"
    if path.is_file():
        old = read_json(path, "lightcone run record")
        if not isinstance(old, dict) or old.get("config_digest") != digest:
            raise InputError(f"{str(out)!r} holds another lightcone run (config digest differs); use a new folder")
        return
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"package_version": __version__, "config": config.to_dict(),
                                   "config_digest": digest}, indent=2))


def lightcone(config: LightconeConfig, *, progress: bool = False) -> LightconeResult:
    """Build the lightcone, its maps and the report of ``config`` (resuming a killed run's shells).

    Examples
    --------
    >>> import tempfile
    >>> from emu_backend.lightcone.geometry import Cone
    >>> spec = LightconeSpec(z_min=0.02, z_max=0.03, n_shells=1, nside=8, cone=Cone(0, 0, 20))
    >>> res = lightcone(LightconeConfig(tempfile.mkdtemp(), spec, grid=8, backend="za", halofit=False))
    >>> res.report["shells"][0]["n_particles"] > 0
    True
    """
    if not isinstance(config, LightconeConfig):
        raise InputError(f"config must be a LightconeConfig, got {type(config).__name__}")
    import_healpy()
    ics = _ics(config)
    backend = _backend(config)
    emulator = getattr(backend, "emulator", None)
    if emulator is not None:  # refuse an out-of-domain run before any work, not at the first far shell
        emulator.model.domain.check(config.cosmology.omega_m, [config.spec.z_min, config.spec.z_max], ics.box_size,
                                    ics.n, config.allow_extrapolation)
    extra = {"ics": ics.describe(), "cosmology": config.cosmology.to_dict(), "backend": config.backend,
             "backend_describe": backend.describe(), "linear": config.to_dict()["linear"]}
    digest = spec_digest(config.spec, extra)
    out = config.out
    t0 = time.perf_counter()
    with output_lock(out, folder=True, command="emu-backend lightcone"):
        _check_size(config, ics, out)
        _record(out, config, digest)
        shells = build_lightcone(lambda z: simulate(ics, config.cosmology, z=[z], backend=backend)[0], config.spec,
                                 out, digest=digest, progress=progress)
        seconds = time.perf_counter() - t0
        maps_path = out / "maps.h5"
        shell_data = [read_shell(s.path, fields=()) for s in shells]
        density, kappa, mask = _write_maps(maps_path, config, shell_data)
        report = _report(config, shells, shell_data, kappa, mask, seconds)
        paths = out / "report.json", out / "report.md", out / "report.png"
        with atomic_path(paths[0]) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        with atomic_path(paths[1]) as tmp:
            tmp.write_text(_markdown(report))
        _figure(paths[2], report, density, kappa, mask, config.spec)
    return LightconeResult(out, shells, maps_path, *paths, report)


def _sky_mask(spec: LightconeSpec) -> np.ndarray:
    """Pixels whose whole area lies in the cone (centre at least one pixel size inside)."""
    hp = import_healpy()
    npix = hp.nside2npix(spec.nside)
    if spec.cone.full_sky:
        return np.ones(npix, bool)
    vec = np.stack(hp.pix2vec(spec.nside, np.arange(npix)), axis=1)
    margin = math.degrees(hp.nside2resol(spec.nside))
    inner = dataclasses.replace(spec.cone, radius_deg=max(spec.cone.radius_deg - margin, 1e-6))
    return inner.contains(vec)


def _write_maps(path: Path, config: LightconeConfig, shell_data: list):
    mask = _sky_mask(config.spec)
    density = np.stack([density_contrast(s["counts"], s["map_attrs"]["nbar"], s["attrs"]["chi_lo"],
                                         s["attrs"]["chi_hi"]) for s in shell_data])
    kappa = np.sum([s["kappa"] for s in shell_data], axis=0)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update({"format": "emu_backend.lightcone_maps", "version": 1, "nside": config.spec.nside,
                        "ordering": "RING", "package_version": __version__,
                        "source_redshifts": np.asarray(config.spec.source_redshifts),
                        "z_edges": np.asarray([s["attrs"]["z_lo"] for s in shell_data]
                                              + [shell_data[-1]["attrs"]["z_hi"]]),
                        "chi_edges": np.asarray([s["attrs"]["chi_lo"] for s in shell_data]
                                                + [shell_data[-1]["attrs"]["chi_hi"]])})
        f.create_dataset("density", data=density.astype(np.float32)).attrs["description"] = \
            "shell density contrast counts / (nbar V_shell / npix) - 1, (n_shells, npix)"
        f.create_dataset("kappa", data=kappa).attrs["description"] = "Born convergence, (n_sources, npix)"
        f.create_dataset("mask", data=mask).attrs["description"] = "pixels inside the opening"
    return density, kappa, mask


def _report(config, shells, shell_data, kappa, mask, seconds) -> dict:
    spec = config.spec
    a0 = shell_data[0]["attrs"]
    box, grid = float(a0["box_size"]), int(a0["grid"])
    hf = halofit_power(config.cosmology, spec.z_max) if config.halofit else None
    total = sum(s.n_particles for s in shells)
    report = {"package_version": __version__, "config": config.to_dict(), "seconds": seconds,
              "particles": total, "particles_per_second": total / seconds if seconds > 0 else None,
              "shells": [], "convergence": []}
    for s, d in zip(shells, shell_data):
        at = d["attrs"]
        expected = d["map_attrs"]["nbar"] * d["map_attrs"]["volume"] * spec.cone.sky_fraction
        report["shells"].append({"index": s.index, "z_lo": float(at["z_lo"]), "z_hi": float(at["z_hi"]),
                                 "chi_lo": float(at["chi_lo"]), "chi_hi": float(at["chi_hi"]),
                                 "n_particles": s.n_particles, "expected": expected, "n_replicas": s.n_replicas,
                                 "seconds": s.seconds, "reused": s.reused})
    chi_min = float(a0["chi_lo"])
    for j, zs in enumerate(spec.source_redshifts):
        chi_s = float(shell_data[0]["map_attrs"]["source_chis"][j])
        cmp = compare_convergence(kappa[j], mask, chi_s, chi_min, shell_data, config.cosmology, box, grid,
                                  spec.nside, halofit=hf, pixel_window_dir=config.pixel_window_dir)
        cmp["z_s"] = zs
        report["convergence"].append(cmp)
    return report


def _markdown(report: dict) -> str:
    cfg = report["config"]
    lines = ["# Lightcone", "", f"emu_backend {report['package_version']}; backend `{cfg['backend']}`, grid "
             f"{cfg['grid']}, z {cfg['spec']['z_min']} - {cfg['spec']['z_max']}, opening {cfg['spec']['cone']}; "
             f"{report['particles']} particles in {report['seconds']:.1f} s.", "",
             "| shell | z | particles | mean density x volume | replicas |", "|---|---|---|---|---|"]
    for s in report["shells"]:
        lines.append(f"| {s['index']} | {s['z_lo']:.4f}-{s['z_hi']:.4f} | {s['n_particles']} | {s['expected']:.1f} | "
                     f"{s['n_replicas']} |")
    for c in report["convergence"]:
        lines += ["", f"## Convergence, z_s = {c['z_s']:g} (ell {c['ell_min']}-{c['ell_max']}, f_sky {c['fsky']:.4f})",
                  "", "| ell | C_ell map | Limber (snapshot P(k)) | cosmic variance | halofit |", "|---|---|---|---|---|"]
        for r in c.get("bins", []):
            lines.append(f"| {r['ell']:.0f} | {r['cl']:.3e} | {r['limber']:.3e} | {r['sigma']:.2e} | "
                         f"{r.get('halofit', float('nan')):.3e} |")
        if c.get("bins"):
            lines += ["", f"chi2 = {c['chi2']:.1f} for {c['n_bins']} bins; largest |pull| {c['max_abs_pull']:.2f}"]
    return "\n".join(lines) + "\n"


def _colour_range(values: np.ndarray) -> dict:
    """1st to 99th percentile: a few nearby particles would otherwise set the colour scale."""
    if not values.size:
        return {}
    lo, hi = np.percentile(values, [1, 99])
    return {"vmin": float(lo), "vmax": float(hi)} if hi > lo else {}


def _figure(path: Path, report: dict, density, kappa, mask, spec: LightconeSpec) -> None:
    hp = import_healpy()
    nside, cone = spec.nside, spec.cone
    if cone.full_sky or cone.radius_deg > 60:
        proj = hp.projector.MollweideProj(xsize=400)
    else:  # a gnomonic view centred on the cone, 2.2 radii across
        proj = hp.projector.GnomonicProj(rot=(cone.ra_deg, cone.dec_deg), xsize=400,
                                         reso=2.2 * cone.radius_deg * 60 / 400)
    n_src = len(report["convergence"])
    fig = Figure(figsize=(12, 3.6 * (1 + n_src)))
    axes = fig.subplots(1 + n_src, 2, squeeze=False)
    for ax, (title, m) in zip(axes[0], (("last shell density contrast", density[-1]),
                                        ("first shell density contrast", density[0]))):
        img = proj.projmap(np.where(mask, m, np.nan), lambda x, y, z: hp.vec2pix(nside, x, y, z))
        im = ax.imshow(img, origin="lower", cmap="viridis", **_colour_range(m[mask]))
        ax.set(title=title, xticks=[], yticks=[])
        fig.colorbar(im, ax=ax, shrink=0.7)
    for j, c in enumerate(report["convergence"]):
        img = proj.projmap(np.where(mask, kappa[j], np.nan), lambda x, y, z: hp.vec2pix(nside, x, y, z))
        im = axes[1 + j, 0].imshow(img, origin="lower", cmap="magma", **_colour_range(kappa[j][mask]))
        axes[1 + j, 0].set(title=f"Born convergence, z_s = {c['z_s']:g}", xticks=[], yticks=[])
        fig.colorbar(im, ax=axes[1 + j, 0], shrink=0.7)
        ax = axes[1 + j, 1]
        if c.get("bins"):
            ell = np.array([r["ell"] for r in c["bins"]])
            ax.errorbar(ell, [r["cl"] for r in c["bins"]], yerr=[r["sigma"] for r in c["bins"]], fmt="o", ms=3,
                        label="map (healpy.anafast)")
            ax.plot(ell, [r["limber"] for r in c["bins"]], label="Limber, snapshot P(k)")
            if "halofit" in c["bins"][0]:
                ax.plot(ell, [r["halofit"] for r in c["bins"]], "--", label="Limber, CLASS halofit")
            ax.axhline(c["shot_noise_cl"], color="gray", lw=0.8, ls=":", label="shot noise")
            ax.set(xscale="log", yscale="log", xlabel="ell", ylabel="C_ell")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no multipole the box, the map and the opening all support\n(see docs/lightcone.md)",
                    ha="center", va="center", transform=ax.transAxes, fontsize=8)
            ax.set(xticks=[], yticks=[])
        ax.set(title=f"convergence power, z_s = {c['z_s']:g}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
