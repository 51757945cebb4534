"""Configuration of a training run: :class:`TrainConfig` and the learning-rate schedule."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from ..checks import check_choice, check_int, check_positive, check_real
from ..errors import InputError
from ..inference.models import ZdepConvention

__all__ = ["TrainConfig", "lr_factor", "SUPPORTED_DOMAIN", "RESUMABLE_CHANGES"]

#: The domain a shipped model may claim: the training data's ranges are intersected with it.
SUPPORTED_DOMAIN = {"omega_m": (0.1, 0.5), "z": (0.0, 3.0)}
#: Config fields that may change between a checkpoint and its resume.
RESUMABLE_CHANGES = ("device", "checkpoint_every", "keep_checkpoints")
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (validated on construction).

    Parameters
    ----------
    width : int
        StyledVNet channel width (64 published; 4-16 for CPU tests).
    crop : int
        Output crop size in cells (>= 8); the input is ``crop + 96``.
    batch : int
        Global batch size (crops per optimiser step, over all ranks).
    steps : int
        Optimiser steps.
    lr : float
        Peak learning rate of AdamW.
    weight_decay, betas
        AdamW decoupled weight decay and betas of the convolution weights and biases.
    style_weight_decay, style_betas
        The same for the style parameters (``style_weight``, ``style_bias``), a separate group as in
        the reference (betas 0.9/0.99, weight decay 1e-4).
    warmup_steps : int or None
        Linear warm-up steps (None: ``min(100, steps // 10)``), then cosine decay to
        ``lr * min_lr_ratio`` at the last step.
    min_lr_ratio : float
    grad_clip : float or None
        Maximum global gradient norm (None: no clipping).
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast on CUDA ("auto": bf16 where supported, else fp16 with a GradScaler); CPU runs fp32.
    checkpoint_every, val_every : int
        Steps between checkpoints and validations (both also at the last step).
    val_samples : int
        Validation crops (fixed draws from the held-out files).
    augment : bool
        Random cubic symmetries of the training crops.
    seed : int
        Seed of the model initialisation and of every data draw.
    device : str
        ``"cpu"``, ``"cuda"`` (rank ``r`` uses ``cuda:LOCAL_RANK``) or an explicit device.
    velocity_method : {"dual", "jvp"}
        Forward-mode pass for d/dD: the folded :class:`~emu_backend.nn.Dual` path or ``torch.func.jvp``.
    init_weights : str or None
        Path of a zdep model file (``.emu``) of the same width to start from (fine-tuning) instead of
        the seeded reference initialisation; its checksum is recorded in the provenance.
    keep_checkpoints : int
        Checkpoints kept on disk.

    Examples
    --------
    >>> TrainConfig(width=4, crop=8, steps=10).warmup
    1
    """

    width: int = 64
    crop: int = 32
    batch: int = 1
    steps: int = 1000
    lr: float = 4e-4
    weight_decay: float = 1e-4
    betas: tuple = (0.9, 0.999)
    style_weight_decay: float = 1e-4
    style_betas: tuple = (0.9, 0.99)
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 1.0
    precision: str = "auto"
    checkpoint_every: int = 100
    val_every: int = 100
    val_samples: int = 8
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    velocity_method: str = "dual"
    keep_checkpoints: int = 2
    init_weights: str | None = None

    def __post_init__(self):
        def put(key, value):
            object.__setattr__(self, key, value)

        for key, lo in (("width", 1), ("batch", 1), ("steps", 1), ("checkpoint_every", 1), ("val_every", 1),
                        ("val_samples", 1), ("keep_checkpoints", 1), ("crop", 8), ("seed", 0)):
            put(key, check_int(getattr(self, key), f"TrainConfig.{key}", lo))
        put("lr", check_real(self.lr, "TrainConfig.lr", 0.0, lo_open=True))
        put("min_lr_ratio", check_real(self.min_lr_ratio, "TrainConfig.min_lr_ratio", 0.0, 1.0))
        for key in ("weight_decay", "style_weight_decay"):
            put(key, check_real(getattr(self, key), f"TrainConfig.{key}", 0.0))
        for key in ("betas", "style_betas"):
            b = tuple(getattr(self, key))
            if len(b) != 2:
                raise InputError(f"TrainConfig.{key} must be two numbers in [0, 1), got {getattr(self, key)!r}")
            put(key, tuple(check_real(x, f"TrainConfig.{key}[{i}]", 0.0, 1.0, hi_open=True) for i, x in enumerate(b)))
        if self.warmup_steps is not None:
            put("warmup_steps", check_int(self.warmup_steps, "TrainConfig.warmup_steps", 0, self.steps - 1))
        if self.grad_clip is not None:
            put("grad_clip", check_positive(self.grad_clip, "TrainConfig.grad_clip",
                                            what="a finite number > 0 or None"))
        check_choice(self.precision, "TrainConfig.precision", _PRECISIONS)
        check_choice(self.velocity_method, "TrainConfig.velocity_method", ZdepConvention.VELOCITY_METHODS)
        if self.init_weights is not None and not isinstance(self.init_weights, str):
            raise InputError(f"TrainConfig.init_weights must be a path string or None, got {self.init_weights!r}")
        if not isinstance(self.device, str):
            raise InputError(f"TrainConfig.device must be a string such as 'cpu' or 'cuda', got {self.device!r}")

    @property
    def warmup(self) -> int:
        """Warm-up steps actually used."""
        return min(100, self.steps // 10) if self.warmup_steps is None else self.warmup_steps

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def lr_factor(step: int, config: TrainConfig) -> float:
    """Learning-rate multiplier of optimiser step ``step`` (0-based): linear warm-up, cosine decay."""
    w = config.warmup
    if step < w:
        return (step + 1) / w
    span = max(1, config.steps - 1 - w)
    progress = min(1.0, (step - w) / span)
    r = config.min_lr_ratio
    return r + (1 - r) * 0.5 * (1 + math.cos(math.pi * progress))
