"""Cosmology: parameter sets, background growth, comoving distances and the linear power spectrum."""

from .distance import DistanceTable, comoving_distance
from .growth import growth_factor, growth_rate, hubble
from .linear_power import EisensteinHuPower, LinearPower, TabulatedPower, sigma_r, tophat_window
from .params import PLANCK18, PRESETS, QUIJOTE_FIDUCIAL, Cosmology

__all__ = [
    "Cosmology",
    "PLANCK18",
    "PRESETS",
    "QUIJOTE_FIDUCIAL",
    "growth_factor",
    "growth_rate",
    "hubble",
    "comoving_distance",
    "DistanceTable",
    "LinearPower",
    "TabulatedPower",
    "EisensteinHuPower",
    "sigma_r",
    "tophat_window",
]
