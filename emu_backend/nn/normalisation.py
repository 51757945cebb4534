"""The published networks' units: displacements in 6 Mpc/h, velocities as d(displacement)/dD.

One home for the normalisation of map2map's data pipeline (SPEC section 3): the emulator models
(:mod:`emu_backend.inference.models`), the checkpoint formats, the training data and losses and the
Lagrangian-to-Eulerian painting all take it from here.
"""

from __future__ import annotations

from ..cosmology.growth import growth_factor, growth_rate, hubble, scale_factor

__all__ = ["DIS_STD_MPC_H", "V2V_REF_OMEGA_M", "NORMALISATION", "displacement_norm", "velocity_norm"]

#: Normalisation of displacements used by the published networks [Mpc/h per network unit].
DIS_STD_MPC_H = 6.0

#: Omega_m of the fixed velocity normalisation of map2map_emu's v2v model.
V2V_REF_OMEGA_M = 0.31

#: The normalisation as recorded in model files.
NORMALISATION = {"dis_std_mpc_h": DIS_STD_MPC_H, "vel_ref_omega_m": V2V_REF_OMEGA_M}


def displacement_norm(z, omega_m):
    """Displacement normalisation ``6 D(z)`` [Mpc/h] of the published data pipeline."""
    return DIS_STD_MPC_H * growth_factor(z, omega_m)


def velocity_norm(z, omega_m):
    """Velocity normalisation ``6 D H f / (1 + z)`` [km/s].

    Converts a derivative of the normalised displacement with respect to ``D`` into a peculiar
    velocity: ``v = a dx/dt = dx/dD * D H f a``.
    """
    a = scale_factor(z)
    return DIS_STD_MPC_H * growth_factor(z, omega_m) * hubble(z, omega_m) * growth_rate(
        z, omega_m
    ) * a
