"""Posterior sampling of the field-level posterior with numpyro's NUTS, resumable sample by sample.

Why numpyro: its NUTS (with dual-averaging step size and windowed diagonal mass-matrix adaptation) keeps
its whole state -- position, gradient, adaptation, random key -- in one pytree of arrays (``HMCState``).
Saving those arrays after every chunk of steps and restoring them into the pytree makes a killed run
resume exactly where it stopped, bit for bit, without pickling Python objects (Pyro's kernels keep their
adaptation in Python objects). The forward model is the torch one, called through the JAX adapter
(:func:`emu_backend.adapters.jax.jax_forward_model`, a ``custom_vjp`` over host callbacks), so NUTS gets
torch's exact gradients. The chains run one after the other in float64 (``jax.enable_x64`` inside this
module only: with ~N^3 parameters, float32 energies lose the accept/reject decision).

By default NUTS moves in preconditioned coordinates ``u`` of the white noise, ``w = A u`` with ``A`` the
posterior's std per Fourier mode measured at the starting point (``"hessian"``: Hessian-vector products
by differences of gradients, averaged in |k| shells) or the linear model's (``"linear"``)
(:mod:`.precondition`): a mass matrix diagonal in Fourier space, which the library's own adaptation
(diagonal in ``u``) then refines. With Omega_m or sigma8 inferred, each mode of ``u`` is moreover
partially centred on the linear field's amplitude, ``w = m(theta) u`` (:mod:`.coordinates`), which
straightens the ridge between the parameters and the modes the data measure. The posterior of
``(w, theta)`` is the same; the draws are saved and returned as ``w``.

Layout of an output folder (all files written atomically; each part's SHA-256 recorded in the state that
follows it, checked on resume)::

    run.json                       posterior digest, sampler settings, versions
    chain_<c>/state.npz            HMCState leaves after the last saved step, the step, part digests
    chain_<c>/part_<k>.npz         the post-warmup draws of one chunk (constrained values and NUTS stats)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .._version import __version__
from ..adapters.jax import jax_forward_model
from ..adapters.jax_bridge import jax_module, torch_callable
from ..checks import check_bool, check_choice, check_int, check_real
from ..errors import FileFormatError, InputError, MissingDependencyError
from ..io.atomic import atomic_path
from ..io.jsonfile import read_json
from ..io.output_lock import output_lock
from .coordinates import NoiseCoordinates, likelihood_reference, mode_multiplicity
from .likelihood import FieldLikelihood
from .precondition import fourier_scale, hessian_scale

__all__ = ["Posterior", "SamplerConfig", "numpyro_model", "sample_posterior"]

log = logging.getLogger(__name__)

#: Coordinates NUTS may move in (SamplerConfig.precondition).
PRECONDITIONERS = ("hessian", "linear", "none")
#: Per-draw statistics of NUTS kept with the samples.
STATS = ("potential_energy", "accept_prob", "num_steps", "diverging")


def _numpyro():
    try:
        import numpyro
        import numpyro.distributions  # noqa: F401
        import numpyro.infer  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("posterior sampling needs numpyro: pip install 'emu_backend[jax]'") from exc
    return numpyro


@dataclass(frozen=True)
class SamplerConfig:
    """Settings of the NUTS chains.

    Parameters
    ----------
    num_warmup, num_samples : int
        Adaptation steps (discarded) and kept draws per chain.
    num_chains : int
        Independent chains (run one after the other; each its own random key).
    seed : int
        Seed of the chains' random keys.
    target_accept_prob : float
        Step-size adaptation target, in (0, 1).
    max_tree_depth : int
        Largest NUTS tree depth (at most ``2^depth`` gradient evaluations per draw).
    save_every : int
        Steps between saves of the chain state (and of the draws made since).
    precondition : {"hessian", "linear", "none"}
        ``"hessian"`` (default): NUTS moves in the coordinates ``u`` of :mod:`.precondition`, the
        posterior's std per Fourier mode measured at the chains' starting point
        (:func:`~.precondition.hessian_scale`, four gradients) as a mass matrix; ``"linear"``: the linear
        model's (:func:`~.precondition.fourier_scale`, no gradient); ``"none"``: the white noise itself.
    centre : bool
        With Omega_m or sigma8 inferred, centre each Fourier mode of the coordinates on the linear field's
        amplitude by the fraction of its precision the data give (:mod:`.coordinates`: the partially
        non-centred parametrisation that straightens the ridge between the parameters and the measured
        modes; default). No effect at fixed cosmology or with ``precondition="none"``.
    """

    num_warmup: int = 200
    num_samples: int = 200
    num_chains: int = 2
    seed: int = 0
    target_accept_prob: float = 0.8
    max_tree_depth: int = 8
    save_every: int = 10
    precondition: str = "hessian"
    centre: bool = True

    def __post_init__(self):
        check_int(self.num_warmup, "num_warmup", 0)
        check_int(self.num_samples, "num_samples", 1)
        check_int(self.num_chains, "num_chains", 1)
        check_int(self.seed, "seed", 0, 2**32 - 1)
        check_real(self.target_accept_prob, "target_accept_prob", 0.0, 1.0, lo_open=True, hi_open=True)
        check_int(self.max_tree_depth, "max_tree_depth", 1, 15)
        check_int(self.save_every, "save_every", 1)
        check_choice(self.precondition, "precondition", PRECONDITIONERS)
        check_bool(self.centre, "centre")


@dataclass(frozen=True)
class Posterior:
    """Draws of the chains and their diagnostics.

    Attributes
    ----------
    samples : dict of ndarray
        ``"noise"`` (chains, draws, N, N, N) and each inferred parameter (chains, draws).
    stats : dict of ndarray
        NUTS statistics per draw, (chains, draws): potential energy, acceptance probability, gradient
        evaluations (``num_steps``), divergences.
    diagnostics : dict
        Per parameter: mean, std, split R-hat and bulk ESS (numpyro.diagnostics); for the noise the worst
        and median R-hat and ESS over its N^3 values. Empty with fewer than four draws per chain.
    config : SamplerConfig
    timing : dict of ndarray
        Wall time of the chains, kept apart from ``stats`` (it differs between runs that give the same
        draws): ``"draw_seconds"`` (chains, draws), the seconds of each draw's NUTS step;
        ``"warmup_seconds"`` and ``"warmup_gradients"`` (chains,), the warm-up's seconds (numpyro's JAX
        compilation included) and gradient evaluations. A resumed chain counts the steps of the saved
        states it continues from as they were timed when they ran; NaN where a folder written before
        2026-12-08 did not record them.
    """

    samples: dict
    stats: dict
    diagnostics: dict
    config: SamplerConfig
    timing: dict = field(default_factory=dict)

    def mean(self, name: str) -> np.ndarray:
        """Posterior mean of ``name`` over chains and draws."""
        return self.samples[name].mean(axis=(0, 1))


def numpyro_model(lik: FieldLikelihood, coords: NoiseCoordinates | None = None):
    """The posterior of ``lik`` as a numpyro model (no arguments; call it inside ``jax.enable_x64(True)``).

    Sites: each inferred parameter ``Uniform(low, high)``; ``"noise"`` ``Normal(0, 1)`` of shape (N, N, N);
    the observed voxels ``"data"`` ``Normal(delta, sigma)``. With ``coords`` (:class:`~.coordinates.NoiseCoordinates`)
    the latent site is ``"u"`` instead, ``Normal(0, 1)`` plus the factor ``"noise_prior"``
    ``(|u|^2 - |w|^2) / 2 + log |det dw/du|`` (less its value at ``theta_ref``) for ``w = m(theta) u``: the
    white noise ``w`` has its ``Normal(0, 1)`` prior and the posterior of ``(w, theta)`` is unchanged.
    """
    _numpyro()
    import numpyro
    import numpyro.distributions as dist

    f = jax_forward_model(lik.model)
    grid = (lik.model.grid,) * 3
    index = np.flatnonzero(lik.mask.ravel())
    data, sigma = lik.data.ravel()[index], lik.noise_sigma.ravel()[index]

    jnp = jax_module().numpy
    centred = coords is not None and coords.centring is not None
    if coords is not None:
        scale = jnp.asarray(coords.scale, dtype=jnp.float64)
        weight = jnp.asarray(np.broadcast_to(mode_multiplicity(lik.model.grid), coords.scale.shape))
    if centred:  # log(a_k(theta_ref) / a_k(theta))^c_k in torch, gradients to theta by the bridge
        ratio = torch_callable(lambda *t: (coords.log_ratio(*t),), [coords.scale.shape])

    def model():
        theta = {name: numpyro.sample(name, dist.Uniform(*lik.priors.bounds(name))) for name in lik.infer}
        if coords is None:
            noise = numpyro.sample("noise", dist.Normal(0.0, 1.0).expand(grid).to_event(3))
        else:
            u = numpyro.sample("u", dist.Normal(0.0, 1.0).expand(grid).to_event(3))
            if centred:
                log_ratio = ratio(*(theta[k] for k in coords.names))[0]
                mult, log_det = scale * jnp.exp(log_ratio), jnp.sum(weight * log_ratio)
            else:
                mult, log_det = scale, 0.0
            noise = jnp.fft.irfftn(jnp.fft.rfftn(u) * mult, s=grid)
            numpyro.factor("noise_prior", 0.5 * (jnp.sum(u * u) - jnp.sum(noise * noise)) + log_det)
        delta = f(noise, **theta).reshape(-1)[index]
        numpyro.sample("data", dist.Normal(delta, sigma).to_event(1), obs=data)

    return model


# -- saved state ---------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _save_npz(path: Path, arrays: dict) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


#: Warm-up accumulators saved beside a chain's state (seconds, gradient evaluations).
_WARMUP_KEYS = ("warmup_seconds", "warmup_gradients")


def _save_state(path: Path, state, step: int, parts: list, warmup: dict) -> None:
    jax = jax_module()
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"leaf_{i:03d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays["step"] = np.asarray(step, dtype=np.int64)
    arrays["parts"] = np.asarray(json.dumps(parts))
    arrays.update({k: np.asarray(warmup[k], dtype=np.float64) for k in _WARMUP_KEYS})
    _save_npz(path, arrays)


def _load_state(path: Path, template):
    """(state, step, parts, warm-up accumulators) from ``path``; leaves checked against the freshly initialised
    ``template``; accumulators NaN in a state saved before they were recorded."""
    jax = jax_module()
    leaves, treedef = jax.tree_util.tree_flatten(template)
    try:
        with np.load(path, allow_pickle=False) as z:
            saved = [z[f"leaf_{i:03d}"] for i in range(len(leaves))]
            extra = set(z.files) - {f"leaf_{i:03d}" for i in range(len(leaves))} - {"step", "parts", *_WARMUP_KEYS}
            step, parts = int(z["step"]), json.loads(str(z["parts"]))
            warmup = {k: float(z[k]) if k in z.files else float("nan") for k in _WARMUP_KEYS}
    except (OSError, KeyError, ValueError) as exc:
        raise FileFormatError(f"{str(path)!r} is not a readable chain state ({exc})") from exc
    if extra:
        raise FileFormatError(f"{str(path)!r} holds unexpected arrays {sorted(extra)}: not this sampler's state")
    for i, (a, b) in enumerate(zip(saved, leaves)):
        if a.shape != np.shape(b) or a.dtype != np.asarray(b).dtype:
            raise FileFormatError(f"{str(path)!r} leaf {i} is {a.dtype}{a.shape}, the sampler's state needs "
                                  f"{np.asarray(b).dtype}{np.shape(b)}: written by other settings")
    state = jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(a) for a in saved])
    return state, step, parts, warmup


def _check_parts(folder: Path, parts: list) -> None:
    for name, digest in parts:
        path = folder / name
        if not path.is_file():
            raise FileFormatError(f"{str(path)!r} is missing; the chain state records it (digest {digest[:12]})")
        if _sha256(path) != digest:
            raise FileFormatError(f"{str(path)!r} does not match the digest its chain state records: the file "
                                  "changed after it was written; remove the chain folder to redo the chain")


def _coordinates(lik: FieldLikelihood, config: SamplerConfig, init: dict | None) -> NoiseCoordinates | None:
    """The chains' coordinates of the white noise (None: the white noise itself)."""
    if config.precondition == "none":
        return None
    theta = likelihood_reference(lik, init)
    if config.precondition == "linear":
        scale = fourier_scale(lik)
    else:
        noise = np.zeros((lik.model.grid,) * 3) if init is None else np.asarray(init["noise"], np.float64)
        scale = hessian_scale(lik, noise, theta, seed=config.seed)
    return NoiseCoordinates(lik.model, scale, theta, centre=config.centre)


