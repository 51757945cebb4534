"""The simulator interface: initial conditions in, a list of particle snapshots out.

One call, :func:`simulate`, with interchangeable backends (``"emulator"``, ``"za"``, ``"2lpt"``, and
the PM N-body codes registered by the adapters), as in a PM/COLA code's ``linear -> lpt -> nbody``.

Examples
--------
>>> from emu_backend.cosmology import QUIJOTE_FIDUCIAL
>>> from emu_backend.ics import InitialConditions
>>> ics = InitialConditions.from_noise(8, None, QUIJOTE_FIDUCIAL, seed=42)
>>> [s.z for s in simulate(ics, QUIJOTE_FIDUCIAL, z=[0.0, 1.0], backend="za")]
[0.0, 1.0]
"""

from .backends import (
    Backend,
    EmulatorBackend,
    LPT2Backend,
    LPTBackend,
    ZABackend,
    available_backends,
    get_backend,
    register_backend,
)
from .simulate import output_redshifts, simulate

__all__ = [
    "simulate",
    "output_redshifts",
    "Backend",
    "LPTBackend",
    "ZABackend",
    "LPT2Backend",
    "EmulatorBackend",
    "available_backends",
    "get_backend",
    "register_backend",
]
