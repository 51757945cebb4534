"""The default emulator: the package's shipped weights (``emu_backend/data/default_zdep.emu``), or,
where a build ships none, a seeded random initialisation that is flagged loudly everywhere it is used.

The shipped weights are the package's own training run (``docs/shipped_weights.md``: data, command,
measured accuracy against held-out PM runs and 2LPT). They were trained on CPU at a reduced width, far
from the published model's accuracy; loading them logs a warning that says so.
"""

from __future__ import annotations

import logging
from importlib import resources

import torch

from ..nn import StyledVNet
from .emulator import Emulator
from .models import ZdepConvention

__all__ = ["DEFAULT_WEIGHTS_NAME", "default_weights_path", "default_emulator", "UNTRAINED_WARNING",
           "SHIPPED_WEIGHTS_NOTE"]

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS_NAME = "default_zdep.emu"
UNTRAINED_WARNING = (
    "NO TRAINED WEIGHTS ARE SHIPPED YET: the default emulator uses a seeded RANDOM initialisation of "
    "the published architecture. Its outputs are NOT physical. Pass weights=PATH (a published "
    "map2map checkpoint, the JAX port's .npz, or an emu_backend model file) for real predictions."
)


SHIPPED_WEIGHTS_NOTE = (
    "default emulator: the package's own CPU-trained weights (width %d, far shorter training than the "
    "published width-64 model); measured accuracy in docs/shipped_weights.md. Pass weights=PATH for "
    "published or your own weights."
)


def default_weights_path():
    """Path of the shipped weights file, or None when the package ships none."""
    ref = resources.files("emu_backend") / "data" / DEFAULT_WEIGHTS_NAME
    return ref if ref.is_file() else None


def default_emulator(device="cpu", dtype="float32", allow_extrapolation: bool = False, *,
                     precision: str = "fp32", compile_mode: str | None = None) -> Emulator:
    """The shipped emulator (map2map_zdep convention), or an untrained stand-in with a warning.

    The arguments are those of :class:`Emulator`.

    The stand-in is reproducible: ``torch.manual_seed(0)`` initialisation in a private generator
    state, so the global RNG is untouched.
    """
    path = default_weights_path()
    if path is not None:
        emu = Emulator.from_checkpoint(path, device=device, dtype=dtype, allow_extrapolation=allow_extrapolation,
                                       precision=precision, compile_mode=compile_mode)
        net = emu.model.networks["displacement"]
        log.warning(SHIPPED_WEIGHTS_NOTE, net.arch.width)
        return emu
    log.warning(UNTRAINED_WARNING)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = StyledVNet(style_size=2)
    emu = Emulator(ZdepConvention(net), device=device, dtype=dtype, allow_extrapolation=allow_extrapolation,
                   source="untrained-random-seed0", precision=precision, compile_mode=compile_mode)
    emu.untrained = True
    return emu
