"""emu_backend: a field-level neural-network emulator of cosmological N-body simulations.

The map2map StyledVNet emulators (Jamieson, Li et al. 2022, 2024) map the linear (Zel'dovich)
displacement of a periodic particle grid to the nonlinear N-body displacement and velocity.

Importing this package imports torch and numpy only; optional libraries load inside their adapters.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    CheckpointError,
    ComputationError,
    DomainError,
    EmuBackendError,
    FileFormatError,
    InputError,
    MissingDependencyError,
)

__all__ = [
    "__version__",
    "CheckpointError",
    "ComputationError",
    "DomainError",
    "EmuBackendError",
    "FileFormatError",
    "InputError",
    "MissingDependencyError",
]
