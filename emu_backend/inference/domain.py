"""The training domain of a model, and the checks that refuse extrapolation."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from ..checks import format_number
from ..errors import DomainError

__all__ = ["TrainingDomain", "TRAINED_CELL_SIZE_MPC_H"]

log = logging.getLogger(__name__)

#: The published models' resolution: 512 particles per 1000 Mpc/h.
TRAINED_CELL_SIZE_MPC_H = 1000.0 / 512


@dataclass(frozen=True)
class TrainingDomain:
    """Where a model was trained; outside it the emulator refuses unless told to extrapolate.

    Parameters
    ----------
    omega_m : (float, float)
        Closed range of Omega_m.
    z : (float, float)
        Closed range of redshift (``(0, 0)`` for the z = 0 map2map_emu models).
    cell_size_mpc_h : float
        Lagrangian grid spacing [Mpc/h].
    """

    omega_m: tuple = (0.1, 0.5)
    z: tuple = (0.0, 3.0)
    cell_size_mpc_h: float = TRAINED_CELL_SIZE_MPC_H

    @classmethod
    def from_dict(cls, d: dict) -> "TrainingDomain":
        return cls(tuple(d["omega_m"]), tuple(d["z"]), float(d["cell_size_mpc_h"]))

    def to_dict(self) -> dict:
        return {"omega_m": list(self.omega_m), "z": list(self.z), "cell_size_mpc_h": self.cell_size_mpc_h}

    def check(self, omega_m: float, zs, box_size: float | None, n: int | None, allow_extrapolation: bool) -> None:
        """Raise :class:`DomainError` for values outside the domain (log a warning if allowed).

        Parameters
        ----------
        omega_m : float
        zs : sequence of float
        box_size : float or None
            Box side [Mpc/h]; with ``n`` gives the cell size to compare.
        n : int or None
            Particles per side.
        allow_extrapolation : bool
        """
        problems = []
        lo, hi = self.omega_m
        if not (lo <= omega_m <= hi):
            problems.append(f"omega_m = {omega_m!r} is outside the training range [{format_number(lo)}, {format_number(hi)}]")
        zlo, zhi = self.z
        for z in zs:
            if not (zlo <= z <= zhi):
                problems.append(f"z = {z!r} is outside the training range [{format_number(zlo)}, {format_number(zhi)}]")
        if box_size is not None and n is not None:
            cell = box_size / n
            if not math.isclose(cell, self.cell_size_mpc_h, rel_tol=1e-6):
                problems.append(
                    f"cell size box_size/n = {box_size!r}/{n} = {cell:.6g} Mpc/h differs from the trained "
                    f"{self.cell_size_mpc_h:.6g} Mpc/h (use box_size = {self.cell_size_mpc_h * n:.6g} for n = {n})"
                )
        if problems:
            msg = "; ".join(problems)
            if not allow_extrapolation:
                raise DomainError(msg + " (pass allow_extrapolation=True to run anyway)")
            log.warning("extrapolating outside the training domain: %s", msg)