def _record(lik: FieldLikelihood, config: SamplerConfig, coords: NoiseCoordinates | None) -> dict:
    numpyro = _numpyro()
    jax = jax_module()
    sampler = asdict(config)
    if not lik.infer:  # centring needs inferred parameters: without them the setting changes nothing
        del sampler["centre"]
    return {"posterior_sha256": lik.digest(), "sampler": sampler, "emu_backend": __version__,
            "numpyro": numpyro.__version__, "jax": jax.__version__, "infer": list(lik.infer),
            "preconditioner_sha256": None if coords is None else coords.digest()}


def _open_folder(out_dir: Path, record: dict) -> None:
    path = out_dir / "run.json"
    if path.is_file():
        old = read_json(path, "sampler run record")
        keys = ("posterior_sha256", "sampler", "infer", "preconditioner_sha256")
        if {k: old.get(k) for k in keys} != {k: record[k] for k in keys}:
            raise InputError(f"{str(out_dir)!r} holds chains of another posterior or other sampler settings; "
                             "resume with the same data and settings, or use a new folder")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2))


# -- the chains ----------------------------------------------------------------------------------------------
def _run_chain(kernel, sample, key, config: SamplerConfig, folder: Path | None, progress,
               coords: NoiseCoordinates | None = None) -> tuple[dict, dict, dict]:
    total = config.num_warmup + config.num_samples
    t_start = time.perf_counter()
    state = kernel.init(key, config.num_warmup, None, model_args=(), model_kwargs={})
    step, parts = 0, []
    warmup = {"warmup_seconds": 0.0, "warmup_gradients": 0.0}
    state_file = None if folder is None else folder / "state.npz"
    if state_file is not None and state_file.is_file():
        state, step, parts, warmup = _load_state(state_file, state)
        _check_parts(folder, parts)
        log.info("chain %s: resuming at step %d of %d", folder.name, step, total)
    if progress is not None:
        progress.update(step)
    constrain = kernel.postprocess_fn((), {})
    draws, stats, seconds = [], [], []
    if step == 0:  # numpyro's initialisation (its first gradients) counts as warm-up time
        warmup["warmup_seconds"] += time.perf_counter() - t_start
    while step < total:
        t0 = time.perf_counter()
        state = sample(state)
        step += 1
        elapsed = time.perf_counter() - t0  # the step's arrays are ready: the step blocks on the torch callback
        if step <= config.num_warmup:
            warmup["warmup_seconds"] += elapsed
            warmup["warmup_gradients"] += float(state.num_steps)
        else:
            seconds.append(elapsed)
            draw = {k: np.asarray(v) for k, v in constrain(state.z).items()}
            if coords is not None:  # the white noise of the chains' coordinates
                draw["noise"] = coords.to_noise(draw.pop("u"), draw)
            draws.append(draw)
            stats.append({k: np.asarray(getattr(state, k)) for k in STATS})
        if progress is not None:
            progress.update(1)
        if folder is not None and (step % config.save_every == 0 or step == total):
            if draws:
                name = f"part_{len(parts):05d}.npz"
                arrays = {f"sample_{k}": np.stack([d[k] for d in draws]) for k in draws[0]}
                arrays.update({f"stat_{k}": np.stack([s[k] for s in stats]) for k in STATS})
                arrays["time_draw_seconds"] = np.asarray(seconds, dtype=np.float64)
                _save_npz(folder / name, arrays)
                parts.append((name, _sha256(folder / name)))
                draws, stats, seconds = [], [], []
            _save_state(state_file, state, step, parts, warmup)
    timing = {k: np.float64(v) for k, v in warmup.items()}
    if folder is None:
        timing["draw_seconds"] = np.asarray(seconds, dtype=np.float64)
        return ({k: np.stack([d[k] for d in draws]) for k in draws[0]},
                {k: np.stack([s[k] for s in stats]) for k in STATS}, timing)
    samples, stats, times = _read_parts(folder, parts)
    return samples, stats, {**timing, **times}


