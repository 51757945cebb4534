"""The z-dependent emulator on a whole periodic box with gradients: tile by tile, recomputed in the backward.

Each output tile reads its input periodically (``tile + 96`` cells per axis, the network's crop) by index
gathers, whose backward scatters (adds) the gradient of every copied cell back onto the cell it was copied
from: the periodic halo's gradient is folded onto the box. Each tile's network call is recomputed in
the backward pass (as :func:`torch.utils.checkpoint.checkpoint` does), so the backward keeps one tile's
activations at a time and the peak memory is set by the tile, not the box; its first forward runs with
autograd off (:class:`_RecomputedTile`), at the cost of inference. Tiles are anchored on multiples
of 8 as in :class:`~emu_backend.inference.tiling.TilePlan`, so the result does not depend on the tile
size beyond float round-off.

With ``periodic=True`` the network runs once on the whole box in its periodic mode
(:class:`~emu_backend.nn.StyledVNet`: each activation computed once per period, no halo): the same
numbers as the tiles up to float round-off, far cheaper for a box that is not much larger than a tile
(``(N + 4)^3`` level-0 cells instead of ``(N / tile)^3 (tile + 96)^3``), with autograd keeping the whole
box's activations (no recomputation).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from ..errors import InputError
from ..inference.models import zdep_forward
from ..inference.tiling import TilePlan
from ..nn.normalisation import DIS_STD_MPC_H
from ..nn.vnet import PERIOD_MULTIPLE

__all__ = ["periodic_gather", "emulate_box"]


def periodic_gather(field: torch.Tensor, origin, size) -> torch.Tensor:
    """The block ``[origin, origin + size)`` of a periodic (C, N0, N1, N2) tensor, read modulo N.

    Differentiable: the backward adds each block cell's gradient onto the box cell it came from.

    Parameters
    ----------
    field : Tensor, shape (C, N0, N1, N2)
    origin, size : sequence of 3 int
        First cell (any integer, taken modulo N) and block size (may exceed N) per axis.

    Returns
    -------
    Tensor, shape (C, *size)

    Examples
    --------
    >>> x = torch.arange(8.0).reshape(1, 2, 2, 2)
    >>> periodic_gather(x, (-1, 0, 0), (3, 1, 1)).flatten().tolist()
    [4.0, 0.0, 4.0]
    """
    out = field
    for axis, (o, s, n) in enumerate(zip(origin, size, field.shape[1:])):
        idx = torch.arange(o, o + s, device=field.device) % n
        out = out.index_select(axis + 1, idx)
    return out


class _RecomputedTile(torch.autograd.Function):
    """One tile's network call, forward without autograd, recomputed with autograd in the backward.

    What :func:`torch.utils.checkpoint.checkpoint` does, except that the first forward runs with autograd
    off, so the network takes its inference path (activations and residual sums in place on its own
    temporaries, :mod:`emu_backend.nn.blocks`): the forward pass of a gradient costs what inference costs.
    Only the tile's inputs are saved. First-order gradients only (no double backward).
    """

    @staticmethod
    def forward(ctx, run, x, omega_m, dz):
        ctx.run = run
        ctx.save_for_backward(x, omega_m, dz)
        return run(x, omega_m, dz)

    @staticmethod
    def backward(ctx, *cotangents):
        saved = ctx.saved_tensors
        inputs = [t.detach().requires_grad_(need) for t, need in zip(saved, ctx.needs_input_grad[1:])]
        with torch.enable_grad():
            outs = ctx.run(*inputs)
        wanted = [t for t in inputs if t.requires_grad]
        grads = iter(torch.autograd.grad(outs, wanted, cotangents) if wanted else ())
        return (None, *[next(grads) if t.requires_grad else None for t in inputs])


def _tile_forward(net, velocity: bool, method: str, periodic: bool = False):
    # the network with its weights as constants (detached, the module untouched): gradients go to the
    # inputs and the style only, and each styled convolution's backward skips the weight-gradient
    # convolution (emu_backend.nn.modulated_conv)
    constants = {name: p.detach() for name, p in net.named_parameters()}
    if periodic and method != "dual":
        raise InputError(f"periodic mode runs the forward mode as method='dual', got method={method!r}")
    kwargs = {"periodic": True} if periodic else {}

    def frozen(*args):
        return torch.func.functional_call(net, constants, args, kwargs)

    def run(x, omega_m, dz):
        out, dout = zdep_forward(net, x, omega_m, dz, velocity=velocity, method=method, runner=frozen)
        return (out,) if dout is None else (out, dout)

    return run


def _activation_layout(net) -> torch.memory_format:
    """The layout the network's activations run in: channels-last where its convolution weights are (the
    :class:`~emu_backend.inference.Emulator` stores them so on a CPU), as its inference path runs them."""
    weight = next(p for p in net.parameters() if p.dim() == 5)
    cl = torch.channels_last_3d
    return cl if weight.is_contiguous(memory_format=cl) and not weight.is_contiguous() else torch.contiguous_format


def emulate_box(net, linear_displacement: torch.Tensor, omega_m: torch.Tensor, dz: torch.Tensor, *,
                tile_size: int, velocity: bool = False, method: str = "dual", recompute: bool | str = True,
                periodic: bool = False):
    """map2map_zdep network output (and its D-derivative) on a whole periodic box, differentiably.

    Parameters
    ----------
    net : StyledVNet
        A map2map_zdep network (style size 2), in the dtype and on the device of the inputs.
    linear_displacement : Tensor, shape (3, N, N, N)
        z = 0 linear (ZA) displacement [Mpc/h] on the particle grid; gradients flow to it.
    omega_m, dz : Tensor
        0-d Omega_m and growth factor D(z, Omega_m); gradients flow to both (the style and the input
        scaling).
    tile_size : int
        Output tile size, a positive multiple of 8.
    velocity : bool
        Also return d(output)/dD (the velocity before its normalisation).
    method : {"dual", "jvp"}
        Forward-mode formulation (see :func:`~emu_backend.inference.models.zdep_forward`); ``"dual"`` is
        the one whose reverse-mode derivative is exact and cheap.
    recompute : bool, "all" or "checkpoint"
        True (default): each tile's forward runs with autograd off (the inference path) and is
        recomputed with autograd in the backward, except the last tile, which keeps its activations from
        its forward (the backward reaches it first: it would be recomputed at once); memory bounded by
        one tile, and a box of one tile is never recomputed. ``"all"``: the last tile recomputed too (for
        several calls whose graphs live together, e.g. one per redshift: at most one of them may keep a
        tile). False keeps every tile's activations (memory grows with the box). ``"checkpoint"``: the
        same recomputation by :func:`torch.utils.checkpoint.checkpoint`, whose first forward records
        autograd and so misses the inference path (kept for comparison,
        ``benchmarks/bench_differentiable.py``). Ignored in periodic mode.
    periodic : bool
        Run the whole box at once in the network's periodic mode (module docstring) instead of tiles;
        ``N`` must be a multiple of 8 on each axis. ``tile_size`` is then unused.

    Returns
    -------
    (Tensor, Tensor or None), each (3, N, N, N)
        The network output and its D-derivative, both in network units (displacement / 6 Mpc/h).
    """
    shape = tuple(linear_displacement.shape[1:])
    x = linear_displacement / DIS_STD_MPC_H
    layout = _activation_layout(net)
    if periodic:
        if any(n % PERIOD_MULTIPLE for n in shape):
            raise InputError(f"periodic mode needs a box of a multiple of {PERIOD_MULTIPLE} cells per axis, "
                             f"got {shape}")
        res = _tile_forward(net, velocity, method, periodic=True)(x.unsqueeze(0).contiguous(memory_format=layout),
                                                                   omega_m, dz)
        return res[0][0], (res[1][0] if velocity else None)
    plan = TilePlan(shape, tile_size)
    run = _tile_forward(net, velocity, method)
    n_out = 2 if velocity else 1
    outs = [x.new_zeros((3, *shape)) for _ in range(n_out)]
    last = len(plan.tiles) - 1
    for i, tile in enumerate(plan.tiles):
        xt = periodic_gather(x, tile.input_origin, tile.input_size).unsqueeze(0).contiguous(memory_format=layout)
        if recompute == "checkpoint" and torch.is_grad_enabled():
            res = checkpoint(run, xt, omega_m, dz, use_reentrant=False)
        elif recompute and torch.is_grad_enabled() and (recompute == "all" or i != last):
            res = _RecomputedTile.apply(run, xt, omega_m, dz)
        else:
            res = run(xt, omega_m, dz)
        (a0, a1, a2), (s0, s1, s2) = tile.anchor, tile.size
        for dst, src in zip(outs, res):
            dst[:, a0:a0 + s0, a1:a1 + s1, a2:a2 + s2] = src[0, :, :s0, :s1, :s2]
    return outs[0], (outs[1] if velocity else None)
