"""Gadget's file units and conventions: the one place where they are converted to the internal units.

Gadget files (HDF5 and binary snapshots, initial conditions, FoF tables) store

- lengths in the run's ``UnitLength_in_cm``: kpc/h by default (Gadget, 2LPTic, Quijote), or Mpc/h;
- velocities as Gadget's ``u = v_pec / sqrt(a)`` [km/s];
- masses in 1e10 Msun/h.

Internally the package uses Mpc/h, peculiar km/s and Msun/h. Every Gadget reader and writer of
:mod:`emu_backend.io` converts with the table and functions below.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

__all__ = [
    "LENGTH_UNITS",
    "DEFAULT_LENGTH_UNIT",
    "MASS_UNIT_MSUN_H",
    "UNIT_MASS_G",
    "UNIT_VELOCITY_CM_S",
    "length_factor",
    "length_unit_of_cm",
    "positions_from_file",
    "positions_to_file",
    "velocities_from_file",
    "velocities_to_file",
]

#: File length unit -> (file units per Mpc/h, UnitLength_in_cm).
LENGTH_UNITS = {"kpc/h": (1000.0, 3.085678e21), "Mpc/h": (1.0, 3.085678e24)}
#: Gadget's (and 2LPTic's, Quijote's) length unit, assumed where a file records none.
DEFAULT_LENGTH_UNIT = "kpc/h"
#: Gadget's mass unit [Msun/h].
MASS_UNIT_MSUN_H = 1e10
#: Gadget's mass unit [g] (1e10 Msun/h), as written to ``UnitMass_in_g``.
UNIT_MASS_G = 1.989e43
#: Gadget's velocity unit [cm/s] (km/s), as written to ``UnitVelocity_in_cm_per_s``.
UNIT_VELOCITY_CM_S = 1e5


def length_factor(length_unit: str) -> float:
    """File length units per Mpc/h.

    Parameters
    ----------
    length_unit : {"kpc/h", "Mpc/h"}
        A key of :data:`LENGTH_UNITS`.

    Returns
    -------
    float
        1000 for kpc/h, 1 for Mpc/h.

    Raises
    ------
    InputError
        Another unit.

    Examples
    --------
    >>> length_factor("kpc/h")
    1000.0
    """
    if length_unit not in LENGTH_UNITS:
        raise InputError(f"length_unit must be one of {sorted(LENGTH_UNITS)}, got {length_unit!r}")
    return LENGTH_UNITS[length_unit][0]


def length_unit_of_cm(unit_length_in_cm: float) -> str | None:
    """The key of :data:`LENGTH_UNITS` whose ``UnitLength_in_cm`` is within 1e-3 of the value, else None."""
    for unit, (_, unit_cm) in LENGTH_UNITS.items():
        if abs(unit_length_in_cm / unit_cm - 1.0) < 1e-3:
            return unit
    return None


def positions_from_file(pos_file: np.ndarray, factor: float) -> np.ndarray:
    """Comoving positions [Mpc/h], float32, shape of ``pos_file`` (file units, ``factor`` per Mpc/h)."""
    return (np.asarray(pos_file).astype(np.float64) / factor).astype(np.float32)


def positions_to_file(pos_mpc_h: np.ndarray, factor: float) -> np.ndarray:
    """Positions in file units (``factor`` per Mpc/h), float32, shape of ``pos_mpc_h``."""
    return (np.asarray(pos_mpc_h).astype(np.float64) * factor).astype(np.float32)


def velocities_from_file(u: np.ndarray, a: float) -> np.ndarray:
    """Peculiar velocities [km/s] ``u sqrt(a)``, float32, from Gadget's ``u`` [km/s] at scale factor ``a``."""
    return (np.asarray(u).astype(np.float64) * math.sqrt(a)).astype(np.float32)


def velocities_to_file(vel_km_s: np.ndarray, a: float) -> np.ndarray:
    """Gadget's ``u = v / sqrt(a)`` [km/s], float32, from peculiar velocities [km/s] at scale factor ``a``."""
    return (np.asarray(vel_km_s).astype(np.float64) / math.sqrt(a)).astype(np.float32)
