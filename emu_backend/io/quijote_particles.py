"""Quijote particle files: the initial conditions in either Gadget format, and the emulator's linear
displacement from the z = 127 2LPT initial conditions.

Quijote's ``ICs/ics.<k>`` are Gadget format-1 binaries written by 2LPTic (older downloads) or HDF5
``ics.<k>.hdf5``; :func:`read_particles` reads either, through the one reader of each format
(:mod:`emu_backend.io.gadget1`, :mod:`emu_backend.io.gadget_hdf5`). The snapshots are Gadget HDF5
(``snapdir_XXX/snap_XXX.<k>.hdf5``, Blosc-compressed since 2023). Placing particles on the Lagrangian
grid goes through the ID map of the initial conditions (:mod:`emu_backend.io.lagrangian_map`,
:func:`emu_backend.io.gadget_particles.particles_to_snapshot`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..cosmology.growth import growth_factor
from ..cosmology.params import Cosmology
from ..datatypes.snapshot import Snapshot
from ..errors import InputError
from ..ics.lpt import second_order_displacement, second_order_growth_factor
from .gadget1 import read_gadget_binary
from .gadget_hdf5 import read_gadget_hdf5_particles
from .gadget_particles import GadgetParticles
from .gadget_units import DEFAULT_LENGTH_UNIT
from .lagrangian_map import MAX_JUMP_CELLS, largest_jump

__all__ = ["read_particles", "linear_displacement_from_ics"]

logger = logging.getLogger(__name__)


def _is_hdf5(path: Path) -> bool:
    if path.is_file():
        return path.name.endswith(".hdf5")
    return any(path.with_name(path.name + s).is_file() for s in (".hdf5", ".0.hdf5"))


def read_particles(path_or_prefix, *, length_unit: str | None = None) -> GadgetParticles:
    """Read Gadget particles in HDF5 (``X.hdf5``, ``X.<i>.hdf5``) or binary format 1/2 (``X``, ``X.<i>``).

    HDF5 is chosen when a ``.hdf5`` file of that name exists, binary otherwise.

    Parameters
    ----------
    path_or_prefix : str or Path
        ``.../ICs/ics`` or one file of the set.
    length_unit : {"kpc/h", "Mpc/h"}, optional
        Unit of positions and BoxSize in the files; by default the one an HDF5 file records, else
        Gadget's "kpc/h" (Quijote's).

    Returns
    -------
    GadgetParticles
        In file order; positions [Mpc/h], velocities [km/s] (``u sqrt(a)``), IDs as stored.
    """
    path = Path(path_or_prefix)
    if _is_hdf5(path):
        return read_gadget_hdf5_particles(path, length_unit=length_unit)
    return read_gadget_binary(path, length_unit=DEFAULT_LENGTH_UNIT if length_unit is None else length_unit)


def linear_displacement_from_ics(ics: Snapshot, cosmology: Cosmology | None = None, *,
                                 correct_2lpt: bool = True) -> np.ndarray:
    """The z = 0 linear (Zel'dovich) displacement implied by 2LPT initial conditions.

    ``s = x - q`` (minimum periodic image, particles on their grid points) at the ICs' redshift ``z_i``
    (Quijote: 127) is ``D(z_i) Psi1 + D2(z_i) Psi2[Psi1]``; this returns
    ``Psi1 = s / D(z_i) - (D2 / D)(z_i) Psi2[Psi1]`` (two fixed-point iterations, see
    docs/quijote.md), or ``s / D(z_i)`` with ``correct_2lpt=False`` (ZA ICs).

    Parameters
    ----------
    ics : Snapshot
        The initial conditions in Lagrangian order (from :meth:`QuijoteSimulation.read_ics` or
        :func:`~emu_backend.io.gadget_particles.particles_to_snapshot`, which verify the order).
    cosmology : Cosmology, optional
        For the growth factors; default ``ics.cosmology``.
    correct_2lpt : bool
        Remove the second-order displacement (2LPTic's ``D2 = -3/7 D^2 Omega_m(z)^(-1/143)``).

    Returns
    -------
    ndarray, shape (3, n, n, n), float32
        Psi1 at z = 0 [Mpc/h], channel c along axis c + 1; input of
        :meth:`InitialConditions.from_linear_displacement`.

    Raises
    ------
    InputError
        Displacements of neighbouring grid points that differ by half a cell or more: not early
        initial conditions in Lagrangian order.
    """

    if not isinstance(ics, Snapshot):
        raise InputError(f"ics must be a Snapshot, got {type(ics).__name__}")
    cosmo = ics.cosmology if cosmology is None else cosmology
    if not isinstance(cosmo, Cosmology):
        raise InputError(f"cosmology must be a Cosmology, got {type(cosmo).__name__}")
    dis = ics.displacement_field().astype(np.float64)
    jump = largest_jump(dis, ics.box_size / ics.grid)
    if jump >= MAX_JUMP_CELLS:
        raise InputError(
            f"the IC displacements of neighbouring grid points differ by up to {jump:.3g} cells (< {MAX_JUMP_CELLS:g} "
            f"in early initial conditions) at z = {ics.z:.4g}: these are not early initial conditions in Lagrangian "
            f"order (read them with QuijoteSimulation.read_ics or particles_to_snapshot, which place the particles "
            f"by the verified ID map of the initial conditions)"
        )
    d1 = float(growth_factor(ics.z, cosmo.omega_m))
    psi = dis / d1
    if correct_2lpt:
        ratio = float(second_order_growth_factor(ics.z, cosmo.omega_m)) / d1
        psi1 = psi
        for _ in range(2):
            psi1 = psi - ratio * second_order_displacement(psi1, ics.box_size)
        psi = psi1
    logger.info("linear displacement from ICs at z = %.4g: D = %.6g, rms %.4g Mpc/h, 2LPT corrected: %s",
                ics.z, d1, float(np.sqrt(np.mean(psi**2))), correct_2lpt)
    return psi.astype(np.float32)
