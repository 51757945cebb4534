"""Residual and resampling blocks built from styled convolutions (SPEC 2.1).

Sub-module indices reproduce the published state-dict keys: ``convs.0``, ``convs.1`` (activation,
no parameters), ``convs.2`` and ``skip``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fused_block import BlockLayer, fused_block, fused_dual_block
from .styled_conv import MIN_MODULATION, Dual, StyledConv3d, constant_weight_reverse

__all__ = ["LEAKY_SLOPE", "ResStyledBlock", "ConvStyledBlock", "activate", "add", "cat_channels", "narrow_by",
           "periodic_pad"]

#: PyTorch's default LeakyReLU slope, used by the published network.
LEAKY_SLOPE = 0.01

_LETTER_KIND = {"C": "conv", "D": "down", "U": "up"}


class _Crop(torch.autograd.Function):
    """The centre crop with a backward that pads the cotangent with zeros in the input's memory layout
    (autograd's slice backward pads into a contiguous tensor: a channels-last activation's gradient would
    then be summed and convolved across layouts, each a slow transposing copy)."""

    @staticmethod
    def forward(ctx, x, n: int):
        ctx.n, ctx.shape = n, x.shape
        cl = torch.channels_last_3d
        ctx.layout = cl if x.is_contiguous(memory_format=cl) and not x.is_contiguous() else torch.contiguous_format
        return x[:, :, n:-n, n:-n, n:-n]

    @staticmethod
    def backward(ctx, g):
        n = ctx.n
        out = torch.empty(ctx.shape, dtype=g.dtype, device=g.device, memory_format=ctx.layout).zero_()
        out[:, :, n:-n, n:-n, n:-n] = g
        return out, None


def narrow_by(x, n: int):
    """Crop ``n`` cells from both ends of each of the three spatial axes of (N, C, D, H, W)."""
    if n == 0:
        return x
    if isinstance(x, Dual):
        return Dual(narrow_by(x.primal, n), narrow_by(x.tangent, n))
    if torch.is_grad_enabled() and x.requires_grad:
        return _Crop.apply(x, n)
    return x[:, :, n:-n, n:-n, n:-n]


def periodic_pad(x, n: int):
    """Pad ``n`` cells periodically on both ends of each spatial axis of (N, C, D, H, W) (or a :class:`Dual`
    pair), in the input's memory layout: ``narrow_by(periodic_pad(x, n), n)`` is ``x``.

    Differentiable (the backward adds each halo cell's gradient onto the cell it copies). ``n`` may exceed a
    spatial size (the halo then wraps around more than once).
    """
    if n == 0:
        return x
    if isinstance(x, Dual):
        return Dual(periodic_pad(x.primal, n), periodic_pad(x.tangent, n))
    cl = torch.channels_last_3d
    layout = cl if x.is_contiguous(memory_format=cl) and not x.is_contiguous() else torch.contiguous_format
    if n <= min(x.shape[2:]):
        out = F.pad(x, (n,) * 6, mode="circular")
    else:  # F.pad wraps at most once: read each axis modulo its size
        out = x
        for axis in (2, 3, 4):
            size = x.shape[axis]
            out = out.index_select(axis, torch.arange(-n, size + n, device=x.device) % size)
    return out.contiguous(memory_format=layout)


def cat_channels(a, b):
    """Concatenate along channels (tensors or :class:`Dual` pairs)."""
    if isinstance(a, Dual):
        return Dual(torch.cat([a.primal, b.primal], dim=1), torch.cat([a.tangent, b.tangent], dim=1))
    return torch.cat([a, b], dim=1)


def _may_overwrite(inplace: bool) -> bool:
    # in-place only for temporaries the caller owns, and never while autograd records (training)
    return inplace and not torch.is_grad_enabled()


def add(a, b, inplace: bool = False):
    """Sum of two tensors or :class:`Dual` pairs.

    With ``inplace`` (for a temporary ``a`` the caller owns), autograd off and ``a`` of the sum's
    dtype, ``a`` is overwritten:
    the same numbers without allocating (fresh CPU allocations of this size cost page faults that are
    several times the arithmetic, docs/performance.md).
    """
    if isinstance(a, Dual):
        if _may_overwrite(inplace) and _keeps_dtype(a.primal, b.primal) and _keeps_dtype(a.tangent, b.tangent):
            return Dual(a.primal.add_(b.primal), a.tangent.add_(b.tangent))
        return Dual(a.primal + b.primal, a.tangent + b.tangent)
    return a.add_(b) if _may_overwrite(inplace) and _keeps_dtype(a, b) else a + b


def _keeps_dtype(a: torch.Tensor, b: torch.Tensor) -> bool:
    # a 16-bit autocast output plus a float32 tensor (the bypass) is summed in float32, not into a
    return torch.promote_types(a.dtype, b.dtype) == a.dtype


class _DualLeakyReLU(torch.autograd.Function):
    """LeakyReLU of a :class:`Dual` pair with its reverse mode written out: both cotangents are scaled by
    the slope at the primal (autograd through ``leaky_relu_backward`` would also build a zero gradient
    for the primal of the tangent's slope)."""

    @staticmethod
    def forward(ctx, xp, xt):
        ctx.save_for_backward(xp)
        return (F.leaky_relu(xp, LEAKY_SLOPE),
                torch.ops.aten.leaky_relu_backward(xt, xp, LEAKY_SLOPE, False))

    @staticmethod
    def backward(ctx, gp, gt):
        (xp,) = ctx.saved_tensors
        slope = torch.ops.aten.leaky_relu_backward
        return slope(gp, xp, LEAKY_SLOPE, False), slope(gt, xp, LEAKY_SLOPE, False)


def activate(x, inplace: bool = False):
    """LeakyReLU(0.01); for a :class:`Dual` the tangent is multiplied by the slope at the primal
    (1 where the pre-activation is > 0, else 0.01, as PyTorch differentiates it: the tangent is
    ``leaky_relu_backward(tangent, primal)``, one fused pass). ``inplace`` as in :func:`add`."""
    overwrite = _may_overwrite(inplace)
    if isinstance(x, Dual):
        if overwrite:
            torch.ops.aten.leaky_relu_backward.grad_input(x.tangent, x.primal, LEAKY_SLOPE, False,
                                                          grad_input=x.tangent)
            return Dual(F.leaky_relu_(x.primal, LEAKY_SLOPE), x.tangent)
        if torch.is_grad_enabled() and not torch._C._are_functorch_transforms_active():
            return Dual(*_DualLeakyReLU.apply(x.primal, x.tangent))
        return Dual(F.leaky_relu(x.primal, LEAKY_SLOPE),
                    torch.ops.aten.leaky_relu_backward(x.tangent, x.primal, LEAKY_SLOPE, False))
    return F.leaky_relu_(x, LEAKY_SLOPE) if overwrite else F.leaky_relu(x, LEAKY_SLOPE)


def _build(seq: str, style_size: int, in_chan: int, out_chan: int, mid_chan: int) -> nn.ModuleList:
    n_conv = sum(letter in _LETTER_KIND for letter in seq)
    layers, i_conv = [], 0
    for letter in seq:
        if letter == "A":
            layers.append(nn.LeakyReLU(LEAKY_SLOPE))
        elif letter in _LETTER_KIND:
            cin = in_chan if i_conv == 0 else mid_chan
            cout = out_chan if i_conv == n_conv - 1 else mid_chan
            layers.append(StyledConv3d(style_size, cin, cout, _LETTER_KIND[letter]))
            i_conv += 1
        else:
            raise ValueError(f"unknown layer letter {letter!r} in seq {seq!r}; allowed: C, D, U, A")
    return nn.ModuleList(layers)


def _fused(layers: nn.ModuleList, x, style, last_act: bool, skip: StyledConv3d | None = None, crop: int = 0):
    """The block through :func:`~.fused_block.fused_block` (or :func:`~.fused_block.fused_dual_block` for
    dual pairs): the same output with a written-out backward; None where the block does not qualify.

    It qualifies when autograd records with constant weights (:func:`~.styled_conv.constant_weight_reverse`),
    one style for the batch, the layers alternate convolution, LeakyReLU (the published sequences) and, for
    dual pairs, every layer takes the folded tangent (``|m| > 1e-3``). ``last_act``: a LeakyReLU after the
    (residual) sum.
    """
    dual = isinstance(x, Dual)
    if not torch.is_grad_enabled() or dual != isinstance(style, Dual):
        return None
    xp = x.primal if dual else x
    if not dual and style.dim() == 2 and style.shape[0] == 1:
        style = style[0]
    convs = list(layers[0::2]) + ([] if skip is None else [skip])
    kinds = [isinstance(layer, StyledConv3d) for layer in layers]
    alternating = all(kinds[0::2]) and not any(kinds[1::2])
    if (style.primal if dual else style).dim() != 1 or not alternating or not all(
            constant_weight_reverse(c, xp) for c in convs):
        return None
    specs = [BlockLayer(c.weight.detach(), c.bias.detach(), c.stride, c.transposed) for c in convs]
    main, skip_spec = (specs[:-1], specs[-1]) if skip is not None else (specs, None)
    if not dual:
        mr = [c.modulation(style) for c in convs]
        return fused_block(main, mr[:len(main)], x, skip=skip_spec, skip_mr=mr[-1] if skip is not None else None,
                           crop=crop, last_act=last_act)
    params = []
    for c in convs:
        m, dm, r, dn = c.dual_modulation(style)
        if not bool(m.abs().min() > MIN_MODULATION):
            return None  # the general two-convolution tangent: layer by layer
        params.append((m, dm / m, r, dn))
    out = fused_dual_block(main, params[:len(main)], x.primal, x.tangent, skip=skip_spec,
                           skip_params=params[-1] if skip is not None else None, crop=crop, last_act=last_act)
    return Dual(*out)


def _run(layers: nn.ModuleList, x, style):
    fresh = False  # whether x is a temporary made here (never the block's input)
    for layer in layers:
        if isinstance(layer, StyledConv3d):
            x, fresh = layer(x, style), True
        else:
            x = activate(x, inplace=fresh)
    return x


class ConvStyledBlock(nn.Module):
    """Plain sequence of styled layers, e.g. ``'DA'`` (down-sample + LeakyReLU) or ``'UA'``."""

    def __init__(self, style_size: int, in_chan: int, out_chan: int, seq: str):
        super().__init__()
        self.convs = _build(seq, style_size, in_chan, out_chan, max(in_chan, out_chan))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """(N, Cin, n, n, n) -> (N, Cout, n', n', n')."""
        out = _fused(self.convs, x, style, last_act=len(self.convs) % 2 == 0)
        return _run(self.convs, x, style) if out is None else out


class ResStyledBlock(nn.Module):
    """Residual block: main path of styled 3^3 convolutions plus a styled 1^3 skip.

    A trailing ``'A'`` in ``seq`` is applied after the residual addition. The skip is centre-cropped
    to the main path's size (one cell per side per 3^3 convolution).

    Parameters
    ----------
    style_size, in_chan, out_chan : int
    seq : str
        ``'CACA'`` or ``'CAC'`` in the published network. Middle channels: ``max(in, out)``.
    """

    def __init__(self, style_size: int, in_chan: int, out_chan: int, seq: str):
        super().__init__()
        self.last_act = seq.endswith("A")
        main = seq[:-1] if self.last_act else seq
        self.convs = _build(main, style_size, in_chan, out_chan, max(in_chan, out_chan))
        self.skip = StyledConv3d(style_size, in_chan, out_chan, "skip")
        self.crop = main.count("C")

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """(N, Cin, n, n, n) -> (N, Cout, n - 2 * (number of 3^3 convs), ...)."""
        out = _fused(self.convs, x, style, self.last_act, skip=self.skip, crop=self.crop)
        if out is not None:
            return out
        y = narrow_by(self.skip(x, style), self.crop)
        x = add(_run(self.convs, x, style), y, inplace=True)  # the main path's output is a temporary
        return activate(x, inplace=True) if self.last_act else x
