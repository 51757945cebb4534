"""Styled 3-D convolutions: StyleGAN2 modulation/demodulation without padding (SPEC 2.1).

For one style vector ``s`` (length S) and a layer with parameters ``style_weight`` (Cin, S),
``style_bias`` (Cin,), ``weight`` and ``bias`` (Cout,):

1. ``m[i] = style_weight[i, :] @ s + style_bias[i]`` (plain affine map);
2. ``w'[o, i, ...] = weight[o, i, ...] * m[i]``;
3. ``w''[o, i, ...] = w'[o, i, ...] / sqrt(sum_{i, taps} w'[o, i, ...]^2 + 1e-8)``;
4. ``y = conv(x, w'') + bias``, stride 1 (kernel 3 or 1), stride 2 (kernel 2, down) or a
   stride-2 transposed convolution (kernel 2, up; weight stored (Cin, Cout, 2, 2, 2)).

The style is either shared by the whole batch, shape (S,) - the weights are folded once and a plain
convolution runs on the batch - or given per sample, shape (N, S) - a grouped convolution applies
each sample's own weights (the batch-1 result for every sample).
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .modulated_conv import channel_shapes, conv, demodulation, modulated_conv, modulated_dual_conv

__all__ = ["KINDS", "MIN_MODULATION", "Dual", "StyledConv3d", "constant_weight_reverse", "foldable_tangent", "modulated_weight"]

#: kind -> (kernel size, stride, transposed)
KINDS = {
    "conv": (3, 1, False),
    "skip": (1, 1, False),
    "down": (2, 2, False),
    "up": (2, 2, True),
}

DEMOD_EPS = 1e-8

#: Below this |modulation| an input channel takes the general (two-convolution) tangent path.
MIN_MODULATION = 1e-3


def _float32_weights(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast off while the weights are folded: under 16-bit autocast the style modulation and
    demodulation stay float32, only the convolutions run in 16 bits. Device types without autocast
    (``meta``, used to count FLOPs and plan memory) are not asked: torch raises for them."""
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class Dual(NamedTuple):
    """A value and its tangent (forward-mode derivative along one direction).

    Passed through :class:`StyledVNet` as the input, with the style and its tangent as a ``Dual`` too,
    it yields the output and the output's tangent in one pass (see :meth:`StyledConv3d.forward`).
    """

    primal: torch.Tensor
    tangent: torch.Tensor


def modulated_weight(
    weight: torch.Tensor,
    style_weight: torch.Tensor,
    style_bias: torch.Tensor,
    style: torch.Tensor,
    transposed: bool = False,
    eps: float = DEMOD_EPS,
) -> torch.Tensor:
    """Modulate and demodulate a convolution weight for one or several styles.

    Parameters
    ----------
    weight : Tensor
        (Cout, Cin, k, k, k), or (Cin, Cout, k, k, k) when ``transposed``.
    style_weight : Tensor
        (Cin, S).
    style_bias : Tensor
        (Cin,).
    style : Tensor
        (S,) for one style or (N, S) for one style per sample.
    transposed : bool
        Whether ``weight`` is in transposed-convolution order (input channels first).
    eps : float
        Added inside the square root of the demodulation.

    Returns
    -------
    Tensor
        Same layout as ``weight``, with a leading (N,) axis when ``style`` is (N, S).
    """
    m = style @ style_weight.T + style_bias  # (Cin,) or (N, Cin)
    in_dim = 0 if transposed else 1
    shape = [1] * weight.dim()
    shape[in_dim] = -1
    if style.dim() == 1:
        w = weight * m.view(shape)
        sum_dims = [d for d in range(w.dim()) if d != 1 - in_dim]
    else:
        w = weight.unsqueeze(0) * m.view([m.shape[0]] + shape)
        out_dim = 2 - in_dim  # output-channel axis after the leading sample axis
        sum_dims = [d for d in range(1, w.dim()) if d != out_dim]
    return w * torch.rsqrt(w.pow(2).sum(dim=sum_dims, keepdim=True) + eps)