def _read_parts(folder: Path, parts: list) -> tuple[dict, dict, dict]:
    _check_parts(folder, parts)
    samples, stats, times = {}, {}, []
    for name, _ in parts:
        with np.load(folder / name, allow_pickle=False) as z:
            n = None
            for key in z.files:
                kind, _, site = key.partition("_")
                if kind == "time":
                    continue
                (samples if kind == "sample" else stats).setdefault(site, []).append(z[key])
                n = len(z[key])
            # a part written before 2026-12-08 has no times: NaN for its draws
            times.append(z["time_draw_seconds"] if "time_draw_seconds" in z.files else np.full(n or 0, np.nan))
    draw_seconds = np.concatenate(times) if times else np.zeros(0)
    return ({k: np.concatenate(v) for k, v in samples.items()}, {k: np.concatenate(v) for k, v in stats.items()},
            {"draw_seconds": draw_seconds})


def _diagnostics(samples: dict) -> dict:
    from numpyro.diagnostics import summary

    chains, draws = samples["noise"].shape[:2]
    if draws < 4:  # numpyro's split R-hat splits each chain in halves of at least two draws
        return {}
    table = summary(samples, prob=0.9, group_by_chain=True)
    out = {}
    for name, row in table.items():
        if name == "noise":
            out[name] = {"r_hat_max": float(np.max(row["r_hat"])), "r_hat_median": float(np.median(row["r_hat"])),
                         "n_eff_min": float(np.min(row["n_eff"])), "n_eff_median": float(np.median(row["n_eff"]))}
        else:
            out[name] = {k.replace("%", ""): float(v) for k, v in row.items()}
    return out


