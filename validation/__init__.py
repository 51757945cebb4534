"""Validation statistics and reports (power spectra, bispectra, halos)."""
