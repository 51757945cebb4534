"""Mass assignment of particles onto a regular 3-D mesh (NGP, CIC, TSC) in torch.

Conventions
-----------
* Mesh point ``(i, j, k)`` sits at position ``(i, j, k) * H`` with cell size ``H = L / n`` per axis,
  so a particle exactly on a mesh point deposits all its weight there (the convention of the
  reference ``lag2eul``, where Lagrangian particle ``(i, j, k)`` starts on mesh point ``(i, j, k)``).
* Periodic painting wraps indices modulo the mesh size; non-periodic painting drops every deposit
  that falls outside ``[0, n)`` on some axis.
* Everything is vectorised with ``index_add`` (no Python loop over particles or batch entries),
  runs on the device and in the dtype of the positions, and is differentiable with respect to the
  positions (CIC, TSC; NGP has zero gradient) and the weights.

The Fourier-space window of the assignment schemes is :func:`window_fourier` /
:func:`deconvolve_window`. The published models' Lagrangian-to-Eulerian painting (SPEC section 4.4),
which needs their displacement units, is :func:`emu_backend.nn.lag2eul.lagrangian_to_eulerian`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from ..checks import check_choice
from ..errors import InputError

__all__ = [
    "WINDOW_ORDER",
    "check_window",
    "paint",
    "paint_cells",
    "window_fourier",
    "deconvolve_window",
]

logger = logging.getLogger(__name__)

#: Order ``p`` of each assignment window: support of ``p`` cells per axis, ``W(k) = sinc^p``.
WINDOW_ORDER = {"ngp": 1, "cic": 2, "tsc": 3}


# -- argument checks ------------------------------------------------------------------------
def check_window(window) -> str:
    """The assignment scheme ``window`` in lower case if it is one of :data:`WINDOW_ORDER`, else :class:`InputError`.

    Examples
    --------
    >>> check_window("CIC")
    'cic'
    """
    key = window.lower() if isinstance(window, str) else None
    return key if key in WINDOW_ORDER else check_choice(window, "window", sorted(WINDOW_ORDER))


def _triple(value, name: str, integer: bool) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,) * 3
    try:
        items = tuple(value)
    except TypeError:
        raise InputError(f"{name} must be a number or a sequence of 3 numbers, got {value!r}") from None
    if len(items) != 3:
        raise InputError(f"{name} must have 3 entries (one per axis), got {value!r}")
    out = []
    for item in items:
        try:
            if integer:
                if isinstance(item, bool) or int(item) != item or int(item) < 1:
                    raise InputError(f"{name} entries must be integers >= 1, got {value!r}")
                out.append(int(item))
            else:
                item = float(item)
                if not (item > 0 and item < float("inf")):
                    raise InputError(f"{name} entries must be finite and > 0, got {value!r}")
                out.append(item)
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, InputError):
                raise
            kind = "integers >= 1" if integer else "finite numbers > 0"
            raise InputError(f"{name} entries must be {kind}, got {value!r}") from exc
    return tuple(out)


# -- the deposit kernel ---------------------------------------------------------------------
def _axis_stencil(x: torch.Tensor, window: str):
    """Per-axis target indices and weights, each of shape ``x.shape + (p,)``."""
    if window == "cic":
        base = torch.floor(x)
        targets = torch.stack((base, base + 1.0), dim=-1)
        weights = 1.0 - (x.unsqueeze(-1) - targets).abs()
    elif window == "tsc":
        base = torch.floor(x + 0.5)
        d = x - base
        targets = torch.stack((base - 1.0, base, base + 1.0), dim=-1)
        weights = torch.stack((0.5 * (0.5 - d) ** 2, 0.75 - d**2, 0.5 * (0.5 + d) ** 2), dim=-1)
    else:  # ngp
        targets = torch.floor(x + 0.5).unsqueeze(-1)
        weights = torch.ones_like(targets)
    return targets.to(torch.int64), weights


def paint_cells(
    pos_cells: torch.Tensor,
    mesh_shape: Sequence[int],
    values: torch.Tensor | None = None,
    window: str = "cic",
    periodic: bool = True,
) -> torch.Tensor:
    """Paint batched particles given in mesh-cell units (the kernel behind :func:`paint`).

    Parameters
    ----------
    pos_cells : torch.Tensor, shape (B, 3, P), floating
        Positions in cells: component ``c`` along mesh axis ``c``; mesh point ``i`` is at ``i``.
    mesh_shape : sequence of 3 int
        Mesh size ``(n0, n1, n2)``.
    values : torch.Tensor, shape (B, C, P), optional
        Per-particle values; ``None`` deposits 1 per particle (particle counts, C = 1).
    window : {"cic", "tsc", "ngp"}
        Assignment scheme.
    periodic : bool
        Wrap indices modulo the mesh size (True) or drop out-of-range deposits (False).

    Returns
    -------
    torch.Tensor, shape (B, C, n0, n1, n2)
        Sum of the deposited values per mesh point, same dtype and device as ``pos_cells``.
    """
    window = check_window(window)
    mesh_shape = _triple(mesh_shape, "mesh_shape", integer=True)
    if not isinstance(pos_cells, torch.Tensor) or pos_cells.dim() != 3 or pos_cells.shape[1] != 3:
        got = tuple(pos_cells.shape) if isinstance(pos_cells, torch.Tensor) else type(pos_cells).__name__
        raise InputError(f"pos_cells must be a tensor of shape (B, 3, P), got {got}")
    if not pos_cells.is_floating_point():
        raise InputError(f"pos_cells must be floating point, got dtype {pos_cells.dtype}")
    B, _, P = pos_cells.shape
    dtype, device = pos_cells.dtype, pos_cells.device
    if values is not None:
        if not isinstance(values, torch.Tensor) or values.dim() != 3 or values.shape[0] != B or values.shape[2] != P:
            raise InputError(f"values must have shape (B={B}, C, P={P}), got {tuple(getattr(values, 'shape', ()))}")
        values = values.to(dtype)
    C = 1 if values is None else values.shape[1]

    targets, weights = _axis_stencil(pos_cells, window)  # (B, 3, P, p) each
    sizes = torch.tensor(mesh_shape, device=device).view(1, 3, 1, 1)
    if periodic:
        targets = torch.remainder(targets, sizes)
    else:  # out-of-range deposits go to index 0 with weight 0, keeping shapes static
        inside = (targets >= 0) & (targets < sizes)  # (B, 3, P, p)
        targets = torch.where(inside, targets, torch.zeros_like(targets))

    # outer combination of the per-axis stencils: (B, P, p, p, p), axis 0 slowest (C order)
    t0, t1, t2 = (targets[:, c, :, :] for c in range(3))
    w0, w1, w2 = (weights[:, c, :, :] for c in range(3))
    flat = (t0[..., :, None, None] * mesh_shape[1] + t1[..., None, :, None]) * mesh_shape[2] + t2[..., None, None, :]
    kernel = w0[..., :, None, None] * w1[..., None, :, None] * w2[..., None, None, :]
    if not periodic:
        i0, i1, i2 = (inside[:, c, :, :] for c in range(3))
        valid = i0[..., :, None, None] & i1[..., None, :, None] & i2[..., None, None, :]
        kernel = torch.where(valid, kernel, torch.zeros_like(kernel))

    n_mesh = mesh_shape[0] * mesh_shape[1] * mesh_shape[2]
    # one batch (the usual case) needs no offset, and unit values (particle counts) no product: both would
    # be passes over B P p^3 elements, forward and backward, that change no bit of the result
    if B > 1:
        flat = flat + (torch.arange(B, device=device) * n_mesh).view(B, 1, 1, 1, 1)
    index = flat.reshape(-1)  # (B * P * p^3,)
    if values is None:
        src = kernel.unsqueeze(1)  # (B, 1, P, p, p, p)
    else:
        src = values.view(B, C, P, 1, 1, 1) * kernel.unsqueeze(1)  # (B, C, P, p, p, p)
    src = src.transpose(0, 1).reshape(C, -1)
    mesh = torch.zeros((C, B * n_mesh), dtype=dtype, device=device)
    mesh = mesh.index_add(1, index, src)
    return mesh.view(C, B, *mesh_shape).transpose(0, 1)


def paint(
    positions: torch.Tensor,
    mesh_shape: int | Sequence[int],
    box_size: float | Sequence[float],
    weights: torch.Tensor | None = None,
    window: str = "cic",
    periodic: bool = True,
) -> torch.Tensor:
    """Assign particle masses (or any per-particle quantity) to a regular mesh.

    Parameters
    ----------
    positions : torch.Tensor, shape (N, 3), floating
        Particle positions [Mpc/h]; mesh point ``i`` sits at ``i * box_size / mesh_size``.
    mesh_shape : int or sequence of 3 int
        Number of mesh points per axis.
    box_size : float or sequence of 3 float
        Box side [Mpc/h] per axis.
    weights : torch.Tensor, shape (N,) or (N, C), optional
        Per-particle weight (mass, velocity, ...); default 1 per particle.
    window : {"cic", "tsc", "ngp"}
        Cloud-in-cell (default), triangular-shaped cloud or nearest grid point.
    periodic : bool
        Wrap around the box (default) or drop deposits outside the mesh.

    Returns
    -------
    torch.Tensor, shape (n0, n1, n2), or (C, n0, n1, n2) for 2-D ``weights``
        Summed weights per mesh point (not divided by the cell volume), dtype and device of
        ``positions``.

    Examples
    --------
    >>> import torch
    >>> pos = torch.tensor([[0.0, 0.0, 0.0], [2.5, 0.0, 0.0]], dtype=torch.float64)
    >>> mesh = paint(pos, 4, 4.0)
    >>> float(mesh.sum()), float(mesh[0, 0, 0]), float(mesh[2, 0, 0])
    (2.0, 1.0, 0.5)
    """
    try:
        positions = torch.as_tensor(positions)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"positions must be a numeric (N, 3) array [Mpc/h], got {type(positions).__name__}: {exc}") from exc
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise InputError(f"positions must have shape (N, 3), got {tuple(positions.shape)}")
    if not positions.is_floating_point():
        raise InputError(f"positions must be floating point [Mpc/h], got dtype {positions.dtype}")
    if not torch.isfinite(positions).all():
        bad = int((~torch.isfinite(positions)).any(dim=1).nonzero()[0, 0])
        raise InputError(f"positions must be finite; particle {bad} has {positions[bad].tolist()}")
    mesh_shape = _triple(mesh_shape, "mesh_shape", integer=True)
    box_size = _triple(box_size, "box_size", integer=False)
    cell = torch.tensor([b / n for b, n in zip(box_size, mesh_shape)], dtype=positions.dtype, device=positions.device)
    pos_cells = (positions / cell).T.unsqueeze(0)  # (1, 3, N)
    squeeze = True
    values = None
    if weights is not None:
        weights = torch.as_tensor(weights, device=positions.device)
        if weights.dim() == 1:
            weights = weights.unsqueeze(1)
        elif weights.dim() == 2:
            squeeze = False
        if weights.dim() != 2 or weights.shape[0] != positions.shape[0]:
            raise InputError(
                f"weights must have shape (N,) or (N, C) with N = {positions.shape[0]}, got {tuple(weights.shape)}"
            )
        if weights.is_floating_point() and not torch.isfinite(weights).all():
            bad = int(torch.nonzero(~torch.isfinite(weights))[0, 0])
            raise InputError(f"weights must be finite; particle {bad} has {weights[bad].tolist()}")
        values = weights.T.unsqueeze(0)  # (1, C, N)
    mesh = paint_cells(pos_cells, mesh_shape, values, window=window, periodic=periodic)[0]
    return mesh[0] if squeeze else mesh


# -- Fourier-space window ---------------------------------------------------------------------
def window_fourier(
    mesh_shape: int | Sequence[int],
    window: str = "cic",
    *,
    rfft: bool = True,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Fourier transform of the assignment window, ``W(k) = prod_i sinc(k_i H / 2)^p``.

    ``sinc(x) = sin(x) / x``, ``p`` = 1 (NGP), 2 (CIC), 3 (TSC) and ``k_i H = 2 pi fftfreq(n_i)``,
    so the result does not depend on the box size.

    Parameters
    ----------
    mesh_shape : int or sequence of 3 int
        Mesh size.
    window : {"cic", "tsc", "ngp"}
        Assignment scheme.
    rfft : bool
        Shape ``(n0, n1, n2 // 2 + 1)`` matching ``torch.fft.rfftn`` (default) or the full
        ``(n0, n1, n2)`` of ``fftn``.
    dtype, device
        Of the returned tensor.

    Returns
    -------
    torch.Tensor
        Real, positive window on the FFT grid (1 at k = 0).
    """
    p = WINDOW_ORDER[check_window(window)]
    n0, n1, n2 = _triple(mesh_shape, "mesh_shape", integer=True)
    last = torch.fft.rfftfreq if rfft else torch.fft.fftfreq
    freqs = [torch.fft.fftfreq(n, dtype=dtype, device=device) for n in (n0, n1)]
    freqs.append(last(n2, dtype=dtype, device=device))
    # torch.sinc(f) = sin(pi f) / (pi f) = sinc(k H / 2) for k H = 2 pi f
    w0, w1, w2 = (torch.sinc(f) ** p for f in freqs)
    return w0[:, None, None] * w1[None, :, None] * w2[None, None, :]


