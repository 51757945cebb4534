"""Field-level inference: the initial white noise and (Omega_m, sigma8) from an observed nonlinear density.

:class:`FieldLikelihood` (the posterior), :func:`find_map` (L-BFGS), :func:`sample_posterior` (numpyro's
NUTS through the JAX adapter, resumable). See docs/field_level.md.
"""

from .coordinates import NoiseCoordinates
from .likelihood import COSMOLOGY_PARAMETERS, FieldLikelihood, Priors
from .map import MapResult, find_map
from .sampling import Posterior, SamplerConfig, numpyro_model, sample_posterior

__all__ = ["COSMOLOGY_PARAMETERS", "FieldLikelihood", "MapResult", "NoiseCoordinates", "Posterior", "Priors",
           "SamplerConfig", "find_map", "numpyro_model", "sample_posterior"]
