"""The published models' Lagrangian-to-Eulerian painting (SPEC section 4.4, the reference ``lag2eul``):
displacements in network units painted from their Lagrangian grid onto a mesh of the same size, as
the training losses and the golden vectors use it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError
from ..mesh.paint import paint_cells
from .normalisation import displacement_norm

__all__ = ["lag2eul_scale", "lagrangian_to_eulerian"]


def lag2eul_scale(z: float = 0.0, omega_m: float = 0.31, mesh_size: int = 512, box_size: float = 1000.0) -> float:
    """Mesh cells per normalised displacement unit: ``6 D(z, Om) * mesh_size / box_size``.

    The defaults are those of the reference training losses and give 3.072.
    """
    return float(displacement_norm(z, omega_m)) * mesh_size / box_size


def lagrangian_to_eulerian(
    dis_list: torch.Tensor | Sequence[torch.Tensor],
    val: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    scale: float | None = None,
    rm_dis_mean: bool = True,
    periodic: bool = False,
) -> list[torch.Tensor]:
    """CIC-paint particles displaced from a Lagrangian grid onto a mesh of the same size.

    Reproduces the reference ``lag2eul`` (SPEC section 4.4): positions in cells are
    ``(d - mean) * scale + (i, j, k)`` with ONE mean displacement common to all fields (the spatial
    mean per batch entry and component, averaged over the fields), painted with CIC.

    Parameters
    ----------
    dis_list : torch.Tensor or sequence of torch.Tensor, each shape (B, 3, n0, n1, n2)
        Normalised displacements (Mpc/h divided by 6), channel ``c`` along axis ``c``.
    val : torch.Tensor or sequence of torch.Tensor, each shape (B, C, n0, n1, n2), optional
        Per-particle values (e.g. velocities give a C = 3 momentum mesh); one tensor is used for
        every field. ``None`` paints 1 per particle (particle counts, C = 1; mean 1 if periodic).
    scale : float, optional
        Cells per normalised unit; default :func:`lag2eul_scale` () = 3.072.
    rm_dis_mean : bool
        Subtract the common mean displacement (default, as in training).
    periodic : bool
        Wrap deposits (True) or drop those outside the crop (False, default, as in training).

    Returns
    -------
    list of torch.Tensor, each shape (B, C, n0, n1, n2)
        One mesh per displacement field.

    Examples
    --------
    >>> import torch
    >>> dis = torch.zeros(1, 3, 4, 4, 4, dtype=torch.float64)
    >>> (den,) = lagrangian_to_eulerian(dis, periodic=True)
    >>> bool((den == 1).all())
    True
    """
    if isinstance(dis_list, torch.Tensor):
        dis_list = [dis_list]
    dis_list = list(dis_list)
    if not dis_list:
        raise InputError("dis_list must contain at least one displacement tensor")
    shape = dis_list[0].shape
    for d in dis_list:
        if not isinstance(d, torch.Tensor) or d.dim() != 5 or d.shape[1] != 3 or d.shape != shape:
            raise InputError(
                f"every displacement must be a tensor of one common shape (B, 3, n0, n1, n2), got "
                f"{[tuple(getattr(x, 'shape', ())) for x in dis_list]}"
            )
        if not d.is_floating_point():
            raise InputError(f"displacements must be floating point, got dtype {d.dtype}")
    if val is None or isinstance(val, torch.Tensor):
        val_list = [val] * len(dis_list)
    else:
        val_list = list(val)
    if len(val_list) != len(dis_list):
        raise InputError(f"got {len(dis_list)} displacement fields but {len(val_list)} value fields")
    scale = lag2eul_scale() if scale is None else float(scale)
    B, _, *mesh_shape = shape
    dtype, device = dis_list[0].dtype, dis_list[0].device

    if rm_dis_mean:
        dis_mean = sum(d.mean(dim=(2, 3, 4), keepdim=True) for d in dis_list) / len(dis_list)
    grid = torch.stack(
        torch.meshgrid(*(torch.arange(n, dtype=dtype, device=device) for n in mesh_shape), indexing="ij")
    )  # (3, n0, n1, n2) Lagrangian mesh index

    out = []
    for d, v in zip(dis_list, val_list):
        if rm_dis_mean:
            d = d - dis_mean
        pos = (d * scale + grid).reshape(B, 3, -1)
        if v is not None:
            if not isinstance(v, torch.Tensor) or v.dim() != 5 or (v.shape[0], *v.shape[2:]) != (B, *mesh_shape):
                raise InputError(
                    f"values must have shape (B={B}, C, {', '.join(map(str, mesh_shape))}), "
                    f"got {tuple(getattr(v, 'shape', ()))}"
                )
            v = v.reshape(B, v.shape[1], -1)
        out.append(paint_cells(pos, mesh_shape, v, window="cic", periodic=periodic))
    return out
