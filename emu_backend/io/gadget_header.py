"""The Gadget header, independent of the file format, and what every Gadget reader checks with it.

The HDF5 reader (:mod:`emu_backend.io.gadget_hdf5`) and the binary reader (:mod:`emu_backend.io.gadget1`)
each parse their own header layout into a :class:`GadgetHeader`; :func:`check_header_set` checks the
headers of a multi-file set against each other, and :func:`particles_from_file` turns the particle
arrays of a set, in file units, into :class:`~emu_backend.io.gadget_particles.GadgetParticles`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FileFormatError
from .gadget_particles import GadgetParticles
from .gadget_units import MASS_UNIT_MSUN_H, positions_from_file, velocities_from_file

__all__ = ["GadgetHeader", "check_header_set", "particles_from_file"]

#: The header values that must agree between the files of a set (field, name in messages).
_SHARED = (("box_size", "BoxSize"), ("time", "Time"), ("num_files", "NumFilesPerSnapshot"))


@dataclass(frozen=True)
class GadgetHeader:
    """One file's header, in file units.

    Attributes
    ----------
    time : float
        Scale factor a (``Time``).
    box_size : float
        Box side in the file's length unit (``BoxSize``).
    num_files : float
        Files in the set (``NumFilesPerSnapshot``, ``num_files``).
    npart : tuple of 6 int
        Particles of each type in this file (``NumPart_ThisFile``).
    npart_total : tuple of 6 int
        Particles of each type in the set, high word included (``NumPart_Total``, ``NumPart_Total_HighWord``).
    mass_table : tuple of 6 float
        Particle mass of each type [1e10 Msun/h] (``MassTable``); 0 where masses are stored per particle.
    omega0, omega_lambda, hubble_param : float
        Header cosmology; NaN where the file records none.
    redshift : float
        ``Redshift``; NaN where the file records none. It must agree with ``time``.
    """

    time: float
    box_size: float
    num_files: float
    npart: tuple
    npart_total: tuple
    mass_table: tuple
    omega0: float = math.nan
    omega_lambda: float = math.nan
    hubble_param: float = math.nan
    redshift: float = math.nan


#: Relative tolerance of ``Time = 1 / (1 + Redshift)`` (float32 headers hold ~7 digits).
_TIME_RTOL = 1e-5


def check_header_set(paths: list[Path], headers: list[GadgetHeader]) -> int:
    """Check the headers of a set: type-1 particles only, shared values equal, counts that add up.

    Parameters
    ----------
    paths : list of Path
        The files, in order.
    headers : list of GadgetHeader
        Their headers.

    Returns
    -------
    int
        The number of type-1 particles in the set (>= 1).

    Raises
    ------
    FileFormatError
        Naming the file and the values that disagree.
    """
    first = headers[0]
    for path, head in zip(paths, headers):
        others = [t for t in range(6) if t != 1 and (head.npart[t] or head.npart_total[t])]
        if others:
            raise FileFormatError(f"{str(path)!r}: particle types {others} present (NumPart_ThisFile = "
                                  f"{list(head.npart)}, NumPart_Total = {list(head.npart_total)}); only type-1 "
                                  f"(dark matter) particles are supported")
        if head is first:
            continue
        for key, name in _SHARED:
            if getattr(head, key) != getattr(first, key):
                raise FileFormatError(f"{str(path)!r}: Header/{name} = {getattr(head, key)!r} differs from "
                                      f"{getattr(first, key)!r} in {str(paths[0])!r}")
        if head.npart_total != first.npart_total:
            raise FileFormatError(f"{str(path)!r}: NumPart_Total {list(head.npart_total)} differs from "
                                  f"{list(first.npart_total)} in {str(paths[0])!r}")
    n_part = first.npart_total[1]
    n_sum = sum(head.npart[1] for head in headers)
    if n_sum != n_part:
        raise FileFormatError(
            f"snapshot {str(paths[0])!r}: NumPart_Total[1] = {n_part} but NumPart_ThisFile[1] sums to {n_sum} "
            f"over {len(paths)} file(s)"
        )
    if n_part == 0:
        raise FileFormatError(f"snapshot {str(paths[0])!r}: NumPart_Total[1] = 0; no type-1 particles to read")
    return n_part


def particles_from_file(header: GadgetHeader, paths: list[Path], pos: np.ndarray, vel: np.ndarray,
                        ids: np.ndarray, *, factor: float, mass_1e10: float | None = None,
                        provenance: dict | None = None) -> GadgetParticles:
    """The particles of a set, from its arrays in file units, converted to internal units.

    Parameters
    ----------
    header : GadgetHeader
        Header of the first file.
    paths : list of Path
        The files read.
    pos, vel : ndarray, shape (N, 3)
        Coordinates in file length units and Gadget's ``u = v / sqrt(a)`` [km/s], in file order.
    ids : ndarray, shape (N,), integer
        Particle IDs as stored.
    factor : float
        File length units per Mpc/h.
    mass_1e10 : float, optional
        Particle mass [1e10 Msun/h] when stored per particle; default the header's ``MassTable[1]``.
    provenance : dict, optional
        ``/Provenance`` attributes of HDF5 files written by this package.

    Returns
    -------
    GadgetParticles

    Raises
    ------
    FileFormatError
        Time outside (0, 1.5], a Redshift that disagrees with it, a box that is not finite and > 0, IDs
        that are not integers.
    """
    a = float(header.time)
    box_size = float(header.box_size) / factor
    if not (0 < a <= 1.5 and math.isfinite(box_size) and box_size > 0):
        raise FileFormatError(f"{str(paths[0])!r}: Time = {a!r} must be in (0, 1.5] and BoxSize = "
                              f"{header.box_size!r} finite and > 0")
    z = float(header.redshift)
    if not math.isnan(z) and not (z > -1 and math.isclose(a, 1.0 / (1.0 + z), rel_tol=_TIME_RTOL)):
        raise FileFormatError(f"{str(paths[0])!r}: Header/Redshift = {z!r} disagrees with Header/Time = {a!r} "
                              f"(a = 1/(1 + z) would be {1.0 / (1.0 + z) if z > -1 else math.inf:.6g}); the "
                              f"snapshot's time is ambiguous")
    if ids.dtype.kind not in "iu":
        raise FileFormatError(f"{str(paths[0])!r}: ParticleIDs must be integers, got dtype {ids.dtype}")
    mass = header.mass_table[1] if mass_1e10 is None else mass_1e10
    return GadgetParticles(
        positions=positions_from_file(pos, factor), velocities=velocities_from_file(vel, a),
        ids=ids.astype(np.uint64), a=a, box_size=box_size, omega_m=float(header.omega0),
        omega_l=float(header.omega_lambda), h=float(header.hubble_param),
        particle_mass=float(mass) * MASS_UNIT_MSUN_H, files=tuple(str(p) for p in paths),
        provenance=dict(provenance or {}),
    )
