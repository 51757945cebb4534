"""A styled convolution whose reverse mode needs no weight-gradient convolution.

The styled convolution (SPEC 2.1) is ``y = conv(x, W m r) + b`` with a fixed weight ``W``, the modulation
``m`` per input channel and the demodulation ``r = (sum_{i, taps} (W m)^2 + eps)^(-1/2)`` per output channel.
When ``W`` is constant (the emulator's weights are not being trained) but ``m`` and ``r`` carry gradients
(they depend on the style, i.e. on Omega_m and D), plain autograd differentiates the folded weight
``W m r`` and so runs, for every layer, both the input-gradient and the weight-gradient convolution. The
weight gradient is only contracted with ``W`` afterwards, and the same numbers come out of activations
already at hand:

- ``h = conv^T(g, W r)`` (the input-gradient convolution, with the weight demodulated but not modulated);
- ``dL/dx = h m``, ``dL/dm_i = sum_{n, space} h_i x_i``;
- ``dL/dr_o = sum_{n, space} g_o (y_o - b_o) / r_o`` (``y - b`` is linear in ``r``);
- ``dL/db_o = sum_{n, space} g_o``.

So the backward costs one convolution and three channel reductions instead of two convolutions, exactly
(these are the same sums in another order; the float round-off differs). ``r`` itself is computed from
``m`` by ordinary autograd ops on (Cout, Cin) tensors, whose gradient adds the demodulation's
``dr/dm``. First-order reverse mode only; the forward is the folded-weight convolution of
:class:`~emu_backend.nn.StyledConv3d`, bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["demodulation", "modulated_conv", "modulated_dual_conv"]


def _channel_shapes(ndim: int, transposed: bool) -> tuple[list[int], list[int]]:
    """View shapes that put a per-input-channel / per-output-channel vector on the weight's axes."""
    in_dim = 0 if transposed else 1
    ishape, oshape = [1] * ndim, [1] * ndim
    ishape[in_dim], oshape[1 - in_dim] = -1, -1
    return ishape, oshape


