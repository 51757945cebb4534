"""Interchangeable backends of the simulator interface: the emulator, ZA and 2LPT (and, through the
adapters, the PM N-body codes).

A backend turns :class:`~emu_backend.ics.InitialConditions` and a cosmology into one
:class:`~emu_backend.datatypes.Snapshot` per requested redshift, in the order asked. Use
:func:`emu_backend.simulator.simulate` rather than calling ``run`` directly: it validates the output
times, accepts ``a`` as well as ``z`` and records the common provenance.

Backends are looked up by name in a registry (:func:`get_backend`); the adapters add theirs with
:func:`register_backend`. ``"jaxpm"`` and ``"pmwd"`` are placeholders until their adapters register;
:func:`get_backend` imports the jaxpm or pmwd adapter on first use of its name.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np

from ..checks import check_bool, check_choice, check_int
from ..cosmology.params import Cosmology
from ..datatypes.snapshot import Snapshot
from ..errors import InputError, MissingDependencyError
from ..ics.conditions import InitialConditions
from ..ics.lpt import lpt_particles
from ..inference import Emulator
from ..inference.default import load_emulator
from ..inference.memory import MemoryEstimate
from ..inference.tiling import check_tile_size

__all__ = [
    "Backend",
    "LPTBackend",
    "ZABackend",
    "LPT2Backend",
    "EmulatorBackend",
    "register_backend",
    "get_backend",
    "available_backends",
]

logger = logging.getLogger(__name__)


def output_scale_factors(z, a_start: float) -> np.ndarray:
    """Scale factors ``1 / (1 + z)`` of the outputs of an N-body run started at ``a_start``.

    Raises
    ------
    InputError
        An output at or before the start (naming it and the start's redshift).
    """
    a_out = np.array([1.0 / (1.0 + float(zi)) for zi in z])
    if np.any(a_out <= a_start):
        bad = float(np.asarray(z)[np.argmin(a_out)])
        raise InputError(f"output z = {bad!r} is not after the start a_start = {a_start} "
                         f"(z = {1.0 / a_start - 1.0:.6g}); lower a_start or drop that output")
    return a_out


class Backend(ABC):
    """Interface of a simulator backend.

    Subclasses set ``name`` and implement :meth:`run`.
    """

    name: str = ""

    @abstractmethod
    def run(self, ics: InitialConditions, cosmology: Cosmology, z: Sequence[float]) -> list[Snapshot]:
        """Evolve the initial conditions to the output redshifts.

        Parameters
        ----------
        ics : InitialConditions
            z = 0 linear field of the ``n^3`` particle grid.
        cosmology : Cosmology
        z : sequence of float
            Output redshifts, already validated (finite, ``a = 1/(1+z)`` in (0, 1.5], no duplicates).

        Returns
        -------
        list of Snapshot
            One per redshift, in the order of ``z``; ``meta`` holds backend-specific provenance.
        """

    def describe(self) -> dict:
        """JSON-serialisable settings of this backend (recorded in snapshot meta)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LPTBackend(Backend):
    """Lagrangian perturbation theory at order 1 (Zel'dovich) or 2 (2LPT), see :mod:`emu_backend.ics.lpt`.

    Parameters
    ----------
    order : {1, 2}
    """

    def __init__(self, order: int):
        self.order = int(check_choice(order, "LPT order", (1, 2)))
        self.name = "za" if order == 1 else "2lpt"

    def describe(self) -> dict:
        return {"lpt_order": self.order}

    def run(self, ics, cosmology, z):
        n, box = ics.n, ics.box_size
        ids = np.arange(n**3, dtype=np.int64)
        out = []
        for zi in z:
            pos, vel = lpt_particles(ics.displacement, box, cosmology, zi, order=self.order)
            out.append(Snapshot(pos.reshape(3, -1).T, vel.reshape(3, -1).T, ids, 1.0 / (1.0 + zi), box, n,
                                cosmology, meta=self.describe()))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ZABackend(LPTBackend):
    """Zel'dovich approximation: ``x = q + D(z) Psi``, ``v = a H f D Psi``.

    Examples
    --------
    >>> ZABackend().name
    'za'
    """

    def __init__(self):
        super().__init__(1)


class LPT2Backend(LPTBackend):
    """Second-order LPT: ``x = q + D Psi1 + D2 Psi2`` (2LPTic's growth factors)."""

    def __init__(self):
        super().__init__(2)


def _auto_tile(n: int) -> int:
    """Smallest multiple of 8 covering the box, at most 128 (the published tile size)."""
    return min(128, -(-n // 8) * 8)


class EmulatorBackend(Backend):
    """The neural-network emulator (:class:`~emu_backend.inference.Emulator`).

    Parameters
    ----------
    emulator : Emulator, optional
        The emulator to run; default: :func:`~emu_backend.inference.default.load_emulator` of
        ``weights`` (None: the shipped weights; in a build without them a random stand-in, flagged
        with a logged WARNING and ``meta["untrained"] = True``).
    weights : str or Path, optional
        A checkpoint for :meth:`Emulator.from_checkpoint` (not together with ``emulator``).
    tile_size : int, optional
        Output cells per tile side (a multiple of 8); default: the box rounded up to a multiple of 8,
        at most 128.
    batch_size : int
        Tiles per network call.
    device : str, optional
        Torch device of a constructed emulator (default ``"cpu"``); with ``emulator`` it must be None.
    allow_extrapolation : bool, optional
        Run outside the training domain (Omega_m, z, cell size ``1000/512`` Mpc/h) with a warning
        instead of raising :class:`DomainError`; None keeps the emulator's own setting.
    check_memory : bool, optional
        Refuse a run whose estimated peak memory does not fit in the available memory
        (:class:`~emu_backend.errors.ResourceError`); None keeps the emulator's own setting (on by default).
    progress : bool
        Show a tile progress bar (only on a terminal).
    """

    name = "emulator"

    def __init__(self, emulator=None, *, weights=None, tile_size: int | None = None, batch_size: int = 1,
                 device: str | None = None, allow_extrapolation: bool | None = None,
                 check_memory: bool | None = None, progress: bool = False):
        tile = None if tile_size is None else check_tile_size(tile_size, "tile_size")
        batch = check_int(batch_size, "batch_size", 1, what="a positive integer")
        if emulator is not None:
            if weights is not None or device is not None:
                raise InputError("pass either emulator=... or weights=/device=, not both")
            if not isinstance(emulator, Emulator):
                raise InputError(f"emulator must be an Emulator, got {type(emulator).__name__}")
        else:
            emulator = load_emulator(weights, device=device or "cpu", allow_extrapolation=bool(allow_extrapolation))
        self.emulator = emulator
        self.tile_size = tile
        self.batch_size = batch
        self.allow_extrapolation = allow_extrapolation
        self.check_memory = None if check_memory is None else check_bool(check_memory, "check_memory")
        self.progress = bool(progress)

    @property
    def untrained(self) -> bool:
        """Whether the emulator is the random stand-in (outputs not physical)."""
        return bool(getattr(self.emulator, "untrained", False))

    def describe(self) -> dict:
        emu = self.emulator
        return {"checksum": emu.checksum or None, "weights_source": emu.source, "model_kind": emu.model.kind,
                "untrained": self.untrained, "device": str(emu.device), "dtype": str(emu.dtype).replace("torch.", ""),
                "tile_size": self.tile_size, "batch_size": self.batch_size}

    def memory_estimate(self, n: int, n_outputs: int = 1) -> MemoryEstimate:
        """The peak memory of emulating an ``n^3`` box with this backend's tile and batch size: the tile
        pass (:meth:`Emulator.memory_estimate`) and ``n_outputs`` in-memory outputs (displacement and
        velocity, float32)."""
        return self.emulator.memory_estimate((3, n, n, n), self.tile_size or _auto_tile(n), self.batch_size,
                                             velocity=True, host_bytes=n_outputs * 2 * 3 * n**3 * 4)

    def run(self, ics, cosmology, z):
        if ics.n < 8:
            raise InputError(f"the emulator needs at least 8 particles per side, got n = {ics.n}")
        if self.untrained:
            logger.warning("the emulator backend is running UNTRAINED (random) weights (%s): the snapshots are "
                           "NOT physical and carry meta['untrained'] = True", self.emulator.source or "no source")
        tile = self.tile_size or _auto_tile(ics.n)
        emu = self.emulator
        saved = emu.allow_extrapolation, emu.check_memory
        if self.allow_extrapolation is not None:
            emu.allow_extrapolation = bool(self.allow_extrapolation)
        if self.check_memory is not None:
            emu.check_memory = self.check_memory
        try:
            preds = emu.predict(ics.displacement, cosmology.omega_m, list(z), velocity=True, tile_size=tile,
                                batch_size=self.batch_size, box_size=ics.box_size, progress=self.progress)
        finally:
            emu.allow_extrapolation, emu.check_memory = saved
        meta = {**self.describe(), "tile_size": tile}
        return [Snapshot.from_displacement(p.displacement, p.velocity, 1.0 / (1.0 + zi), ics.box_size, cosmology,
                                           meta=dict(meta)) for p, zi in zip(preds, z)]

    def __repr__(self) -> str:
        return f"EmulatorBackend(source={self.emulator.source!r}, untrained={self.untrained})"


# -- registry ---------------------------------------------------------------------------------
_PLACEHOLDER = "_emu_backend_placeholder"


#: Adapter modules imported by :func:`get_backend` on first use of a placeholder name; importing one
#: registers the real backend (its constructor raises MissingDependencyError without the extra).
_ADAPTER_MODULES = {"jaxpm": "emu_backend.adapters.jaxpm", "pmwd": "emu_backend.adapters.pmwd"}


def _load_adapter(name: str) -> None:
    """Import the adapter of a placeholder backend, which replaces the placeholder when it registers."""
    module = _ADAPTER_MODULES.get(name)
    if module is None:
        return
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"backend {name!r}: importing its adapter {module} failed ({exc}); install "
                                     f"the extra with: pip install 'emu_backend[{name}]'") from exc


def _adapter_placeholder(name: str, extra: str) -> Callable[..., Backend]:
    def factory(**options):
        raise MissingDependencyError(
            f"backend {name!r} comes with the {name} adapter (emu_backend.adapters), which is not available in "
            f"this installation; install the extra with: pip install 'emu_backend[{extra}]' and import the "
            f"adapter, which registers it with register_backend({name!r}, ...)"
        )

    setattr(factory, _PLACEHOLDER, True)
    return factory


_REGISTRY: dict[str, Callable[..., Backend]] = {
    "emulator": EmulatorBackend,
    "za": ZABackend,
    "2lpt": LPT2Backend,
    "jaxpm": _adapter_placeholder("jaxpm", "jaxpm"),
    "pmwd": _adapter_placeholder("pmwd", "pmwd"),
}


def register_backend(name: str, factory: Callable[..., Backend], *, replace: bool = False) -> None:
    """Make a backend available to :func:`get_backend` and :func:`~emu_backend.simulator.simulate`.

    Parameters
    ----------
    name : str
        Lower-case name, e.g. ``"jaxpm"``.
    factory : callable
        ``factory(**options) -> Backend`` (a Backend subclass works).
    replace : bool
        Replace an existing (non-placeholder) backend of that name.
    """
    if not isinstance(name, str) or not name or name != name.strip().lower():
        raise InputError(f"backend name must be a non-empty lower-case string, got {name!r}")
    if not callable(factory):
        raise InputError(f"backend factory must be callable, got {factory!r}")
    current = _REGISTRY.get(name)
    if current is not None and not getattr(current, _PLACEHOLDER, False) and not replace:
        raise InputError(f"backend {name!r} is already registered; pass replace=True to replace it")
    _REGISTRY[name] = factory
    logger.debug("registered backend %r -> %r", name, factory)


def available_backends() -> tuple[str, ...]:
    """Names known to :func:`get_backend` (placeholders included)."""
    return tuple(_REGISTRY)


def get_backend(name, **options) -> Backend:
    """A backend by name, constructed with ``options``; a :class:`Backend` instance is returned as is.

    Parameters
    ----------
    name : str or Backend
        ``"emulator"``, ``"za"``, ``"2lpt"``, or one registered by an adapter (``"jaxpm"``, ``"pmwd"``).
    **options
        Constructor arguments of the backend, e.g. ``tile_size=`` for the emulator.

    Examples
    --------
    >>> get_backend("2lpt")
    LPT2Backend()
    """
    if isinstance(name, Backend):
        if options:
            raise InputError(f"backend options {sorted(options)} given with a backend instance {name!r}")
        return name
    if not isinstance(name, str) or name not in _REGISTRY:
        raise InputError(f"unknown backend {name!r}; choose one of {list(_REGISTRY)}")
    factory = _REGISTRY[name]
    if getattr(factory, _PLACEHOLDER, False):
        _load_adapter(name)
        factory = _REGISTRY[name]
    if not getattr(factory, _PLACEHOLDER, False):
        try:
            inspect.signature(factory).bind(**options)
        except TypeError:
            params = [p for p in inspect.signature(factory).parameters if p != "self"]
            raise InputError(
                f"backend {name!r} does not accept option(s) {sorted(options)}; it takes {params or 'none'}"
            ) from None
    backend = factory(**options)
    if not isinstance(backend, Backend):
        raise InputError(f"backend factory for {name!r} returned {type(backend).__name__}, not a Backend")
    return backend