def constant_weight_reverse(module: "StyledConv3d", x: torch.Tensor) -> bool:
    """Whether the styled convolution takes :func:`~.modulated_conv.modulated_conv` (no weight-gradient
    convolutions in the backward): autograd records, the weights are constant (``requires_grad`` off, as
    in :class:`~emu_backend.differentiable.ForwardModel`), no functorch transform (``torch.func.jvp``) and
    no autocast is active."""
    return (torch.is_grad_enabled() and not module.weight.requires_grad and not module.bias.requires_grad
            and not torch._C._are_functorch_transforms_active()
            and not (torch.amp.is_autocast_available(x.device.type) and torch.is_autocast_enabled(x.device.type)))


def foldable_tangent(net: nn.Module, style: torch.Tensor) -> bool:
    """Whether every styled convolution in ``net`` takes the one-convolution tangent for ``style`` (S,).

    That formula divides by the modulation ``m``; where some ``|m|`` is below ``1e-3`` a layer
    needs the general two-convolution form. A compiled network has no data-dependent branch, so
    it is run only when this holds (:meth:`~emu_backend.inference.ModelConvention.compile`).
    """
    with torch.no_grad():
        return all(bool((style @ mod.style_weight.T + mod.style_bias).abs().min() > MIN_MODULATION)
                   for mod in net.modules() if isinstance(mod, StyledConv3d))


