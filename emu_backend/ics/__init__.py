"""Initial conditions: seeded white noise, the linear field from P(k), and LPT particles.

* :mod:`~emu_backend.ics.noise`: reproducible (fixed / paired) Gaussian white noise.
* :mod:`~emu_backend.ics.linear`: linear density and Zel'dovich displacement at z = 0 from noise and
  a linear P(k), in the published generator's convention or a clean Fourier convention.
* :mod:`~emu_backend.ics.conditions`: :class:`InitialConditions`, the linear field of a run with its
  provenance, the input of every simulator backend.
* :mod:`~emu_backend.ics.lpt`: 2LPT displacement; ZA / 2LPT positions and velocities at redshift z.
"""

from .conditions import InitialConditions, linear_field
from .linear import (
    default_box_size,
    displacement_from_density,
    divergence,
    linear_density,
    za_displacement,
)
from .lpt import (
    lagrangian_grid,
    lpt_particles,
    omega_m_of_z,
    second_order_displacement,
    second_order_growth_factor,
    second_order_growth_rate,
    second_order_source,
)
from .noise import fix_amplitude, white_noise, zero_central_planes

__all__ = [
    "white_noise",
    "fix_amplitude",
    "zero_central_planes",
    "InitialConditions",
    "linear_field",
    "linear_density",
    "za_displacement",
    "displacement_from_density",
    "divergence",
    "default_box_size",
    "second_order_source",
    "second_order_displacement",
    "omega_m_of_z",
    "second_order_growth_factor",
    "second_order_growth_rate",
    "lagrangian_grid",
    "lpt_particles",
]
