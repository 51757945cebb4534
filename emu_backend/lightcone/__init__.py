"""Lightcones from emulated outputs: particles, HEALPix shells, convergence maps (see docs/lightcone.md).

* :mod:`~emu_backend.lightcone.geometry`: the opening (:class:`Cone`), RA/Dec, the replicas of the box;
* :mod:`~emu_backend.lightcone.crossing`: a particle's crossing of the past lightcone between two outputs
  (cubic Hermite in the lightcone distance, ``dx/dchi = -v/c``);
* :mod:`~emu_backend.lightcone.build`: :class:`LightconeSpec` and :func:`build_lightcone`, shell by shell;
* :mod:`~emu_backend.lightcone.store`: the per-shell HDF5 layout;
* :mod:`~emu_backend.lightcone.maps`: HEALPix densities, Born convergence, the Limber integral (healpy);
* :mod:`~emu_backend.lightcone.compare`: a map's convergence C_ell against Limber (snapshot P(k), CLASS halofit).

The command and the report: :func:`emu_backend.pipelines.lightcone.lightcone` (``emu-backend lightcone``).
"""

from .build import LightconeSpec, ShellSummary, build_lightcone
from .crossing import Crossing, solve_crossing
from .geometry import FULL_SKY, Cone, radec
from .maps import limber_convergence
from .store import read_shell

__all__ = ["LightconeSpec", "ShellSummary", "build_lightcone", "Crossing", "solve_crossing", "Cone", "FULL_SKY",
           "radec", "limber_convergence", "read_shell"]