def sample_posterior(lik: FieldLikelihood, config: SamplerConfig | None = None, *, out_dir=None,
                     init: dict | None = None, progress: bool = False) -> Posterior:
    """Draw posterior samples of ``lik`` with numpyro's NUTS, resumable from ``out_dir``.

    Parameters
    ----------
    lik : FieldLikelihood
    config : SamplerConfig, optional
    out_dir : str or Path, optional
        Folder of the chains' states and draws. A run killed at any point continues from its last saved
        step when called again with the same ``lik`` and ``config`` and gives the same draws, bit for bit,
        as an uninterrupted run (on the same machine and torch thread count: convolution sums depend on
        them); other data or settings are refused. The folder is locked while chains run (a second
        process on it gets :class:`~emu_backend.errors.OutputLockedError`). Without it nothing is saved.
    init : dict, optional
        Starting point (constrained values: ``"noise"`` (N, N, N) and inferred parameters), e.g. the MAP;
        default the prior medians (zero noise, the middle of the boxes).
    progress : bool
        Show a progress bar (tqdm) over all steps of all chains.

    Returns
    -------
    Posterior
    """
    config = SamplerConfig() if config is None else config
    if not isinstance(config, SamplerConfig):
        raise InputError(f"config must be a SamplerConfig, got {type(config).__name__}")
    if not isinstance(lik, FieldLikelihood):
        raise InputError(f"lik must be a FieldLikelihood, got {type(lik).__name__}")
    check_bool(progress, "progress")
    _numpyro()
    from numpyro.infer import NUTS, init_to_median, init_to_value

    jax = jax_module()
    folder = None if out_dir is None else Path(out_dir)
    if init is not None:
        grid = (lik.model.grid,) * 3
        if set(init) != {"noise", *lik.infer} or np.shape(init["noise"]) != grid:
            raise InputError(f"init must hold 'noise' of shape {grid} and {list(lik.infer)}, got "
                             f"{ {k: np.shape(v) for k, v in init.items()} }")
    lock = contextlib.nullcontext() if folder is None else output_lock(folder, folder=True, command="sample_posterior")
    with lock, jax.enable_x64(True):
        coords = _coordinates(lik, config, init)
        if folder is not None:
            _open_folder(folder, _record(lik, config, coords))
        if init is not None and coords is not None:
            init = {("u" if k == "noise" else k): (coords.from_noise(v, init) if k == "noise" else v)
                    for k, v in init.items()}
        strategy = (init_to_median(num_samples=15) if init is None else
                    init_to_value(values={k: jax.numpy.asarray(v, dtype=jax.numpy.float64) for k, v in init.items()}))
        kernel = NUTS(numpyro_model(lik, coords), target_accept_prob=config.target_accept_prob,
                      max_tree_depth=config.max_tree_depth, init_strategy=strategy)
        keys = jax.random.split(jax.random.PRNGKey(config.seed), config.num_chains)
        total = config.num_chains * (config.num_warmup + config.num_samples)
        bar = tqdm(total=total, desc="NUTS", unit="step", disable=not progress) if progress else None
        sample = jax.jit(lambda s: kernel.sample(s, (), {}))  # one compilation for all chains
        per_chain = []
        try:
            for c in range(config.num_chains):
                chain_folder = None if folder is None else folder / f"chain_{c}"
                if chain_folder is not None:
                    chain_folder.mkdir(exist_ok=True)
                per_chain.append(_run_chain(kernel, sample, keys[c], config, chain_folder, bar, coords))
        finally:
            if bar is not None:
                bar.close()
    samples = {k: np.stack([s[k] for s, _, _ in per_chain]) for k in per_chain[0][0] if k in ("noise", *lik.infer)}
    stats = {k: np.stack([t[k] for _, t, _ in per_chain]) for k in STATS}
    timing = {k: np.stack([m[k] for _, _, m in per_chain]) for k in ("draw_seconds", *_WARMUP_KEYS)}
    return Posterior(samples, stats, _diagnostics(samples), config, timing)
