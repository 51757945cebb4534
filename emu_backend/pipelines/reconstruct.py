"""``reconstruct``: field-level inference of the initial white noise and cosmology from an observed density.

Steps, all in the output folder (held under its lock; every file written atomically):

1. the data: a density mesh file (:mod:`emu_backend.io.density_mesh`) or a Gadget-HDF5 snapshot of any
   backend, painted on ``n_mesh^3`` (its recorded seed gives the true white noise for the report);
2. the MAP of the white noise at the data's cosmology (:func:`~emu_backend.fieldlevel.find_map`), saved to
   ``map.npz`` with the posterior's digest and reused by a rerun;
3. NUTS chains started at the MAP (:func:`~emu_backend.fieldlevel.sample_posterior`, ``chains/``),
   resumable after a kill from the last saved step, bit for bit;
4. the report: ``report.json``, ``report.md``, ``report.png`` (P(k) of the true, MAP and posterior-mean
   noise fields, their r(k) with the truth where known, traces and histograms of Omega_m and sigma8), with
   a ``bias`` section (:func:`~emu_backend.fieldlevel.bias.bias_section`): where the data carries its truth
   (the true white noise; its cosmology), each parameter's posterior mean minus the true value, also in
   posterior stds, and r(k) of the MAP and posterior-mean noise with the truth and the scales where
   r > 0.9; the simulator backend that made the data where its metadata records it (a PM code: model
   mismatch); without the truth, the reason.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from .._version import __version__
from ..checks import check_bool, check_choice, check_int, check_real
from ..differentiable import DENSITY_WINDOW, ForwardModel
from ..differentiable.forward import DYNAMICS
from ..errors import FileFormatError, InputError
from ..fieldlevel import COSMOLOGY_PARAMETERS, FieldLikelihood, Priors, SamplerConfig, find_map, sample_posterior
from ..fieldlevel.bias import bias_section, data_backend, table_cell
from ..fieldlevel.observations import observe
from ..ics import white_noise
from ..inference.default import load_emulator
from ..io.atomic import atomic_path
from ..io.density_mesh import FORMAT as MESH_FORMAT
from ..io.density_mesh import DensityMesh, read_density_mesh
from ..io.gadget import read_gadget_hdf5
from ..io.output_lock import output_lock
from ..validation.power import cross_correlation, power_spectrum

__all__ = ["ReconstructConfig", "ReconstructResult", "load_observation", "reconstruct"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconstructConfig:
    """Settings of a field-level reconstruction (``emu-backend reconstruct``).

    Parameters
    ----------
    data : str or Path
        Density mesh file, or Gadget-HDF5 snapshot (painted on ``n_mesh``).
    out : str or Path
        Output folder.
    noise_sigma : float, optional
        Noise per voxel; required where the data records none (snapshots).
    n_mesh : int, optional
        Mesh for a snapshot (default its particle grid).
    grid : int, optional
        Particles per side of the forward model (default the data's mesh; the linear model needs equal).
    z : float, optional
        Override the data's redshift.
    infer : tuple of str
        Inferred cosmological parameters among ("omega_m", "sigma8").
    prior_omega_m, prior_sigma8 : (float, float), optional
        Box priors (default: Omega_m the emulator's trained range, 0.1-0.5 without the emulator; sigma8
        0.6-1.0).
    dynamics : {"emulator", "za", "linear"}
    weights : str or Path, optional
        Emulator weights (default the shipped ones).
    window : {"tsc", "cic"}, optional
        Mass assignment of the model's density (and of a snapshot's). Default: the window the density mesh
        file records (its data were painted so), else TSC (a posterior with a continuous gradient,
        docs/field_level.md "Mass assignment"); one that differs from the recorded window is refused.
    los : int, optional
        Redshift space along this axis (for data and model); None: real space.
    allow_extrapolation : bool
    map_iterations : int
        Outer L-BFGS iterations at most.
    sampler : SamplerConfig
    """

    data: Path
    out: Path
    noise_sigma: float | None = None
    n_mesh: int | None = None
    grid: int | None = None
    z: float | None = None
    infer: tuple = COSMOLOGY_PARAMETERS
    prior_omega_m: tuple | None = None
    prior_sigma8: tuple | None = None
    dynamics: str = "emulator"
    weights: Path | None = None
    window: str | None = None
    los: int | None = None
    allow_extrapolation: bool = False
    map_iterations: int = 100
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def __post_init__(self):
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        if self.noise_sigma is not None:
            object.__setattr__(self, "noise_sigma", check_real(self.noise_sigma, "noise_sigma", 0.0, lo_open=True))
        for name in ("n_mesh", "grid"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_int(getattr(self, name), name, 8 if name == "grid" else 2))
        if self.z is not None:
            object.__setattr__(self, "z", check_real(self.z, "z", -1.0, lo_open=True))
        infer = tuple(self.infer)
        if any(p not in COSMOLOGY_PARAMETERS for p in infer) or len(set(infer)) != len(infer):
            raise InputError(f"infer must be distinct names among {COSMOLOGY_PARAMETERS}, got {list(infer)}")
        object.__setattr__(self, "infer", infer)
        for name in ("prior_omega_m", "prior_sigma8"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        Priors(**{k: v for k, v in (("omega_m", self.prior_omega_m), ("sigma8", self.prior_sigma8)) if v is not None})
        check_choice(self.dynamics, "dynamics", DYNAMICS)
        if self.window is not None:
            check_choice(self.window, "window", ("tsc", "cic"))
        if self.los is not None:
            check_choice(self.los, "los", (0, 1, 2))
        check_bool(self.allow_extrapolation, "allow_extrapolation")
        check_int(self.map_iterations, "map_iterations", 1)
        if not isinstance(self.sampler, SamplerConfig):
            raise InputError(f"sampler must be a SamplerConfig, got {type(self.sampler).__name__}")

    def priors(self, model: ForwardModel) -> Priors:
        """The box priors: those given, the others by default (Omega_m: the emulator's trained range)."""
        om = self.prior_omega_m
        if om is None:
            om = Priors.omega_m if model.emulator is None else tuple(model.emulator.model.domain.omega_m)
        return Priors(omega_m=om, sigma8=Priors.sigma8 if self.prior_sigma8 is None else self.prior_sigma8)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(data=str(self.data), out=str(self.out), weights=None if self.weights is None else str(self.weights))
        return d


@dataclass(frozen=True)
class ReconstructResult:
    """What a reconstruction wrote and found: the report paths and its JSON content."""

    report_json: Path
    report_md: Path
    report_png: Path
    report: dict


def _is_density_mesh(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == MESH_FORMAT
    except OSError:
        return False


def load_observation(config: ReconstructConfig) -> DensityMesh:
    """The observed mesh of ``config.data``: a density mesh file as written, or a snapshot painted on
    ``n_mesh`` (noise level from the config; true white noise from the snapshot's seed where recorded)."""
    path = config.data
    if not path.is_file():
        raise InputError(f"data {str(path)!r} does not exist or is not a file")
    if _is_density_mesh(path):
        mesh = read_density_mesh(path)
        if config.noise_sigma is not None:
            mesh = DensityMesh(mesh.density, mesh.box_size, mesh.z, mesh.cosmology, noise_sigma=config.noise_sigma,
                               mask=mesh.mask, initial_noise=mesh.initial_noise, meta=mesh.meta)
        if mesh.noise_sigma is None:
            raise InputError(f"{str(path)!r} records no noise_sigma; pass --noise-sigma")
        return mesh
    try:
        snap = read_gadget_hdf5(path)
    except FileFormatError as exc:
        raise FileFormatError(f"{str(path)!r} is neither a density mesh file nor a readable Gadget-HDF5 snapshot: "
                              f"{exc}") from exc
    if config.noise_sigma is None:
        raise InputError(f"a snapshot records no observation noise: pass --noise-sigma for {str(path)!r}")
    meta = snap.meta or {}
    ics = meta.get("ics") or {}
    truth = None
    if meta.get("seed") is not None and ics.get("source") == "noise" and not ics.get("fixed_amplitude") \
            and not ics.get("paired"):
        truth = white_noise(snap.grid, int(meta["seed"])).astype(np.float64)
    return observe(snap, config.n_mesh or snap.grid, config.noise_sigma, window=config.window or DENSITY_WINDOW,
                   los=config.los, add_noise=False, initial_noise=truth)


def model_window(config: ReconstructConfig, mesh: DensityMesh) -> str:
    """The model's mass assignment: the data's (recorded in the mesh's meta), the config's, else TSC.

    A config window that differs from the one the data were painted with is refused: the model would
    paint the same particles differently from the data (a bias of the order of the windows' difference).
    """
    recorded = (mesh.meta or {}).get("window")
    if config.window is not None and recorded is not None and config.window != recorded:
        raise InputError(f"window {config.window!r} differs from the data's: {str(config.data)!r} was painted with "
                         f"{recorded!r}; pass window={recorded!r} (--window {recorded}) or leave it out")
    return config.window or recorded or DENSITY_WINDOW


def _model(config: ReconstructConfig, mesh: DensityMesh) -> ForwardModel:
    grid = config.grid or mesh.n_mesh
    emulator = None
    if config.dynamics == "emulator" and config.weights is not None:
        emulator = load_emulator(config.weights, allow_extrapolation=config.allow_extrapolation)
    return ForwardModel(grid, mesh.box_size, mesh.z if config.z is None else config.z, emulator=emulator,
                        output="density" if config.los is None else "rsd_density", cosmology=mesh.cosmology,
                        n_mesh=mesh.n_mesh, window=model_window(config, mesh),
                        los=2 if config.los is None else config.los,
                        allow_extrapolation=config.allow_extrapolation, dynamics=config.dynamics)


def _map_stage(lik: FieldLikelihood, out: Path, iterations: int, progress: bool):
    """The MAP at fixed cosmology, reused from ``map.npz`` when its digest matches."""
    path, digest = out / "map.npz", lik.digest()
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["digest"]) == digest:
                    logger.info("MAP: reusing %s", path)
                    return (z["noise"], bool(z["converged"]), int(z["iterations"]), int(z["evaluations"]),
                            float(z["log_prob"]), float(z["seconds"]))
        except (OSError, KeyError, ValueError) as exc:
            raise FileFormatError(f"{str(path)!r} is not a readable MAP record ({exc}); remove it to redo the MAP") from exc
        raise InputError(f"{str(path)!r} belongs to another posterior; use a new output folder")
    t0 = time.perf_counter()
    with tqdm(total=iterations, desc="MAP (L-BFGS)", unit="it", disable=not progress) as bar:
        result = find_map(lik, max_iterations=iterations, callback=lambda i, lp: bar.update(1))
    seconds = time.perf_counter() - t0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, noise=result.noise, converged=result.converged, iterations=result.iterations,
                 evaluations=result.evaluations, log_prob=result.log_prob, seconds=seconds, digest=np.asarray(digest))
    return result.noise, result.converged, result.iterations, result.evaluations, result.log_prob, seconds