def _channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_{n, space} a * b`` per channel of two (N, C, D, H, W) tensors, shape (C,), without a temporary."""
    return torch.einsum("ncdhw,ncdhw->c", a, b)


class _ModulatedConv(torch.autograd.Function):
    """``conv(x, W m r) + b`` with the reverse mode of the module docstring (``W`` constant)."""

    @staticmethod
    def forward(ctx, x, m, r, bias, weight, stride: int, transposed: bool):
        ishape, oshape = _channel_shapes(weight.dim(), transposed)
        w = weight * m.view(ishape)
        w = w * r.view(oshape)  # the same two products as modulated_weight(): the forward is bit-identical
        op = F.conv_transpose3d if transposed else F.conv3d
        y = op(x, w, bias, stride=stride)
        ctx.stride, ctx.transposed = stride, transposed
        ctx.save_for_backward(x, m, r, bias, weight, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, m, r, bias, weight, y = ctx.saved_tensors
        need_x, need_m, need_r, need_b = ctx.needs_input_grad[:4]
        if ctx.needs_input_grad[4]:
            raise RuntimeError("modulated_conv treats the weight as constant; use the styled convolution's "
                               "autograd path to train it")
        ishape, oshape = _channel_shapes(weight.dim(), ctx.transposed)
        g_x = g_m = g_r = g_b = None
        if need_x or need_m:
            h = _input_gradient(g, x, weight * r.view(oshape), ctx.stride, ctx.transposed)
            if need_m:
                g_m = _channel_dot(h, x)
            if need_x:
                g_x = h.mul_(m.view(1, -1, 1, 1, 1))
        if need_r or need_b:
            g_sum = g.sum(dim=(0, 2, 3, 4))
            if need_b:
                g_b = g_sum
            if need_r:
                g_yb = _channel_dot(g, y)
                if bias is not None:
                    g_yb = g_yb - g_sum * bias
                g_r = g_yb / r
        return g_x, g_m, g_r, g_b, None, None, None


def _input_gradient(g: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int,
                    transposed: bool) -> torch.Tensor:
    """The input-gradient convolution: the adjoint of ``x -> conv(x, weight)`` applied to ``g``."""
    return torch.ops.aten.convolution_backward(g, x, weight, None, [stride] * 3, [0] * 3, [1] * 3, transposed,
                                               [0] * 3, 1, [True, False, False])[0]


class _ModulatedDualConv(torch.autograd.Function):
    """The styled convolution and its forward-mode tangent (:meth:`StyledConv3d._forward_dual`'s folded form)
    with a hand-derived reverse mode.

    Forward, with ``w = W m r``, ``a = dm / m`` per input channel and ``c = dn / n`` per output channel::

        y  = conv(xp, w) + b
        dy = conv(xt + xp a, w) + c b - c y

    Backward, with ``Y = y - b``, the cotangents ``gy``, ``gdy`` and ``h1 = conv^T(gy - c gdy, W r)``,
    ``h2 = conv^T(gdy, W r)``::

        dL/dxp = h1 m + h2 m a        dL/dxt = h2 m
        dL/dm  = <h1, xp> + <h2, xt> + a <h2, xp>        dL/da = m <h2, xp>
        dL/dr  = (<gy, Y> + <gdy, dy>) / r               dL/dc = -<gdy, Y>

    (``<.,.>`` sums over the batch and space per channel): two input-gradient convolutions and channel
    reductions, where autograd through the same ops runs four convolutions and materialises the
    products of the tangent's ``addcmul`` terms.
    """

    @staticmethod
    def forward(ctx, xp, xt, m, a, r, c, bias, weight, stride: int, transposed: bool):
        ishape, oshape = _channel_shapes(weight.dim(), transposed)
        w = weight * m.view(ishape)
        w = w * r.view(oshape)
        op = F.conv_transpose3d if transposed else F.conv3d
        y = op(xp, w, bias, stride=stride)
        u = torch.addcmul(xt, xp, a.view(1, -1, 1, 1, 1))
        dy = op(u, w, c * bias, stride=stride)
        dy.addcmul_(y, c.view(1, -1, 1, 1, 1), value=-1.0)
        ctx.stride, ctx.transposed = stride, transposed
        ctx.save_for_backward(xp, xt, m, a, r, c, bias, weight, y, dy)
        return y, dy

    @staticmethod
    def backward(ctx, gy, gdy):
        xp, xt, m, a, r, c, bias, weight, y, dy = ctx.saved_tensors
        if any(ctx.needs_input_grad[6:8]):
            raise RuntimeError("modulated_dual_conv treats the weight and bias as constant")
        _, oshape = _channel_shapes(weight.dim(), ctx.transposed)
        wr = weight * r.view(oshape)
        cv = c.view(1, -1, 1, 1, 1)
        h1 = _input_gradient(torch.addcmul(gy, gdy, cv, value=-1.0), xp, wr, ctx.stride, ctx.transposed)
        h2 = _input_gradient(gdy, xp, wr, ctx.stride, ctx.transposed)
        h2_xp = _channel_dot(h2, xp)
        g_m = _channel_dot(h1, xp) + _channel_dot(h2, xt) + a * h2_xp
        g_a = m * h2_xp
        gy_y, gdy_y = _channel_dot(gy, y), _channel_dot(gdy, y)
        gy_sum, gdy_sum = gy.sum(dim=(0, 2, 3, 4)), gdy.sum(dim=(0, 2, 3, 4))
        g_r = (gy_y - bias * gy_sum + _channel_dot(gdy, dy)) / r
        g_c = bias * gdy_sum - gdy_y
        mv = m.view(1, -1, 1, 1, 1)
        g_xt = torch.mul(h2, mv)
        g_xp = h1.mul_(mv).addcmul_(h2, (m * a).view(1, -1, 1, 1, 1))
        return g_xp, g_xt, g_m, g_a, g_r, g_c, None, None, None, None


def modulated_dual_conv(xp: torch.Tensor, xt: torch.Tensor, m: torch.Tensor, a: torch.Tensor, r: torch.Tensor,
                        c: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor, stride: int,
                        transposed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The styled convolution and its tangent, ``(y, dy)``, with a constant weight and a cheap reverse mode.

    Parameters
    ----------
    xp, xt : Tensor, shape (N, Cin, D, H, W)
        Input and its tangent.
    m, a : Tensor, shape (Cin,)
        Modulation and the tangent's relative modulation ``dm / m``.
    r, c : Tensor, shape (Cout,)
        Demodulation ``1 / n`` and the tangent's relative demodulation ``dn / n``.
    bias : Tensor, shape (Cout,)
        Constant (no gradient flows to it).
    weight : Tensor
        As :func:`modulated_conv`; constant.
    stride : int
    transposed : bool

    Returns
    -------
    (Tensor, Tensor), each (N, Cout, D', H', W')
        ``y = conv(xp, W m r) + b`` and ``dy = conv(xt + xp a, W m r) + c b - c y``.
    """
    return _ModulatedDualConv.apply(xp, xt, m, a, r, c, bias.detach(), weight.detach(), stride, transposed)


def demodulation(weight: torch.Tensor, m: torch.Tensor, transposed: bool, eps: float) -> torch.Tensor:
    """``r = (sum_{i, taps} (W m)^2 + eps)^(-1/2)`` per output channel, shape (Cout,), differentiable in ``m``."""
    ishape, oshape = _channel_shapes(weight.dim(), transposed)
    sum_dims = [d for d in range(weight.dim()) if oshape[d] == 1]
    return torch.rsqrt((weight * m.view(ishape)).pow(2).sum(dim=sum_dims) + eps)


def modulated_conv(x: torch.Tensor, m: torch.Tensor, r: torch.Tensor, bias: torch.Tensor | None,
                   weight: torch.Tensor, stride: int, transposed: bool) -> torch.Tensor:
    """The styled convolution ``conv(x, W m r) + b`` with a constant weight and a cheap reverse mode.

    Parameters
    ----------
    x : Tensor, shape (N, Cin, D, H, W)
    m : Tensor, shape (Cin,)
        Modulation per input channel.
    r : Tensor, shape (Cout,)
        Demodulation per output channel (:func:`demodulation` of ``m``, or anything else).
    bias : Tensor, shape (Cout,), or None
    weight : Tensor
        (Cout, Cin, k, k, k), or (Cin, Cout, k, k, k) when ``transposed``; no gradient flows to it.
    stride : int
    transposed : bool
        A transposed convolution (the up-sampling layer).

    Returns
    -------
    Tensor, shape (N, Cout, D', H', W')
    """
    return _ModulatedConv.apply(x, m, r, bias, weight.detach(), stride, transposed)
