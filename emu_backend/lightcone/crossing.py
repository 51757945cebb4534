"""Where and when particles cross the observer's past lightcone between two output times.

The time variable is the comoving distance of the lightcone ``chi`` [Mpc/h] (``c`` times the conformal
lookback time). In it the equation of motion of a comoving position is exact and unit-free:

    dx/dchi = -v / c,

with ``v`` the peculiar velocity [km/s] (``v = a dx/dt = dx/dtau`` and ``chi = c (tau_0 - tau)``). Between the
outputs at ``chi0 < chi1`` (``chi0`` the later time) a trajectory is the cubic Hermite polynomial matching
the positions and these derivatives at both ends (``interpolation="hermite"``), or the straight line
between the positions (``"linear"``). A particle crosses the lightcone where ``g(chi) = |x(chi)| - chi``
vanishes; ``dg/dchi = -1 + O(v/c)`` so ``g`` is strictly decreasing and the root is unique: a particle
crosses in ``[chi0, chi1)`` exactly when ``g(chi0) >= 0 > g(chi1)``, so consecutive intervals sharing an
output never count a particle twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..checks import check_choice
from ..cosmology.distance import C_KM_S
from ..errors import ComputationError

__all__ = ["INTERPOLATIONS", "Crossing", "crosses", "trajectory", "solve_crossing"]

#: Trajectory interpolations between two outputs.
INTERPOLATIONS = ("hermite", "linear")


def crosses(x0: np.ndarray, x1: np.ndarray, chi0: float, chi1: float) -> np.ndarray:
    """Mask of the particles crossing the lightcone in ``[chi0, chi1)``: ``|x0| >= chi0`` and ``|x1| < chi1``.

    Parameters
    ----------
    x0, x1 : ndarray, shape (N, 3)
        Positions relative to the observer [Mpc/h] at the outputs ``chi0 < chi1`` [Mpc/h].
    """
    return (np.einsum("ij,ij->i", x0, x0) >= chi0 * chi0) & (np.einsum("ij,ij->i", x1, x1) < chi1 * chi1)


def trajectory(s, x0, v0, x1, v1, h: float, interpolation: str = "hermite"):
    """Position [Mpc/h] and peculiar velocity [km/s] at fractions ``s`` of the interval (``chi = chi0 + s h``).

    Parameters
    ----------
    s : ndarray, shape (N,)
        Fractions in [0, 1].
    x0, v0, x1, v1 : ndarray, shape (N, 3)
        Positions [Mpc/h] and velocities [km/s] at ``chi0`` and ``chi1 = chi0 + h``.
    h : float
        Interval ``chi1 - chi0`` [Mpc/h], > 0.
    interpolation : {"hermite", "linear"}

    Returns
    -------
    x, v : ndarray, shape (N, 3)
    """
    s = np.asarray(s, dtype=np.float64)[:, None]
    if interpolation == "linear":
        return x0 + s * (x1 - x0), v0 + s * (v1 - v0)
    m0, m1 = -v0 * (h / C_KM_S), -v1 * (h / C_KM_S)  # dx/ds at the ends
    s2, s3 = s * s, s * s * s
    x = (2 * s3 - 3 * s2 + 1) * x0 + (s3 - 2 * s2 + s) * m0 + (3 * s2 - 2 * s3) * x1 + (s3 - s2) * m1
    dxds = (6 * s2 - 6 * s) * (x0 - x1) + (3 * s2 - 4 * s + 1) * m0 + (3 * s2 - 2 * s) * m1
    return x, -dxds * (C_KM_S / h)


@dataclass(frozen=True)
class Crossing:
    """Lightcone crossings of a set of particles: ``chi`` (N,) [Mpc/h], ``position`` (N, 3) [Mpc/h] relative to
    the observer, ``velocity`` (N, 3) [km/s] peculiar, all at the crossing."""

    chi: np.ndarray
    position: np.ndarray
    velocity: np.ndarray


def solve_crossing(x0, v0, x1, v1, chi0: float, chi1: float, interpolation: str = "hermite", *,
                   iterations: int = 8, tol_mpc_h: float = 1e-7) -> Crossing:
    """Solve ``|x(chi)| = chi`` in ``[chi0, chi1]`` for particles that cross there (see :func:`crosses`).

    Newton's method on ``g(s) = |x(s)| - chi0 - s h`` from the straight-line estimate; ``g' = -h + O(v/c) h``
    so it converges in two or three steps.

    Parameters
    ----------
    x0, v0, x1, v1 : ndarray, shape (N, 3)
        Positions relative to the observer [Mpc/h] and peculiar velocities [km/s] at ``chi0`` and ``chi1``.
    chi0, chi1 : float
        The outputs' lightcone distances [Mpc/h], ``chi0 < chi1``.
    interpolation : {"hermite", "linear"}
    iterations : int
        Newton steps at most.
    tol_mpc_h : float
        Residual ``|g|`` [Mpc/h] accepted.

    Returns
    -------
    Crossing

    Raises
    ------
    ComputationError
        A root is not found to ``tol_mpc_h`` (a particle faster than light or not crossing in the interval).
    """
    check_choice(interpolation, "interpolation", INTERPOLATIONS)
    x0, v0, x1, v1 = (np.asarray(a, dtype=np.float64) for a in (x0, v0, x1, v1))
    h = float(chi1 - chi0)
    g0 = np.linalg.norm(x0, axis=1) - chi0
    g1 = np.linalg.norm(x1, axis=1) - chi1
    s = np.clip(g0 / np.where(g0 > g1, g0 - g1, 1.0), 0.0, 1.0)
    for _ in range(iterations):
        x, v = trajectory(s, x0, v0, x1, v1, h, interpolation)
        r = np.linalg.norm(x, axis=1)
        g = r - chi0 - s * h
        if not g.size or np.abs(g).max() <= tol_mpc_h:
            break
        dxds = -v * (h / C_KM_S)
        dg = np.einsum("ij,ij->i", x, dxds) / np.where(r > 0, r, 1.0) - h
        s = np.clip(s - g / dg, 0.0, 1.0)
    x, v = trajectory(s, x0, v0, x1, v1, h, interpolation)
    g = np.linalg.norm(x, axis=1) - chi0 - s * h
    if g.size and np.abs(g).max() > tol_mpc_h:
        raise ComputationError(f"lightcone crossing not solved: residual {np.abs(g).max():.3g} Mpc/h after "
                               f"{iterations} Newton steps in [{chi0:.6g}, {chi1:.6g}] Mpc/h")
    return Crossing(chi=chi0 + s * h, position=x, velocity=v)
