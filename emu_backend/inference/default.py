"""The default emulator: the package's shipped weights (``emu_backend/data/default_zdep.emu``), or,
where a build ships none, a seeded random initialisation that is flagged loudly everywhere it is used.

The shipped weights are the package's own training run (``docs/shipped_weights.md``: data, command,
measured accuracy against held-out PM runs and 2LPT). They were trained on CPU at a reduced width, far
from the published model's accuracy; loading them logs a warning that says so.
"""

from __future__ import annotations

import json
import logging
from importlib import resources

import torch

from ..nn import StyledVNet
from .emulator import Emulator
from .models import ZdepConvention

__all__ = ["DEFAULT_WEIGHTS_NAME", "DEFAULT_WEIGHTS_CARD_NAME", "default_weights_path", "default_weights_card",
           "default_emulator", "load_emulator", "UNTRAINED_WARNING", "SHIPPED_WEIGHTS_NOTE"]

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS_NAME = "default_zdep.emu"
#: The one description of the shipped weights (label, checksum, summary, measured accuracy), beside them
#: in ``emu_backend/data``: ``docs/shipped_weights.md``, ``run.json``, the run's figure and the CLI read it.
DEFAULT_WEIGHTS_CARD_NAME = "default_zdep.json"
UNTRAINED_WARNING = (
    "NO TRAINED WEIGHTS ARE SHIPPED YET: the default emulator uses a seeded RANDOM initialisation of "
    "the published architecture. Its outputs are NOT physical. Pass weights=PATH (a published "
    "map2map checkpoint, the JAX port's .npz, or an emu_backend model file) for real predictions."
)


SHIPPED_WEIGHTS_NOTE = (
    "default emulator: %s; measured accuracy in %s. Pass weights=PATH (--weights PATH) for published or "
    "your own weights."
)


def default_weights_path():
    """Path of the shipped weights file, or None when the package ships none."""
    ref = resources.files("emu_backend") / "data" / DEFAULT_WEIGHTS_NAME
    return ref if ref.is_file() else None


def default_weights_card() -> dict | None:
    """The description of the shipped weights (``emu_backend/data/default_zdep.json``), or None without them.

    Keys: ``label`` ("demo weights"), ``doc`` (the page that documents them), ``sha256`` (the checksum
    their file carries), ``summary`` (one sentence) and ``accuracy`` (the measured errors against
    held-out PM runs, by redshift, with what was measured in ``accuracy["what"]``).

    Examples
    --------
    >>> default_weights_card()["label"]
    'demo weights'
    """
    ref = resources.files("emu_backend") / "data" / DEFAULT_WEIGHTS_CARD_NAME
    if default_weights_path() is None or not ref.is_file():
        return None
    return json.loads(ref.read_text(encoding="utf-8"))


def default_emulator(device="cpu", dtype="float32", allow_extrapolation: bool = False, *,
                     precision: str = "fp32", compile_mode: str | None = None,
                     check_memory: bool = True) -> Emulator:
    """The shipped emulator (map2map_zdep convention), or an untrained stand-in with a warning.

    The arguments are those of :class:`Emulator`.

    The stand-in is reproducible: ``torch.manual_seed(0)`` initialisation in a private generator
    state, so the global RNG is untouched.
    """
    path = default_weights_path()
    if path is not None:
        emu = Emulator.from_checkpoint(path, device=device, dtype=dtype, allow_extrapolation=allow_extrapolation,
                                       precision=precision, compile_mode=compile_mode, check_memory=check_memory)
        card = default_weights_card() or {}
        log.warning(SHIPPED_WEIGHTS_NOTE, card.get("summary", "the package's own weights"),
                    card.get("doc", "docs/shipped_weights.md"))
        return emu
    log.warning(UNTRAINED_WARNING)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = StyledVNet(style_size=2)
    emu = Emulator(ZdepConvention(net), device=device, dtype=dtype, allow_extrapolation=allow_extrapolation,
                   source="untrained-random-seed0", precision=precision, compile_mode=compile_mode,
                   check_memory=check_memory)
    emu.untrained = True
    return emu


def load_emulator(weights=None, *, device="cpu", dtype="float32", allow_extrapolation: bool = False,
                  precision: str = "fp32", compile_mode: str | None = None, check_memory: bool = True) -> Emulator:
    """The emulator a user asks for: a weights file, or the shipped default when ``weights`` is None.

    The one place where user options (command line, run configs, simulator backends) become an
    :class:`Emulator`.

    Parameters
    ----------
    weights : str or Path, optional
        A checkpoint for :meth:`Emulator.from_checkpoint` (our model file, a published map2map ``.pt``
        or the JAX port's ``.npz``); None: :func:`default_emulator`.
    device : str or torch.device
        Torch device, e.g. ``"cpu"``, ``"cuda:0"``.
    dtype : {"float32", "float64"}
        Arithmetic of the network.
    allow_extrapolation : bool
        Run outside the training domain (Omega_m, z, cell size 1000/512 Mpc/h) with a warning
        instead of raising :class:`~emu_backend.errors.DomainError`.
    precision : {"fp32", "tf32", "bf16", "fp16"}
        Network arithmetic (see :mod:`emu_backend.inference.acceleration`).
    compile_mode : str, optional
        ``torch.compile`` mode; None: eager.
    check_memory : bool
        Refuse runs whose estimated peak memory does not fit (see :class:`Emulator`); False runs anyway.

    Returns
    -------
    Emulator
        With ``untrained = True`` when it is the random stand-in of a build without shipped weights.

    Raises
    ------
    FileFormatError, CheckpointError
        ``weights`` is missing, unreadable or fails its checksum.
    InputError
        A bad device, dtype, precision or compile mode.

    Examples
    --------
    >>> load_emulator(device="cpu").device.type
    'cpu'
    """
    options = {"device": device, "dtype": dtype, "allow_extrapolation": allow_extrapolation,
               "precision": precision, "compile_mode": compile_mode, "check_memory": check_memory}
    if weights is None:
        return default_emulator(**options)
    return Emulator.from_checkpoint(weights, **options)
