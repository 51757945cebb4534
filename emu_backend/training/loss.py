"""The training loss of the z-dependent emulator (map2map_zdep, SPEC 4.5).

For one crop, with every field in network units (displacement / 6 Mpc/h, velocity / ``velocity_norm(z,
Omega_m)`` = ``6 D H f / (1 + z)`` km/s)::

    loss = 3 log(MSE_dis) + 3 log(MSE_vel) + log(MSE_den) + log(MSE_mom)

* ``dis``, ``vel``: MSE of the output and target displacement / velocity fields (mean over the 3
  components and the crop);
* ``den``: MSE of the CIC particle-count meshes of the output and target displacements painted from
  the Lagrangian crop with :func:`~emu_backend.mesh.lagrangian_to_eulerian` (one mean displacement
  common to the pair removed, deposits outside the crop dropped — the reference ``lag2eul``);
* ``mom``: the same painting with each field's velocities as particle values (momentum meshes).

The painting scale is ``6 Mpc/h / cell size`` cells per normalised unit (3.072 at the trained
1000/512 Mpc/h). Each MSE enters as ``log(MSE + LOG_EPS)``: ``LOG_EPS = 1e-20`` only guards a perfect
prediction against ``-inf`` (typical MSEs are > 1e-8). Losses are per sample; a batch's loss is
their mean, so that averaging gradients over DDP ranks equals the global-batch gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..checks import check_positive
from ..errors import InputError
from ..nn.lag2eul import lagrangian_to_eulerian
from ..nn.normalisation import DIS_STD_MPC_H

__all__ = ["LOSS_WEIGHTS", "LOG_EPS", "COMPONENTS", "painting_scale", "paint_pair", "zdep_loss"]

#: Weights of the log-MSE terms.
LOSS_WEIGHTS = {"dis": 3.0, "vel": 3.0, "den": 1.0, "mom": 1.0}
COMPONENTS = tuple(LOSS_WEIGHTS)
#: Added to every MSE before the log (guards an exact prediction against -inf).
LOG_EPS = 1e-20


def painting_scale(cell_size_mpc_h: float) -> float:
    """Mesh cells per normalised displacement unit: ``6 Mpc/h / cell size``.

    >>> painting_scale(1000 / 512)
    3.072
    """
    return DIS_STD_MPC_H / check_positive(cell_size_mpc_h, "cell size", unit="Mpc/h")


def paint_pair(
    dis: Sequence[torch.Tensor], val: Sequence[torch.Tensor] | None = None, *, scale: float
) -> list[torch.Tensor]:
    """The loss's painting: non-periodic CIC of displacement fields with one common mean removed.

    Parameters
    ----------
    dis : sequence of Tensor, each (B, 3, n, n, n)
        Normalised displacements (usually ``[output, target]``).
    val : sequence of Tensor, each (B, C, n, n, n), optional
        Per-particle values for each field (velocities give momentum meshes); None paints counts.
    scale : float
        Cells per normalised unit (:func:`painting_scale`).

    Returns
    -------
    list of Tensor, each (B, C, n, n, n) (C = 1 for counts)
    """
    return lagrangian_to_eulerian(list(dis), None if val is None else list(val), scale=scale,
                                  rm_dis_mean=True, periodic=False)


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).flatten(1).mean(dim=1)


def zdep_loss(
    out_dis: torch.Tensor,
    out_vel: torch.Tensor,
    tgt_dis: torch.Tensor,
    tgt_vel: torch.Tensor,
    *,
    scale: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample zdep loss and its four MSE components.

    Parameters
    ----------
    out_dis, out_vel, tgt_dis, tgt_vel : Tensor, each (B, 3, n, n, n)
        Output and target displacement and velocity in network units.
    scale : float
        Painting scale, :func:`painting_scale` of the data's cell size.

    Returns
    -------
    loss : Tensor, shape (B,)
        ``3 log dis + 3 log vel + log den + log mom`` per sample (MSEs + :data:`LOG_EPS`).
    components : dict of Tensor, each (B,)
        The MSEs ``dis``, ``vel``, ``den``, ``mom`` (without the epsilon).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> t = [torch.randn(1, 3, 8, 8, 8, generator=g) * 0.1 for _ in range(4)]
    >>> loss, parts = zdep_loss(*t, scale=3.072)
    >>> loss.shape, sorted(parts)
    (torch.Size([1]), ['den', 'dis', 'mom', 'vel'])
    """
    shapes = {tuple(t.shape) for t in (out_dis, out_vel, tgt_dis, tgt_vel)}
    if len(shapes) != 1:
        raise InputError(f"output and target fields must share one shape (B, 3, n0, n1, n2), got {sorted(shapes)}")
    (shape,) = shapes
    if len(shape) != 5 or shape[1] != 3:
        raise InputError(f"fields must have shape (B, 3, n0, n1, n2), got {shape}")
    den_out, den_tgt = paint_pair([out_dis, tgt_dis], scale=scale)
    mom_out, mom_tgt = paint_pair([out_dis, tgt_dis], [out_vel, tgt_vel], scale=scale)
    parts = {
        "dis": _mse(out_dis, tgt_dis),
        "vel": _mse(out_vel, tgt_vel),
        "den": _mse(den_out, den_tgt),
        "mom": _mse(mom_out, mom_tgt),
    }
    loss = sum(w * torch.log(parts[k] + LOG_EPS) for k, w in LOSS_WEIGHTS.items())
    return loss, parts