class StyledConv3d(nn.Module):
    """One styled convolution of kind ``conv`` (3^3), ``skip`` (1^3), ``down`` or ``up`` (2^3, stride 2).

    Parameters
    ----------
    style_size : int
        Length S of the style vector.
    in_chan, out_chan : int
        Channel counts.
    kind : {"conv", "skip", "down", "up"}
        Which convolution (SPEC 2.1 table).

    Notes
    -----
    Spatial sizes: conv n -> n-2, skip n -> n, down n -> n//2, up n -> 2n (no padding anywhere).
    """

    def __init__(self, style_size: int, in_chan: int, out_chan: int, kind: str):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
        k, self.stride, self.transposed = KINDS[kind]
        self.kind = kind
        self.style_size, self.in_chan, self.out_chan = style_size, in_chan, out_chan
        self.style_weight = nn.Parameter(torch.empty(in_chan, style_size))
        self.style_bias = nn.Parameter(torch.empty(in_chan))
        wshape = (in_chan, out_chan) if self.transposed else (out_chan, in_chan)
        self.weight = nn.Parameter(torch.empty(*wshape, k, k, k))
        self.bias = nn.Parameter(torch.empty(out_chan))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference initialisation: kaiming-uniform(a=sqrt 5), fan-in bias, style bias 1."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.style_weight, a=math.sqrt(5))
        fan_in = self.in_chan * self.weight[0, 0].numel()
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.bias, -bound, bound)
        nn.init.ones_(self.style_bias)

    def extra_repr(self) -> str:
        return f"{self.kind}, style_size={self.style_size}, {self.in_chan} -> {self.out_chan}"

    def modulation(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The modulation ``m`` (Cin,) and demodulation ``r`` (Cout,) for one style (S,), differentiable in it:
        the folded weight is ``weight * m * r`` (input and output channel axes)."""
        m = style @ self.style_weight.T + self.style_bias
        return m, demodulation(self.weight, m, self.transposed, DEMOD_EPS)

    def folded_weight(self, style: torch.Tensor) -> torch.Tensor:
        """The plain convolution weight for style ``style`` (S,) or (N, S)."""
        return modulated_weight(self.weight, self.style_weight, self.style_bias, style, self.transposed)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Apply the styled convolution.

        Parameters
        ----------
        x : Tensor
            (N, Cin, D, H, W).
        style : Tensor
            (S,) shared by the batch, or (N, S) per sample.

        Returns
        -------
        Tensor
            (N, Cout, D', H', W').
        """
        if isinstance(x, Dual):
            return self._forward_dual(x, style)
        if style.dim() == 2 and style.shape[0] == 1:
            style = style[0]
        if style.dim() == 1 and constant_weight_reverse(self, x):
            m, r = self.modulation(style)
            return modulated_conv(x, m, r, self.bias, self.weight, self.stride, self.transposed)
        with _float32_weights(x.device.type):
            w = self.folded_weight(style)
        if style.dim() == 1:
            return conv(x, w, self.bias, self.stride, self.transposed)
        op = F.conv_transpose3d if self.transposed else F.conv3d
        n = x.shape[0]
        if style.shape[0] != n:
            raise ValueError(f"style batch {style.shape[0]} does not match input batch {n}")
        # grouped convolution: sample b uses its own weights w[b]
        y = op(
            x.reshape(1, n * x.shape[1], *x.shape[2:]),
            w.reshape(-1, *w.shape[2:]),  # (N*Cout, Cin, k^3), or (N*Cin, Cout, k^3) transposed
            self.bias.repeat(n),
            stride=self.stride,
            groups=n,
        )
        return y.reshape(n, self.out_chan, *y.shape[2:])

    def dual_modulation(self, style: Dual) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The modulation ``m`` and its tangent ``dm`` (Cin,), the demodulation ``r = 1 / n`` and the
        tangent's relative demodulation ``c = dn / n`` (Cout,), for one style and its tangent (S,) each."""
        s, ds = style
        with _float32_weights(s.device.type):
            m = s @ self.style_weight.T + self.style_bias
            dm = ds @ self.style_weight.T
            ishape, oshape = channel_shapes(self.weight.dim(), self.transposed)
            sum_dims = [d for d in range(self.weight.dim()) if oshape[d] == 1]
            n2 = (self.weight * m.view(ishape)).pow(2).sum(dim=sum_dims) + DEMOD_EPS
            c = (self.weight.pow(2) * (m * dm).view(ishape)).sum(dim=sum_dims) / n2
        return m, dm, torch.rsqrt(n2), c

    def _forward_dual(self, x: Dual, style: Dual) -> Dual:
        """Output and tangent of the styled convolution for a style shared by the batch.

        With ``W'' = W m / n`` (``m`` per input channel, ``n`` per output channel), the tangent is
        ``conv(dx, W'') + conv(x, dW'')`` and ``dW'' = W'' (dm / m - dn / n)``, so
        ``dy = conv(dx + x dm / m, W'') - (dn / n) (y - bias)``: one convolution with the same
        folded weight. Where some ``|m|`` is tiny the general form ``conv(x, dW'')`` is used instead.
        """
        if style.primal.dim() != 1:
            raise ValueError("the forward-mode path needs one style (S,) shared by the batch")
        m, dm, r, c = self.dual_modulation(style)
        ishape, oshape = channel_shapes(self.weight.dim(), self.transposed)
        with _float32_weights(x.primal.device.type):
            w = self.weight * m.view(ishape)
            w = w * r.view(oshape)
        def op(a, w, b=None, stride=1):
            return conv(a, w, b, stride, self.transposed)

        folds = torch.compiler.is_compiling() or bool(m.abs().min() > MIN_MODULATION)
        if folds and constant_weight_reverse(self, x.primal):  # the same numbers, a cheaper backward
            return Dual(*modulated_dual_conv(x.primal, x.tangent, m, dm / m, r, c, self.bias, self.weight,
                                             self.stride, self.transposed))
        y = op(x.primal, w, self.bias, stride=self.stride)

        def folded(xp, xt, y, w, m, dm, c):
            # conv(u, W'') + c b - c y = conv(u, W'') - c (y - b), with c = dn / n per output channel;
            # the bias c b rides on the convolution and the rest is one in-place pass over dy
            u = torch.addcmul(xt, xp, (dm / m).view(1, -1, 1, 1, 1))
            dy = op(u, w, c * self.bias, stride=self.stride)
            return dy.addcmul_(y, c.view(1, -1, 1, 1, 1), value=-1.0)  # autograd-safe: a conv does not save its output

        def general(xp, xt, y, w, m, dm, c):
            dw = self.weight * dm.view(ishape) * r.view(oshape) - w * c.view(oshape)
            return op(xt, w, stride=self.stride) + op(xp, dw, stride=self.stride)

        operands = (x.primal, x.tangent, y, w, m, dm, c)
        if torch.compiler.is_compiling():
            # no data-dependent branch in a compiled graph: the caller checked foldable_tangent()
            dy = folded(*operands)
        else:
            dy = (folded if m.abs().min() > MIN_MODULATION else general)(*operands)
        return Dual(y, dy)
