"""Differentiable emulation: gradients of emulated fields with respect to the initial white noise and
the cosmological parameters (:class:`ForwardModel`), for field-level inference.

See docs/differentiable.md.
"""

from .fields import default_tile_size, emulated_fields
from .forward import DENSITY_WINDOW, OUTPUTS, PARAMETERS, ForwardModel
from .linear import linear_fields
from .tiles import emulate_box, periodic_gather

__all__ = ["DENSITY_WINDOW", "ForwardModel", "OUTPUTS", "PARAMETERS", "default_tile_size", "emulate_box",
           "emulated_fields", "linear_fields", "periodic_gather"]
