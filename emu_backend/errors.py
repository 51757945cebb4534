"""The package's exception hierarchy.

Two families, as in the design notes: bad input (the caller can fix it) and failed computation
(something went wrong while computing with valid input). Every error message names the offending
value and what was expected.

    EmuBackendError
    ├── InputError (ValueError)          bad argument, shape, dtype, NaN/inf, unknown config key
    │   ├── DomainError                  cosmology / redshift / resolution outside the trained domain
    │   └── FileFormatError              missing, truncated or corrupt file of any kind
    │       └── CheckpointError          wrong architecture, missing/extra/mis-shaped tensor, checksum
    ├── ComputationError (RuntimeError)  a backend (CLASS, JAX, torch) failed on valid input
    └── MissingDependencyError (ImportError)  an optional extra is not installed
"""

from __future__ import annotations

import importlib

__all__ = [
    "EmuBackendError",
    "InputError",
    "DomainError",
    "FileFormatError",
    "CheckpointError",
    "ComputationError",
    "MissingDependencyError",
]


class EmuBackendError(Exception):
    """Base class of every error raised on purpose by emu_backend."""


class InputError(EmuBackendError, ValueError):
    """An argument, array or configuration value is not acceptable."""


class DomainError(InputError):
    """A cosmology, redshift or resolution lies outside the model's training domain.

    Raised unless the caller explicitly allows extrapolation.
    """


class FileFormatError(InputError):
    """A file is missing, truncated, corrupt or not of the expected format."""


class CheckpointError(FileFormatError):
    """A checkpoint does not match the architecture, or fails its checksum."""


class ComputationError(EmuBackendError, RuntimeError):
    """A computation failed on valid input (e.g. CLASS did not converge)."""


class MissingDependencyError(EmuBackendError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str):
    """Import an optional dependency lazily, or raise a clear error naming the extra.

    Parameters
    ----------
    module : str
        Importable module name, e.g. ``"classy"``.
    extra : str
        The pyproject extra that installs it, e.g. ``"class"``.

    Returns
    -------
    module
        The imported module.
    """

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised where the extra is absent
        raise MissingDependencyError(
            f"optional dependency {module!r} is not installed; "
            f"install it with: pip install 'emu_backend[{extra}]'"
        ) from exc
