"""Training the z-dependent emulator: :func:`train` (configured by :class:`~.config.TrainConfig`).

One optimiser step takes the global batch of ``batch`` crops (:class:`~.dataset.CropSampler`, draws
``(seed, step, i)``); rank ``r`` of ``W`` runs ``i = r, r + W, ...`` one crop at a time (style and
growth differ per crop), backpropagating ``loss_i * W / batch`` so that DDP's average over ranks
gives the gradient of the batch-mean loss. The model is ``StyledVNet(style_size=2, in_chan=3,
out_chan=3, width)`` evaluated as at inference (:class:`~emu_backend.inference.models.ZdepConvention`):
input ``x D``, style ``[(Om-0.3)*5, D-1]``, velocity = d(output)/dD by the forward-mode
:class:`~emu_backend.nn.Dual` pass. See docs/training.md.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..checkpoints.native import load_model_file, save_model_file
from ..errors import EmuBackendError, InputError, OutputLockedError
from ..inference import memory
from ..inference.models import zdep_forward
from ..io.output_lock import output_lock
from ..io.output_path import check_writable, os_errors_as_package_errors
from ..nn import StyledVNet
from .checkpoint import CHECKPOINT_DIR, LOG_NAME, MODEL_NAME, LossLog, load_latest_checkpoint, save_checkpoint
from .config import RESUMABLE_CHANGES, SUPPORTED_DOMAIN, TrainConfig, lr_factor
from .dataset import CropSampler, data_fingerprint
from .distributed import DistInfo, all_reduce_sum, setup_distributed, teardown_distributed
from .loss import COMPONENTS, painting_scale, zdep_loss

__all__ = ["TrainConfig", "TrainResult", "train", "build_model", "predict_crop", "lr_factor", "SUPPORTED_DOMAIN"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` produced (on rank 0; other ranks get the same numbers, no files)."""

    model_path: Path | None
    log_path: Path
    steps: int
    best_step: int
    best_val_loss: float | None
    final_loss: float
    resumed_from: int


