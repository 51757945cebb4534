"""Validation statistics and reports (power spectra, bispectra, redshift-space multipoles, halos).

Heavy optional libraries are imported only inside the functions that need them: halotools by the halo
finder (:func:`find_halos`), nothing else at import time.
"""

from .power import (
    CrossCorrelation,
    PowerSpectrum,
    cross_correlation,
    default_k_edges,
    power_spectrum,
    vector_cross_correlation,
    vector_power,
)

__all__ = [
    "PowerSpectrum",
    "CrossCorrelation",
    "power_spectrum",
    "cross_correlation",
    "vector_power",
    "vector_cross_correlation",
    "default_k_edges",
]

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

from .mesh import density_mesh, momentum_mesh, transfer_function

__all__ += ["density_mesh", "momentum_mesh", "transfer_function"]

from .rsd import Multipoles, field_multipoles, multipoles, redshift_space_positions

__all__ += ["Multipoles", "multipoles", "field_multipoles", "redshift_space_positions"]

from .halo_stats import HaloBias, MassFunction, halo_bias, mass_function
from .halos import find_halos, find_halos_in_snapshot

__all__ += [
    "MassFunction",
    "HaloBias",
    "find_halos",
    "find_halos_in_snapshot",
    "mass_function",
    "halo_bias",
]
