"""Provenance shared by the pipelines: the versions of the package and of its main dependencies.

Examples
--------
>>> sorted(versions())
['emu_backend', 'h5py', 'numpy', 'python', 'scipy', 'torch']
"""

from __future__ import annotations

import platform

import h5py
import numpy
import scipy
import torch

from .._version import __version__

__all__ = ["versions"]


def versions() -> dict[str, str]:
    """Versions of the package, Python and the main dependencies, as recorded in every output."""
    return {"emu_backend": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "scipy": scipy.__version__, "torch": torch.__version__, "h5py": h5py.__version__}
