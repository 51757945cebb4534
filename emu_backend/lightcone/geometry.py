"""Lightcone geometry: the opening on the sky, sky coordinates, and the replicas of the periodic box.

Positions are comoving [Mpc/h] relative to the observer. The sky frame is the box frame: RA is the angle
from the +x axis towards +y, Dec the angle from the x-y plane towards +z, both in degrees. Replica
``r = (i, j, k)`` (integers) holds the particles at ``x + r L`` of the periodic box of side ``L``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ..checks import check_real
from ..errors import InputError

__all__ = ["Cone", "radec", "unit_vector", "replicas", "FULL_SKY"]


def unit_vector(ra_deg, dec_deg) -> np.ndarray:
    """Unit vectors, shape ``(..., 3)``, of sky positions (RA, Dec) [deg]."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def radec(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RA in ``[0, 360)`` and Dec in ``[-90, 90]`` [deg] of positions ``x``, shape ``(N, 3)``, from the observer."""
    x = np.asarray(x, dtype=np.float64)
    ra = np.degrees(np.arctan2(x[:, 1], x[:, 0])) % 360.0
    dec = np.degrees(np.arctan2(x[:, 2], np.hypot(x[:, 0], x[:, 1])))
    return ra, dec


@dataclass(frozen=True)
class Cone:
    """A circular opening on the sky: the points within ``radius_deg`` of the centre (RA, Dec) [deg].

    ``radius_deg = 180`` is the full sky (:data:`FULL_SKY`).

    Examples
    --------
    >>> round(Cone(0.0, 90.0, 90.0).sky_fraction, 12)
    0.5
    """

    ra_deg: float = 0.0
    dec_deg: float = 0.0
    radius_deg: float = 180.0

    def __post_init__(self):
        object.__setattr__(self, "ra_deg", check_real(self.ra_deg, "cone ra_deg", unit="deg"))
        object.__setattr__(self, "dec_deg", check_real(self.dec_deg, "cone dec_deg", -90.0, 90.0, unit="deg"))
        object.__setattr__(self, "radius_deg", check_real(self.radius_deg, "cone radius_deg", 0.0, 180.0,
                                                          lo_open=True, unit="deg"))

    @property
    def full_sky(self) -> bool:
        return self.radius_deg >= 180.0

    @property
    def axis(self) -> np.ndarray:
        """Unit vector of the centre, shape (3,)."""
        return unit_vector(self.ra_deg, self.dec_deg)

    @property
    def sky_fraction(self) -> float:
        """Solid angle over 4 pi: ``(1 - cos radius) / 2``."""
        return 0.5 * (1.0 - math.cos(math.radians(self.radius_deg)))

    def contains(self, x: np.ndarray) -> np.ndarray:
        """Whether directions ``x``, shape ``(N, 3)`` (any length), lie in the cone (boundary included)."""
        if self.full_sky:
            return np.ones(len(x), dtype=bool)
        x = np.asarray(x, dtype=np.float64)
        norm = np.linalg.norm(x, axis=1)
        return x @ self.axis >= math.cos(math.radians(self.radius_deg)) * norm

    def to_dict(self) -> dict:
        return {"ra_deg": self.ra_deg, "dec_deg": self.dec_deg, "radius_deg": self.radius_deg}


FULL_SKY = Cone()


def replicas(box_size: float, observer, chi_lo: float, chi_hi: float, pad: float, cone: Cone = FULL_SKY) -> np.ndarray:
    """Integer replica vectors ``r`` whose copy of the box can hold a lightcone point in the shell.

    A particle of replica ``r`` lies in ``[r L - pad, (r + 1) L + pad)^3`` (``pad`` bounds how far a
    displacement carries it out of its box); the replica is kept where that padded cube, relative to the
    observer, meets the spherical shell ``chi_lo <= |x| <= chi_hi`` and (conservatively, through its bounding
    sphere) the cone.

    Parameters
    ----------
    box_size : float
        Box side ``L`` [Mpc/h].
    observer : array_like, shape (3,)
        Observer position [Mpc/h] in the box frame.
    chi_lo, chi_hi : float
        Shell radii [Mpc/h], ``0 <= chi_lo <= chi_hi``.
    pad : float
        Margin [Mpc/h], >= 0.
    cone : Cone

    Returns
    -------
    ndarray, shape (R, 3), int64
        Sorted lexicographically.
    """
    if not (0.0 <= chi_lo <= chi_hi) or pad < 0:
        raise InputError(f"need 0 <= chi_lo <= chi_hi and pad >= 0, got {chi_lo}, {chi_hi}, {pad}")
    obs = np.asarray(observer, dtype=np.float64)
    big = chi_hi + pad
    lo = np.floor((obs - big) / box_size).astype(int) - 1
    hi = np.floor((obs + big) / box_size).astype(int) + 1
    rs = np.array(list(itertools.product(*(range(a, b + 1) for a, b in zip(lo, hi)))), dtype=np.int64)
    low = rs * box_size - pad - obs  # padded cube corners relative to the observer
    high = low + box_size + 2 * pad
    nearest = np.clip(0.0, low, high)
    farthest = np.maximum(np.abs(low), np.abs(high))
    keep = (np.linalg.norm(nearest, axis=1) <= chi_hi) & (np.linalg.norm(farthest, axis=1) >= chi_lo)
    if not cone.full_sky:
        centre = 0.5 * (low + high)
        dist = np.linalg.norm(centre, axis=1)
        half_diag = 0.5 * math.sqrt(3.0) * (box_size + 2 * pad)
        inside = dist <= half_diag
        cosang = np.clip(centre @ cone.axis / np.where(inside, 1.0, dist), -1.0, 1.0)
        spread = np.arcsin(np.clip(half_diag / np.where(inside, half_diag, dist), 0.0, 1.0))
        keep &= inside | (np.arccos(cosang) - spread <= math.radians(cone.radius_deg))
    return rs[keep]
