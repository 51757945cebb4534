"""Differentiable emulation: gradients of emulated fields with respect to the initial white noise and
the cosmological parameters (:class:`ForwardModel`), for field-level inference.

See docs/differentiable.md.
"""

from .forward import OUTPUTS, PARAMETERS, ForwardModel
from .linear import linear_fields
from .tiles import emulate_box, periodic_gather

__all__ = ["ForwardModel", "OUTPUTS", "PARAMETERS", "emulate_box", "linear_fields", "periodic_gather"]