def deconvolve_window(mesh_k: torch.Tensor, window: str = "cic", *, rfft: bool = True) -> torch.Tensor:
    """Divide a Fourier-space mesh by the assignment window (compensation).

    Parameters
    ----------
    mesh_k : torch.Tensor, shape (..., n0, n1, n2 // 2 + 1) or (..., n0, n1, n2), complex
        FFT of a painted mesh (``rfftn`` layout if ``rfft``; the last axis length must then be
        ``n2 // 2 + 1`` with even ``n2`` assumed, i.e. ``n2 = 2 (len - 1)``).
    window : {"cic", "tsc", "ngp"}
        The scheme used to paint it.
    rfft : bool
        Layout of ``mesh_k``.

    Returns
    -------
    torch.Tensor
        ``mesh_k / W(k)``, same shape; differentiable.
    """
    if mesh_k.dim() < 3:
        raise InputError(f"mesh_k must have at least 3 dimensions, got shape {tuple(mesh_k.shape)}")
    n0, n1, n_last = mesh_k.shape[-3:]
    n2 = 2 * (n_last - 1) if rfft else n_last
    real_dtype = mesh_k.real.dtype if mesh_k.is_complex() else mesh_k.dtype
    w = window_fourier((n0, n1, n2), window, rfft=rfft, dtype=real_dtype, device=mesh_k.device)
    return mesh_k / w