def _spectra(fields: dict, box: float) -> dict:
    n = next(iter(fields.values())).shape[0]
    edges = np.linspace(2 * np.pi / box, np.pi * n / box, max(3, n // 2))
    out = {"k": None}
    for name, f in fields.items():
        ps = power_spectrum(f, box, edges)
        out["k"] = ps.k.tolist()
        out[name] = ps.power.tolist()
    return out, edges


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _sampling_cost(post, seconds_sampling: float) -> dict:
    """The report's "sampling" section: the chains' cost, warm-up and draws apart.

    ``seconds`` is this call's wall time (a resumed run's only); the rest comes from the chains' own step
    timings (:attr:`~emu_backend.fieldlevel.sampling.Posterior.timing`), which survive a resume:
    ``draw_seconds`` and ``gradient_evaluations`` (the draws'), ``seconds_per_gradient`` (of the draws),
    ``warmup_seconds`` and ``warmup_gradients`` (all chains), and ``seconds_per_effective_sample`` per
    inferred parameter and for the white noise's worst value (``noise_min``): the draws' seconds over the
    bulk ESS. None where a chain folder written before the timings were recorded lacks them.
    """
    grads = int(post.stats["num_steps"].sum())
    draw_seconds = _finite_or_none(np.sum(post.timing["draw_seconds"])) if post.timing else None
    out = {"seconds": seconds_sampling, "gradient_evaluations": grads, "draw_seconds": draw_seconds,
           "seconds_per_gradient": draw_seconds / grads if draw_seconds is not None and grads else None,
           "warmup_seconds": _finite_or_none(np.sum(post.timing["warmup_seconds"])) if post.timing else None,
           "warmup_gradients": _finite_or_none(np.sum(post.timing["warmup_gradients"])) if post.timing else None,
           "divergences": int(post.stats["diverging"].sum()),
           "mean_accept_prob": float(post.stats["accept_prob"].mean())}
    ess = {name: d.get("n_eff") for name, d in post.diagnostics.items() if name != "noise"}
    if "noise" in post.diagnostics:
        ess["noise_min"] = post.diagnostics["noise"]["n_eff_min"]
    out["seconds_per_effective_sample"] = {
        name: draw_seconds / n if draw_seconds is not None and n and math.isfinite(n) and n > 0 else None
        for name, n in ess.items()}
    return out


def _report(config, mesh, lik, map_info, post, seconds_sampling) -> dict:
    noise_map, converged, iterations, evaluations, log_prob, seconds_map = map_info
    box = mesh.box_size
    fields = {"map": noise_map, "posterior_mean": post.mean("noise")}
    if mesh.initial_noise is not None:
        fields["truth"] = mesh.initial_noise
    power, edges = _spectra(fields, box)
    report = {
        "package_version": __version__, "config": config.to_dict(),
        "data": {"n_mesh": mesh.n_mesh, "box_size": box, "z": mesh.z, "cosmology": mesh.cosmology.to_dict(),
                 "noise_sigma": mesh.noise_sigma if isinstance(mesh.noise_sigma, float) else "map",
                 "observed_voxels": lik.n_data, "has_truth": mesh.initial_noise is not None,
                 "backend": data_backend(mesh), "window": lik.model.window},
        "map": {"converged": converged, "iterations": iterations, "evaluations": evaluations, "log_prob": log_prob,
                "seconds": seconds_map},
        "sampling": _sampling_cost(post, seconds_sampling),
        "diagnostics": post.diagnostics, "power": power, "parameters": {},
    }
    for name in lik.infer:
        draws = post.samples[name]
        lo, hi = np.quantile(draws, [0.05, 0.95])
        entry = {"mean": float(draws.mean()), "std": float(draws.std()), "q05": float(lo), "q95": float(hi),
                 "data_cosmology": getattr(mesh.cosmology, name)}
        entry["data_cosmology_in_90"] = bool(lo <= entry["data_cosmology"] <= hi) if entry["data_cosmology"] else None
        report["parameters"][name] = entry
    if mesh.initial_noise is not None:
        r = {"k": None}
        for name in ("map", "posterior_mean"):
            cc = cross_correlation(fields[name], mesh.initial_noise, box, edges)
            r["k"], r[name] = cc.k.tolist(), cc.r.tolist()
        report["r_k"] = r
    estimates = {name: {"value": p["mean"], "std": p["std"], "estimator": "posterior_mean"}
                 for name, p in report["parameters"].items()}
    report["bias"] = bias_section(mesh, {"map": fields["map"], "posterior_mean": fields["posterior_mean"]},
                                  estimates, edges)
    return report


def _bias_markdown(bias: dict) -> list:
    """The "Bias against the truth" section of report.md."""
    backend = bias.get("data_backend") or "not recorded"
    lines = ["", "## Bias against the truth", "", f"data made by: `{backend}`"
             + (" (the closed loop: the model's own dynamics)" if backend == "emulator" else
                " (a PM code: model mismatch)" if backend in ("pmwd", "jaxpm") else ""), ""]
    if not bias["available"]:
        return lines + [f"not computed: {bias['reason']}"]
    lines += ["| parameter | estimator | estimate | truth | bias | posterior std | bias / std |",
              "|---|---|---|---|---|---|---|"]
    for name, p in bias["parameters"].items():
        lines.append(f"| {name} | {p['estimator'].replace('_', ' ')} | {table_cell(p['estimate'])} | "
                     f"{table_cell(p['truth'])} | {table_cell(p['bias'], '+.4f')} | {table_cell(p['std'])} | "
                     f"{table_cell(p['bias_over_std'], '+.2f')} |")
    if not bias["parameters"]:
        lines.append("| (no parameter inferred) | | | | | | |")
    r_k = bias["r_k"]
    names = list(r_k["fields"])
    lines += ["", f"r(k) with the true white noise (threshold {r_k['threshold']:g}):", "",
              "| | " + " | ".join(n.replace("_", " ") for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, what in (("k_max_contiguous", f"r > {r_k['threshold']:g} up to k [h/Mpc]"),
                      ("k_max_above", f"largest k with r > {r_k['threshold']:g} [h/Mpc]")):
        cells = ["none" if r_k["fields"][n][key] is None else table_cell(r_k["fields"][n][key], ".3f")
                 for n in names]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    lines += ["", "(r per k bin: the cross-correlation table above; every number in `report.json` under `bias`.)"]
    return lines


def _cost_line(sampling: dict) -> str:
    """The Markdown report's line on the sampler's cost."""
    def seconds(x):
        return "-" if x is None else f"{x:.1f} s"

    warm = sampling.get("warmup_gradients")
    per_ess = ", ".join(f"{name} {seconds(v)}" for name, v in sampling.get("seconds_per_effective_sample", {}).items())
    per_grad = sampling.get("seconds_per_gradient")
    warm = "-" if warm is None else f"{warm:.0f}"
    return (f"warm-up: {warm} gradients in {seconds(sampling.get('warmup_seconds'))}; "
            f"draws: {sampling['gradient_evaluations']} gradients in {seconds(sampling.get('draw_seconds'))} "
            f"({'-' if per_grad is None else f'{per_grad:.3f} s'} each); per effective sample: {per_ess or '-'}; "
            f"divergences {sampling['divergences']}; mean acceptance {sampling['mean_accept_prob']:.2f}")


def _markdown(report: dict) -> str:
    lines = ["# Field-level reconstruction", "",
             f"emu_backend {report['package_version']}; data `{report['config']['data']}` "
             f"(n_mesh {report['data']['n_mesh']}, box {report['data']['box_size']:g} Mpc/h, z {report['data']['z']:g}, "
             f"noise {report['data']['noise_sigma']}); dynamics `{report['config']['dynamics']}`.", "",
             "## MAP (cosmology fixed at the data's)", "",
             f"converged: {report['map']['converged']} after {report['map']['iterations']} L-BFGS iterations "
             f"({report['map']['evaluations']} gradients, {report['map']['seconds']:.1f} s)", "",
             "## Posterior (numpyro NUTS)", "",
             _cost_line(report["sampling"]), "",
             "| parameter | mean | std | 5% | 95% | data cosmology | R-hat | ESS |", "|---|---|---|---|---|---|---|---|"]
    for name, p in report["parameters"].items():
        d = report["diagnostics"].get(name, {})
        lines.append(f"| {name} | {p['mean']:.4f} | {p['std']:.4f} | {p['q05']:.4f} | {p['q95']:.4f} | "
                     f"{p['data_cosmology']} | {d.get('r_hat', float('nan')):.3f} | {d.get('n_eff', float('nan')):.0f} |")
    noise = report["diagnostics"].get("noise")
    if noise:
        lines += ["", f"white noise: R-hat max {noise['r_hat_max']:.3f} (median {noise['r_hat_median']:.3f}), "
                      f"ESS min {noise['n_eff_min']:.0f} (median {noise['n_eff_median']:.0f})"]
    if "r_k" in report:
        lines += ["", "## Cross-correlation with the true white noise", "", "| k [h/Mpc] | r MAP | r posterior mean |",
                  "|---|---|---|"]
        for k, a, b in zip(report["r_k"]["k"], report["r_k"]["map"], report["r_k"]["posterior_mean"]):
            lines.append(f"| {k:.3f} | {a:.3f} | {b:.3f} |")
    if "bias" in report:
        lines += _bias_markdown(report["bias"])
    return "\n".join(lines) + "\n"


def _figure(path: Path, report: dict, post) -> None:
    fig = Figure(figsize=(11, 8))
    ax = fig.subplots(2, 2)
    pw = report["power"]
    for name in ("truth", "map", "posterior_mean"):
        if name in pw:
            ax[0, 0].loglog(pw["k"], pw[name], label=name.replace("_", " "))
    ax[0, 0].set(xlabel="k [h/Mpc]", ylabel="P(k) of the white noise [(Mpc/h)^3]", title="noise fields")
    ax[0, 0].legend()
    if "r_k" in report:
        for name in ("map", "posterior_mean"):
            ax[0, 1].semilogx(report["r_k"]["k"], report["r_k"][name], label=name.replace("_", " "))
        ax[0, 1].axhline(0.9, color="gray", lw=0.5)
        fields_r = report.get("bias", {}).get("r_k", {}).get("fields", {})
        for (name, summary), color in zip(fields_r.items(), ("C0", "C1")):
            if summary["k_max_contiguous"] is not None:
                ax[0, 1].axvline(summary["k_max_contiguous"], color=color, ls=":", lw=0.8)
        backend = report.get("bias", {}).get("data_backend")
        if backend:
            ax[0, 1].set_title(f"data: {backend} (dotted: r > 0.9 up to)", fontsize=9)
        ax[0, 1].set(xlabel="k [h/Mpc]", ylabel="r(k) with the true noise", ylim=(-0.2, 1.05))
        ax[0, 1].legend()
    else:
        ax[0, 1].text(0.5, 0.5, "no true white noise in the data", ha="center", va="center")
    for name in post.samples:
        if name == "noise":
            continue
        for c, chain in enumerate(post.samples[name]):
            ax[1, 0].plot(chain, lw=0.8, label=f"{name} chain {c}")
        ax[1, 1].hist(post.samples[name].ravel(), bins=20, histtype="step", label=name)
        truth = report["parameters"][name]["data_cosmology"]
        if truth is not None:
            ax[1, 1].axvline(truth, ls="--", color="k", lw=0.8)
        b = report.get("bias", {}).get("parameters", {}).get(name)
        if b and b["bias_over_std"] is not None:
            ax[1, 1].text(0.02, 0.95 - 0.07 * list(report["parameters"]).index(name),
                          f"{name}: bias {b['bias']:+.4f} ({b['bias_over_std']:+.1f} std)",
                          transform=ax[1, 1].transAxes, fontsize=7, va="top")
    ax[1, 0].set(xlabel="draw", title="traces")
    ax[1, 1].set(title="posterior (dashed: the data's cosmology)")
    for a in (ax[1, 0], ax[1, 1]):
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)


def reconstruct(config: ReconstructConfig, *, progress: bool = False) -> ReconstructResult:
    """Run the MAP, the NUTS chains and the report of ``config`` (resuming what a killed run left).

    Returns
    -------
    ReconstructResult
    """
    if not isinstance(config, ReconstructConfig):
        raise InputError(f"config must be a ReconstructConfig, got {type(config).__name__}")
    mesh = load_observation(config)
    model = _model(config, mesh)
    sigma, mask = mesh.noise_sigma, mesh.mask
    priors = config.priors(model)
    lik = FieldLikelihood(model, mesh.density, noise_sigma=sigma, mask=mask, infer=config.infer, priors=priors)
    fixed = FieldLikelihood(model, mesh.density, noise_sigma=sigma, mask=mask, infer=(), priors=priors)
    out = config.out
    with output_lock(out, folder=True, command="emu-backend reconstruct"):
        map_info = _map_stage(fixed, out, config.map_iterations, progress)
        init = {"noise": map_info[0]}
        for name in lik.infer:
            lo, hi = priors.bounds(name)
            init[name] = float(np.clip(getattr(mesh.cosmology, name), lo + 1e-3 * (hi - lo), hi - 1e-3 * (hi - lo)))
        t0 = time.perf_counter()
        post = sample_posterior(lik, config.sampler, out_dir=out / "chains", init=init, progress=progress)
        seconds = time.perf_counter() - t0
        report = _report(config, mesh, lik, map_info, post, seconds)
        paths = out / "report.json", out / "report.md", out / "report.png"
        with atomic_path(paths[0]) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        with atomic_path(paths[1]) as tmp:
            tmp.write_text(_markdown(report))
        _figure(paths[2], report, post)
    logger.info("reconstruct: report in %s", out)
    return ReconstructResult(*paths, report)