def build_model(config: TrainConfig) -> StyledVNet:
    """The seeded StyledVNet(2, 3, 3, width); the global RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return StyledVNet(style_size=2, in_chan=3, out_chan=3, width=config.width)


def load_init_weights(net: StyledVNet, path: str) -> str:
    """Copy the displacement network of the zdep model file ``path`` into ``net``; returns its checksum."""

    mf = load_model_file(path)
    if mf.kind != "zdep":
        raise InputError(f"init_weights {path!r} is a {mf.kind!r} model; fine-tuning needs a 'zdep' model")
    src = mf.networks["displacement"]
    if src.arch != net.arch:
        raise InputError(f"init_weights {path!r} has architecture {src.arch}, the run needs {net.arch} "
                         f"(set width to {src.arch.width})")
    net.load_state_dict(src.state_dict())
    logger.info("initialised from %s (checksum %s)", path, mf.checksum[:12])
    return mf.checksum


def predict_crop(net, x: torch.Tensor, omega_m: float, growth: float, method: str = "dual"):
    """Network output and its D-derivative (network units) for one crop.

    Parameters
    ----------
    net : StyledVNet (or a DDP wrapper of one)
    x : Tensor (1, 3, n, n, n)
        z = 0 linear displacement / 6.
    omega_m, growth : float
        Omega_m and D(z, Omega_m).
    method : {"dual", "jvp"}

    Returns
    -------
    (Tensor, Tensor), each (1, 3, n-96, n-96, n-96)
        Displacement / 6 and d(displacement / 6)/dD (velocity in units of ``velocity_norm``).
    """
    om = torch.tensor(float(omega_m), dtype=x.dtype, device=x.device)
    dz = torch.tensor(float(growth), dtype=x.dtype, device=x.device)
    return zdep_forward(net, x, om, dz, method=method)


def _to_device(a: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(a)[None].to(device).contiguous(memory_format=torch.channels_last_3d)


def _precision(config: TrainConfig, device: torch.device) -> str:
    if device.type != "cuda":
        if config.precision in ("bf16", "fp16"):
            logger.warning("precision %s asked for on %s: running fp32 (autocast is for CUDA)", config.precision, device)
        return "fp32"
    if config.precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return config.precision


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _crop_loss(net, crop, config, device, precision):
    x = _to_device(crop.x, device)
    with _autocast(precision, device):
        out, vel = predict_crop(net, x, crop.omega_m, crop.growth, config.velocity_method)
    loss, parts = zdep_loss(out.float(), vel.float(), _to_device(crop.dis, device), _to_device(crop.vel, device),
                            scale=painting_scale(crop.cell_size))
    return loss[0], {k: v[0] for k, v in parts.items()}


def _reduce(sums: list, info: DistInfo, device) -> dict:
    """Global means of [loss, dis, vel, den, mom] from per-rank sums (last entry: count)."""
    t = all_reduce_sum(torch.tensor(sums, dtype=torch.float64, device=device), info).cpu().tolist()
    n = t[-1]
    return dict(zip(("loss", *COMPONENTS), (v / n for v in t[:-1])))


def evaluate(net, sampler: CropSampler, config: TrainConfig, info: DistInfo, precision: str) -> dict:
    """Mean loss and MSE components over the fixed validation crops (shared over ranks)."""
    sums = [0.0] * (2 + len(COMPONENTS))
    with torch.no_grad():
        for i in range(info.rank, config.val_samples, info.world_size):
            loss, parts = _crop_loss(net, sampler.validation_draw(i), config, info.device, precision)
            for j, v in enumerate((loss, *(parts[k] for k in COMPONENTS))):
                sums[j] += float(v)
            sums[-1] += 1
    return _reduce(sums, info, info.device)


def _domain(train_s: CropSampler) -> dict:
    d = train_s.domain()
    out = {}
    for key, (lo, hi) in SUPPORTED_DOMAIN.items():
        a, b = max(d[key][0], lo), min(d[key][1], hi)
        if a > b:
            raise InputError(f"the training data's {key} range {d[key]} lies outside the supported [{lo}, {hi}]")
        out[key] = [a, b]
    out["cell_size_mpc_h"] = d["cell_size_mpc_h"]
    return out


def _check_resume(ckpt: dict, config: TrainConfig, fingerprint: str, run_dir: Path) -> None:
    old, new = ckpt["config"], config.to_dict()
    diff = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if diff:
        changes = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
        raise InputError(f"cannot resume {str(run_dir)!r}: the config changed ({changes}); use the same settings, "
                         f"another output folder, or --no-resume --overwrite to start over")
    if ckpt["data"] != fingerprint:
        raise InputError(f"cannot resume {str(run_dir)!r}: the training/validation file list differs from the "
                         f"checkpoint's (names and sizes are fingerprinted); pass the same files")


def train(config: TrainConfig, train_files, val_files=(), out_dir="train_out", *, resume: bool = True,
          overwrite: bool = False, progress: bool | None = None, check_memory: bool = True) -> TrainResult:
    """Train (or resume training) the zdep emulator; export the best weights to ``out_dir/model.emu``.

    Parameters
    ----------
    config : TrainConfig
    train_files, val_files : sequence of path
        Training-sample files (:mod:`emu_backend.io.training_sample`); validation files are whole
        held-out simulations (:func:`~emu_backend.training.dataset.split_files`). No validation
        files: the final weights are exported.
    out_dir : path
        Run folder: ``checkpoints/``, ``log.csv``, ``model.emu`` (see :mod:`.checkpoint`).
    resume : bool
        Continue from the latest checkpoint in ``out_dir`` (refused if the config or the data differ).
    overwrite : bool
        With ``resume=False``, start over in a folder that already holds a run.
    progress : bool or None
        tqdm bar on rank 0 (None: only when stderr is a terminal).
    check_memory : bool
        Before the first step, estimate the peak memory (one crop's forward, tangent and backward
        pass, the model and optimiser, the sample files held in memory:
        :func:`~emu_backend.inference.memory.training_estimate`) and refuse a run that does not fit
        in the available memory with :class:`~emu_backend.errors.ResourceError`; False runs anyway.

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError
        Bad files or settings, among them a crop larger than the data's grid and a batch larger than
        the data's distinct crops (files x redshifts x origins).
    ResourceError
        The estimated peak memory exceeds the available memory (without ``check_memory=False``).

    Launched under torchrun or SLURM (see :mod:`.distributed`), every rank calls this function; only
    rank 0 writes files. The run folder is locked (``out_dir/.emu_backend.lock``) before anything in it
    is read: a second training into it raises :class:`~emu_backend.errors.OutputLockedError`.

    Examples
    --------
    >>> result = train(TrainConfig(width=4, crop=8, steps=2), ["sim_000.h5"], [], "run")  # doctest: +SKIP
    """
    if not isinstance(config, TrainConfig):
        raise InputError(f"config must be a TrainConfig, got {type(config).__name__}")
    info = setup_distributed(config.device)
    try:
        with os_errors_as_package_errors(out_dir), _run_dir_lock(Path(out_dir), info):
            return _train(config, list(train_files), list(val_files), Path(out_dir), resume, overwrite, progress,
                          info, check_memory)
    finally:
        teardown_distributed(info)


@contextlib.contextmanager
def _run_dir_lock(run_dir: Path, info: DistInfo):
    """Rank 0 holds the run folder's lock (:func:`~emu_backend.io.output_lock.output_lock`) for the whole
    training, taken before any checkpoint is read; when it cannot, every rank raises."""
    with contextlib.ExitStack() as stack:
        error = None
        if info.is_main:
            try:
                stack.enter_context(output_lock(check_writable(run_dir, folder=True), folder=True))
            except EmuBackendError as exc:
                error = exc
        failed = all_reduce_sum(torch.tensor([float(error is not None)], device=info.device), info)
        if error is not None:
            raise error
        if failed.item() > 0:
            raise OutputLockedError(f"rank 0 could not lock the run folder {str(run_dir)!r} (see its error)")
        yield


def _check_sizes(config: TrainConfig, sampler: CropSampler, val_sampler, info: DistInfo, check_memory: bool) -> None:
    """The batch against the data's distinct crops, then the estimated peak memory against the available."""
    if config.batch > sampler.n_crops:
        raise InputError(f"TrainConfig.batch = {config.batch} crops per step exceeds the {sampler.n_crops} distinct "
                         f"crops of the training data ({len(sampler.files)} file(s) x redshifts x grid^3 origins); "
                         f"use batch <= {sampler.n_crops}")
    if not check_memory:
        return
    per_rank = -(-config.batch // info.world_size)
    data = sampler.resident_bytes + (val_sampler.resident_bytes if val_sampler is not None else 0)
    what = (f"training width {config.width} on crops of {config.crop} ({config.crop + 96}^3 input cells), "
            f"{per_rank} per step and rank, on {info.device}")
    memory.check_memory(memory.training_estimate(what, width=config.width, crop=config.crop, crops_per_rank=per_rank,
                                                 data_bytes=data, device=info.device))


def _train(config, train_files, val_files, run_dir, resume, overwrite, progress, info: DistInfo,
           check_memory: bool = True) -> TrainResult:

    if config.batch < info.world_size:
        raise InputError(f"batch {config.batch} is smaller than the world size {info.world_size}: each rank needs a crop")
    if config.velocity_method == "jvp" and info.distributed:
        raise InputError("velocity_method 'jvp' cannot run under DDP; use 'dual'")
    sampler = CropSampler(train_files, config.crop, config.seed, augment=config.augment)
    val_sampler = CropSampler(val_files, config.crop, config.seed, augment=False) if val_files else None
    if val_sampler is not None and not math.isclose(val_sampler.cell_size, sampler.cell_size, rel_tol=1e-9):
        raise InputError(f"validation cell size {val_sampler.cell_size} differs from training {sampler.cell_size} Mpc/h")
    _check_sizes(config, sampler, val_sampler, info, check_memory)  # before any data is read into memory
    domain = _domain(sampler)
    fingerprint = data_fingerprint(train_files, val_files)
    described = {"train": [f.describe() for f in sampler.files],  # seeds and cosmologies, for provenance
                 "val": [f.describe() for f in val_sampler.files] if val_sampler is not None else []}
    device = info.device
    precision = _precision(config, device)

    net = build_model(config)
    init_checksum = None
    if config.init_weights is not None:
        init_checksum = load_init_weights(net, config.init_weights)
    net = net.to(device, memory_format=torch.channels_last_3d)
    style = [p for n, p in net.named_parameters() if "style" in n]
    other = [p for n, p in net.named_parameters() if "style" not in n]
    optimizer = torch.optim.AdamW([
        {"params": other, "betas": config.betas, "weight_decay": config.weight_decay},
        {"params": style, "betas": config.style_betas, "weight_decay": config.style_weight_decay},
    ], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    columns = ["step", "lr", "seconds", "grad_norm", "loss", *COMPONENTS, "val_loss", *(f"val_{k}" for k in COMPONENTS)]
    log = LossLog(run_dir / LOG_NAME, columns)

    ckpt = load_latest_checkpoint(run_dir) if resume else None
    if not resume and (run_dir / CHECKPOINT_DIR).exists() and not overwrite:
        raise InputError(f"{str(run_dir)!r} already holds a training run; resume it, or pass overwrite=True "
                         f"(--overwrite) to start over, or choose another folder")
    start, best, last = 0, None, {"loss": float("nan")}
    if ckpt is not None:
        _check_resume(ckpt, config, fingerprint, run_dir)
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start, best, last = int(ckpt["step"]), ckpt["best"], ckpt["last"]
        logger.info("resuming %s from step %d", run_dir, start)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if ckpt is not None:
            log.truncate(start)
        else:
            log.start()

    model = net
    if info.distributed:

        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = tqdm(total=config.steps, initial=start, desc="training", unit="step", disable=not (show and info.is_main))
    net.train()
    for step in range(start, config.steps):
        t0 = time.perf_counter()
        indices = range(info.rank, config.batch, info.world_size)
        optimizer.zero_grad(set_to_none=True)
        sums = [0.0] * (2 + len(COMPONENTS))
        for j, i in enumerate(indices):
            crop = sampler.draw(step, i)  # drawn when used: one crop in memory at a time, whatever the batch
            sync = not info.distributed or j == len(indices) - 1
            with contextlib.nullcontext() if sync else model.no_sync():
                loss, parts = _crop_loss(model, crop, config, device, precision)
                scaler.scale(loss * (info.world_size / config.batch)).backward()
            for k, v in enumerate((loss, *(parts[c] for c in COMPONENTS))):
                sums[k] += float(v.detach())
            sums[-1] += 1
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip if config.grad_clip else math.inf)
        lr = optimizer.param_groups[0]["lr"]
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        done = step + 1
        last = _reduce(sums, info, device)
        row = {"step": done, "lr": lr, "grad_norm": float(norm), **last}
        if val_sampler is not None and (done % config.val_every == 0 or done == config.steps):
            net.eval()
            val = evaluate(model, val_sampler, config, info, precision)
            net.train()
            row.update({f"val_{k}": v for k, v in val.items()})
            if best is None or val["loss"] < best["loss"]:
                best = {"step": done, "loss": val["loss"], "model": {k: v.detach().cpu().clone()
                                                                     for k, v in net.state_dict().items()}}
        row["seconds"] = time.perf_counter() - t0
        if info.is_main:
            log.append(row)
            if done % config.checkpoint_every == 0 or done == config.steps:
                save_checkpoint(run_dir, {
                    "config": config.to_dict(), "data": fingerprint, "domain": domain,
                    "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "best": best, "last": last,
                    "world_size": info.world_size, "init_weights_checksum": init_checksum,
                    "data_description": described,
                }, done, keep=config.keep_checkpoints)
        bar.update(1)
        bar.set_postfix(loss=f"{last['loss']:.4g}")
    bar.close()

    weights = best["model"] if best is not None else {k: v.detach().cpu() for k, v in net.state_dict().items()}
    best_step = best["step"] if best is not None else config.steps
    model_path = None
    if info.is_main:
        model_path = _export(run_dir / MODEL_NAME, weights, config, domain, sampler, val_sampler, fingerprint,
                             best_step, best, last, info, init_checksum)
    for s in (sampler, val_sampler):
        if s is not None:
            s.close()
    return TrainResult(model_path, run_dir / LOG_NAME, config.steps, best_step,
                       None if best is None else float(best["loss"]), float(last["loss"]), start)


def _export(path, weights, config, domain, sampler, val_sampler, fingerprint, best_step, best, last, info,
            init_checksum=None):

    net = StyledVNet(style_size=2, in_chan=3, out_chan=3, width=config.width)
    net.load_state_dict({k: v.contiguous() for k, v in weights.items()})
    provenance = {
        "training": {
            "config": config.to_dict(), "steps": config.steps, "best_step": best_step,
            "best_val_loss": None if best is None else float(best["loss"]),
            "final_train_loss": float(last["loss"]), "world_size": info.world_size,
            "device": str(info.device), "data_fingerprint": fingerprint, "seed": config.seed,
            "init_weights_checksum": init_checksum,
            "data": {"train": [f.describe() for f in sampler.files],
                     "val": [f.describe() for f in val_sampler.files] if val_sampler is not None else []},
        }
    }
    save_model_file(path, "zdep", {"displacement": net}, domain, provenance=provenance, overwrite=True)
    logger.info("exported the weights of step %d to %s", best_step, path)
    return path
