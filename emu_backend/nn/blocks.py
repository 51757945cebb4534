"""Residual and resampling blocks built from styled convolutions (SPEC 2.1).

Sub-module indices reproduce the published state-dict keys: ``convs.0``, ``convs.1`` (activation,
no parameters), ``convs.2`` and ``skip``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .styled_conv import Dual, StyledConv3d

__all__ = ["LEAKY_SLOPE", "ResStyledBlock", "ConvStyledBlock", "activate", "add", "cat_channels", "narrow_by"]

#: PyTorch's default LeakyReLU slope, used by the published network.
LEAKY_SLOPE = 0.01

_LETTER_KIND = {"C": "conv", "D": "down", "U": "up"}


def narrow_by(x, n: int):
    """Crop ``n`` cells from both ends of each of the three spatial axes of (N, C, D, H, W)."""
    if n == 0:
        return x
    if isinstance(x, Dual):
        return Dual(narrow_by(x.primal, n), narrow_by(x.tangent, n))
    return x[:, :, n:-n, n:-n, n:-n]


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
        return _run(self.convs, x, style)


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
        y = narrow_by(self.skip(x, style), self.crop)
        x = add(_run(self.convs, x, style), y, inplace=True)  # the main path's output is a temporary
        return activate(x, inplace=True) if self.last_act else x
