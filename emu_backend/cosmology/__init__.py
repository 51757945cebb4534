"""Cosmology: background growth functions (and, later, parameter sets and linear power)."""

from .params import PLANCK18, PRESETS, QUIJOTE_FIDUCIAL, Cosmology
from .growth import (
    DIS_STD_MPC_H,
    displacement_norm,
    growth_factor,
    growth_rate,
    hubble,
    velocity_norm,
)
from .linear_power import EisensteinHuPower, LinearPower, TabulatedPower, sigma_r, tophat_window

__all__ = [
    "Cosmology",
    "PLANCK18",
    "PRESETS",
    "QUIJOTE_FIDUCIAL",
    "DIS_STD_MPC_H",
    "displacement_norm",
    "growth_factor",
    "growth_rate",
    "hubble",
    "velocity_norm",
    "LinearPower",
    "TabulatedPower",
    "EisensteinHuPower",
    "sigma_r",
    "tophat_window",
]
