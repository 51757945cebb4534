"""Validation statistics and reports (power spectra, bispectra, halos)."""

from .power import CrossCorrelation, PowerSpectrum, cross_correlation, default_k_edges, power_spectrum

__all__ = ["PowerSpectrum", "CrossCorrelation", "power_spectrum", "cross_correlation", "default_k_edges"]
