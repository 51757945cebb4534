"""The emulator's displacement and velocity at several redshifts, differentiably, in physical units.

The one loop over output redshifts shared by :class:`~emu_backend.differentiable.ForwardModel` and the
JAX adapter (:mod:`emu_backend.adapters.jax`): for each z the growth factor ``D(z, Omega_m)`` (exact
derivative in Omega_m), the tiled network (:func:`~emu_backend.differentiable.tiles.emulate_box`), its
output times :data:`~emu_backend.nn.normalisation.DIS_STD_MPC_H` [Mpc/h] and its D-derivative times
``velocity_norm(z, Omega_m)`` [km/s].
"""

from __future__ import annotations

import torch

from ..cosmology.growth import growth_factor
from ..nn.normalisation import DIS_STD_MPC_H, velocity_norm
from .tiles import emulate_box

__all__ = ["default_tile_size", "emulated_fields"]

#: Largest default output tile side: one 128^3 input tile per 32^3 output cells.
DEFAULT_TILE_MAX = 32


def default_tile_size(grid: int) -> int:
    """Default output tile side for a ``grid^3`` box: ``grid`` rounded up to a multiple of 8, at most 32.

    Examples
    --------
    >>> default_tile_size(20), default_tile_size(128)
    (24, 32)
    """
    return min(DEFAULT_TILE_MAX, -(-int(grid) // 8) * 8)


def emulated_fields(net, linear_displacement: torch.Tensor, omega_m: torch.Tensor, zs, *, tile_size: int,
                    velocity: bool, recompute: bool | str = True,
                    periodic: bool = False) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Emulated displacement [Mpc/h] and velocity [km/s] at each redshift, with gradients.

    Parameters
    ----------
    net : StyledVNet
        A map2map_zdep network; its dtype and device are the computation's.
    linear_displacement : Tensor, shape (3, N, N, N)
        z = 0 linear (ZA) displacement [Mpc/h]; gradients flow to it.
    omega_m : Tensor
        0-d Omega_m (float64 preferred: D, f and H are computed in its dtype); gradients flow to it.
    zs : sequence of float
        Output redshifts.
    tile_size : int
        Output tile side, a positive multiple of 8.
    velocity : bool
        Also return the velocities (the network's forward-mode derivative in D).
    recompute : bool, "all" or "checkpoint"
        As :func:`~emu_backend.differentiable.tiles.emulate_box` (True: only the last redshift's last tile
        keeps its activations).
    periodic : bool
        The whole box at once in the network's periodic mode (see
        :func:`~emu_backend.differentiable.tiles.emulate_box`); ``N`` a multiple of 8.

    Returns
    -------
    list of (Tensor, Tensor or None)
        Per redshift: displacement (3, N, N, N) [Mpc/h] and velocity (3, N, N, N) [km/s, peculiar] (None
        without ``velocity``), in the network's dtype.
    """
    dtype = linear_displacement.dtype
    om = omega_m.to(dtype)
    fields = []
    for i, z in enumerate(zs):
        dz = growth_factor(z, omega_m).to(dtype)
        # the last redshift's last tile keeps its activations (no recomputation): one tile's, as the
        # backward's peak anyway
        last = i == len(zs) - 1
        out, dout = emulate_box(net, linear_displacement, om, dz, tile_size=tile_size, velocity=velocity,
                                recompute="all" if recompute is True and not last else recompute, periodic=periodic)
        vel = None if dout is None else dout * velocity_norm(z, omega_m).to(dtype)
        fields.append((out * DIS_STD_MPC_H, vel))
    return fields
