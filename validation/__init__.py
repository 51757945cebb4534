"""Validation statistics and reports (power spectra, bispectra, halos)."""

from .power import CrossCorrelation, PowerSpectrum, cross_correlation, default_k_edges, power_spectrum

__all__ = ["PowerSpectrum", "CrossCorrelation", "power_spectrum", "cross_correlation", "default_k_edges"]

from .bispectrum import (
    BispectrumResult,
    bispectrum,
    equilateral_triangles,
    isosceles_triangles,
    squeezed_triangles,
    triangle_bins,
)

__all__ += [
    "BispectrumResult",
    "bispectrum",
    "triangle_bins",
    "equilateral_triangles",
    "squeezed_triangles",
    "isosceles_triangles",
]
