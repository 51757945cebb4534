"""emu_backend: a field-level neural-network emulator of cosmological N-body simulations.

The map2map StyledVNet emulators (Jamieson, Li et al. 2022, 2024) map the linear (Zel'dovich)
displacement of a periodic particle grid to the nonlinear N-body displacement and velocity.

The front door: what a cosmologist calls, importable from here, loaded on first use (PEP 562), so
``import emu_backend`` imports numpy only; torch loads with the first emulator or simulation, and
optional libraries load inside their adapters.

Examples
--------
>>> from emu_backend import InitialConditions, QUIJOTE_FIDUCIAL, simulate
>>> ics = InitialConditions.from_noise(8, None, QUIJOTE_FIDUCIAL, seed=42)
>>> [round(s.z, 1) for s in simulate(ics, QUIJOTE_FIDUCIAL, z=[1.0, 0.0], backend="za")]
[1.0, 0.0]
"""

from __future__ import annotations

import importlib

from ._version import __version__
from .errors import (
    CheckpointError,
    ComputationError,
    DomainError,
    EmuBackendError,
    FileFormatError,
    InputError,
    MissingDependencyError,
)

#: public name -> module that defines it (imported on first attribute access)
_LAZY = {
    "simulate": "emu_backend.simulator",
    "available_backends": "emu_backend.simulator",
    "InitialConditions": "emu_backend.ics",
    "Snapshot": "emu_backend.datatypes",
    "HaloCatalog": "emu_backend.datatypes",
    "Cosmology": "emu_backend.cosmology",
    "QUIJOTE_FIDUCIAL": "emu_backend.cosmology",
    "PLANCK18": "emu_backend.cosmology",
    "PRESETS": "emu_backend.cosmology",
    "Emulator": "emu_backend.inference",
    "Prediction": "emu_backend.inference",
    "default_emulator": "emu_backend.inference",
}

__all__ = [
    "__version__",
    *_LAZY,
    "CheckpointError",
    "ComputationError",
    "DomainError",
    "EmuBackendError",
    "FileFormatError",
    "InputError",
    "MissingDependencyError",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'emu_backend' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
