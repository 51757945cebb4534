"""A styled block (convolutions, LeakyReLUs, residual skip) as one autograd node with a written-out backward.

Plain autograd through a :class:`~emu_backend.nn.blocks.ResStyledBlock` allocates a fresh tensor for every
activation and residual sum (on a CPU, page faults that cost more than the arithmetic), saves both the pre-
and post-activation of every layer, and pads the cropped skip's gradient with zeros to the input's size
before adding it. With the weights constant (the emulator is not being trained; gradients go to the input
and the style) the block's forward runs exactly as the inference path does, in place on its own
temporaries, and the backward is written out:

- the LeakyReLU is invertible and its slope at the output has the sign of its input, so a pre-activation
  ``y`` is never kept: ``<g_y, y> = <g_z, z>`` for ``z = leaky(y)``, ``g_y = slope(z) g_z``;
- each convolution's backward is that of :mod:`~emu_backend.nn.modulated_conv` (one input-gradient
  convolution and channel sums): ``dL/dx = h m``, ``dL/dm = <h, x>``, ``dL/dr = <g, y - b> / r``, with
  ``h = conv^T(g, W r)``;
- the 1^3 skip's input gradient is computed on the cropped region only and added in place into the main
  path's input gradient.

Saved per block: the input, the activations between its convolutions, the skip's output and the block's
output (which the next block needs anyway). First-order reverse mode only; displacement only (the
velocity's dual pairs take :func:`~emu_backend.nn.modulated_conv.modulated_dual_conv` per layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .modulated_conv import channel_dot, channel_shapes, conv, input_gradient, like_layout

__all__ = ["BlockLayer", "fused_block", "fused_dual_block"]

#: PyTorch's default LeakyReLU slope, as in :mod:`.blocks`.
_SLOPE = 0.01


@dataclass(frozen=True)
class BlockLayer:
    """The constant part of one styled convolution: weight (no gradient), bias, stride, transposed."""

    weight: torch.Tensor
    bias: torch.Tensor
    stride: int
    transposed: bool

    def conv(self, x: torch.Tensor, m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``conv(x, W m r) + b`` with the folded weight formed as :func:`~.styled_conv.modulated_weight`
        forms it (the same two products: the inference path's numbers, bit for bit)."""
        ishape, oshape = channel_shapes(self.weight.dim(), self.transposed)
        w = self.weight * m.view(ishape)
        w = w * r.view(oshape)
        return conv(x, w, self.bias, self.stride, self.transposed)

    def dual_conv(self, xp: torch.Tensor, xt: torch.Tensor, m: torch.Tensor, a: torch.Tensor, r: torch.Tensor,
                  c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``y = conv(xp, W m r) + b`` and its tangent ``dy = conv(xt + xp a, W m r) + c b - c y`` (``a = dm / m``,
        ``c = dn / n``), the operations of :func:`~.modulated_conv.modulated_dual_conv`'s forward."""
        ishape, oshape = channel_shapes(self.weight.dim(), self.transposed)
        w = self.weight * m.view(ishape)
        w = w * r.view(oshape)
        y = conv(xp, w, self.bias, self.stride, self.transposed)
        dy = conv(torch.addcmul(xt, xp, a.view(1, -1, 1, 1, 1)), w, c * self.bias, self.stride, self.transposed)
        return y, dy.addcmul_(y, c.view(1, -1, 1, 1, 1), value=-1.0)

    def backward(self, g: torch.Tensor, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``h = conv^T(g, W r)``: the input gradient before the modulation, shaped like ``x``."""
        _, oshape = channel_shapes(self.weight.dim(), self.transposed)
        return input_gradient(g, x, self.weight * r.view(oshape), self.stride, self.transposed)


def _crop(x: torch.Tensor, n: int) -> torch.Tensor:
    return x if n == 0 else x[:, :, n:-n, n:-n, n:-n]


def _leaky_backward_(g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``g *= slope at z`` in place (``z`` a LeakyReLU output: its sign is its input's)."""
    return torch.ops.aten.leaky_relu_backward.grad_input(g, z, _SLOPE, False, grad_input=g)


class _FusedBlock(torch.autograd.Function):
    """``main = conv_L(act(... act(conv_1(x)))); out = act?(main + crop(skip(x)))``; see the module docstring.

    ``apply(spec, x, m_1, r_1, ..., m_L, r_L[, m_s, r_s])`` with ``spec = (main layers, skip layer or None,
    crop, last activation)``.
    """

    @staticmethod
    def forward(ctx, spec, x, *mr):
        main, skip, crop, last_act = spec
        n_main = len(main)
        z, kept = x, []
        for i, layer in enumerate(main):
            z = layer.conv(z, mr[2 * i], mr[2 * i + 1])
            if i < n_main - 1:
                F.leaky_relu_(z, _SLOPE)
                kept.append(z)
        s = None
        if skip is not None:
            s = _crop(skip.conv(x, mr[2 * n_main], mr[2 * n_main + 1]), crop)
            z.add_(s)  # as the inference path: the main path's output is this block's temporary
        if last_act:
            F.leaky_relu_(z, _SLOPE)
        ctx.spec = spec
        ctx.save_for_backward(x, *mr, *kept, *([] if s is None else [s]), z)
        return z

    @staticmethod
    @once_differentiable  # first order only: a second derivative raises instead of going wrong
    def backward(ctx, g_out):
        main, skip, crop, last_act = ctx.spec
        n_main = len(main)
        saved = ctx.saved_tensors
        n_mr = 2 * (n_main + (skip is not None))
        x, mr = saved[0], saved[1:1 + n_mr]
        kept = saved[1 + n_mr:1 + n_mr + n_main - 1]
        s = saved[-2] if skip is not None else None
        out = saved[-1]
        g_out = like_layout(g_out, out)
        grads = [None] * n_mr

        # the residual sum t = y_L + s: its gradient, and <g_t, t> without t (see the module docstring)
        if last_act:
            g_t = torch.ops.aten.leaky_relu_backward(g_out, out, _SLOPE, False)
        else:
            g_t = g_out  # not ours: never written to
        g_t_t = channel_dot(g_out, out)
        g_t_sum = g_t.sum(dim=(0, 2, 3, 4))
        g_x_skip = None
        g_y_y = g_t_t  # <g_y, y> of the last convolution (y = t - s)
        if skip is not None:
            m_s, r_s = mr[2 * n_main], mr[2 * n_main + 1]
            g_t_s = channel_dot(g_t, s)
            g_y_y = g_t_t - g_t_s
            grads[2 * n_main + 1] = (g_t_s - skip.bias * g_t_sum) / r_s
            x_in = _crop(x, crop)
            h_s = skip.backward(g_t, x_in, r_s)
            grads[2 * n_main] = channel_dot(h_s, x_in)
            g_x_skip = h_s.mul_(m_s.view(1, -1, 1, 1, 1))

        g_y, g_y_sum = g_t, g_t_sum
        g_x = None
        for i in range(n_main - 1, -1, -1):
            layer, m, r = main[i], mr[2 * i], mr[2 * i + 1]
            grads[2 * i + 1] = (g_y_y - layer.bias * g_y_sum) / r
            a = x if i == 0 else kept[i - 1]
            h = layer.backward(g_y, a, r)
            grads[2 * i] = channel_dot(h, a)
            g_a = h.mul_(m.view(1, -1, 1, 1, 1))
            if i == 0:
                g_x = g_a
                break
            g_y_y = channel_dot(g_a, a)  # <g_y, y> of the convolution before, from its activation's output
            g_y = _leaky_backward_(g_a, a)
            g_y_sum = g_y.sum(dim=(0, 2, 3, 4))
        if g_x_skip is not None:
            _crop(g_x, crop).add_(g_x_skip)
        return (None, g_x if ctx.needs_input_grad[1] else None, *grads)


def _per_channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1, 1)


class _FusedDualBlock(torch.autograd.Function):
    """:class:`_FusedBlock` for dual pairs (value, tangent): the velocity's forward mode.

    Each layer is the folded dual convolution of :func:`~.modulated_conv.modulated_dual_conv` (parameters
    ``m, a, r, c`` per layer), the activation ``z = leaky(y), dz = slope(y) dy`` and the residual sum of
    both parts, all in place as the inference path runs them. Backward: the activation scales both
    cotangents by the slope; as ``y = z / slope`` and ``dy = dz / slope``, the channel sums
    ``<g_y, y>, <g_dy, dy>, <g_dy, y>`` that the layer's parameters need are ``<g_z, z>, <g_dz, dz>,
    <g_dz, z>``; with ``h1 = conv^T(g_y - c g_dy, W r)`` and ``h2 = conv^T(g_dy, W r)``::

        dL/dxp = h1 m + h2 m a        dL/dxt = h2 m
        dL/dm  = <h1, xp> + <h2, xt> + a <h2, xp>        dL/da = m <h2, xp>
        dL/dr  = (<g_y, y - b> + <g_dy, dy>) / r          dL/dc = b sum(g_dy) - <g_dy, y>

    ``apply(spec, x, dx, m_1, a_1, r_1, c_1, ..., [m_s, a_s, r_s, c_s])``.
    """

    @staticmethod
    def forward(ctx, spec, x, dx, *params):
        main, skip, crop, last_act = spec
        n_main = len(main)
        z, dz, kept = x, dx, []
        for i, layer in enumerate(main):
            z, dz = layer.dual_conv(z, dz, *params[4 * i:4 * i + 4])
            if i < n_main - 1:
                _leaky_backward_(dz, z)  # the tangent's slope from the pre-activation, then the value
                F.leaky_relu_(z, _SLOPE)
                kept += [z, dz]
        saved_skip = []
        if skip is not None:
            s, ds = skip.dual_conv(x, dx, *params[4 * n_main:4 * n_main + 4])
            s, ds = _crop(s, crop), _crop(ds, crop)
            z.add_(s)
            dz.add_(ds)
            saved_skip = [s, ds]
        if last_act:
            _leaky_backward_(dz, z)
            F.leaky_relu_(z, _SLOPE)
        ctx.spec = spec
        ctx.save_for_backward(x, dx, *params, *kept, *saved_skip, z, dz)
        return z, dz

    @staticmethod
    @once_differentiable  # first order only: a second derivative raises instead of going wrong
    def backward(ctx, g_out, g_dout):
        main, skip, crop, last_act = ctx.spec
        n_main = len(main)
        saved = ctx.saved_tensors
        n_par = 4 * (n_main + (skip is not None))
        x, dx, params = saved[0], saved[1], saved[2:2 + n_par]
        kept = saved[2 + n_par:2 + n_par + 2 * (n_main - 1)]
        out, dout = saved[-2], saved[-1]
        g_out, g_dout = like_layout(g_out, out), like_layout(g_dout, dout)
        grads = [None] * n_par

        # channel sums of the last convolution's (y, dy) = (t - s, dt - ds), from the block's output
        gy_y, gdy_dy, gdy_y = channel_dot(g_out, out), channel_dot(g_dout, dout), channel_dot(g_dout, out)
        if last_act:
            g_y = torch.ops.aten.leaky_relu_backward(g_out, out, _SLOPE, False)
            g_dy = torch.ops.aten.leaky_relu_backward(g_dout, out, _SLOPE, False)
        else:
            g_y, g_dy = g_out.clone(), g_dout.clone()  # written to below
        g_x_skip = None
        if skip is not None:
            s, ds = saved[-4], saved[-3]
            gt_s, gdt_ds, gdt_s = channel_dot(g_y, s), channel_dot(g_dy, ds), channel_dot(g_dy, s)
            gy_y, gdy_dy, gdy_y = gy_y - gt_s, gdy_dy - gdt_ds, gdy_y - gdt_s
            x_in, dx_in = _crop(x, crop), _crop(dx, crop)
            g_x_skip = _dual_layer_backward(skip, params[4 * n_main:4 * n_main + 4], grads, 4 * n_main,
                                            torch.addcmul(g_y, g_dy, _per_channel(params[4 * n_main + 3]),
                                                          value=-1.0),
                                            g_y.sum(dim=(0, 2, 3, 4)), g_dy, x_in, dx_in,
                                            (gt_s, gdt_ds, gdt_s))
        for i in range(n_main - 1, -1, -1):
            layer, par = main[i], params[4 * i:4 * i + 4]
            a_p, a_t = (x, dx) if i == 0 else (kept[2 * i - 2], kept[2 * i - 1])
            g_sum = g_y.sum(dim=(0, 2, 3, 4))
            g_xp, g_xt = _dual_layer_backward(layer, par, grads, 4 * i,
                                              g_y.addcmul_(g_dy, _per_channel(par[3]), value=-1.0), g_sum, g_dy,
                                              a_p, a_t, (gy_y, gdy_dy, gdy_y))
            if i == 0:
                break
            gy_y, gdy_dy, gdy_y = channel_dot(g_xp, a_p), channel_dot(g_xt, a_t), channel_dot(g_xt, a_p)
            g_y, g_dy = _leaky_backward_(g_xp, a_p), _leaky_backward_(g_xt, a_p)
        if g_x_skip is not None:
            _crop(g_xp, crop).add_(g_x_skip[0])
            _crop(g_xt, crop).add_(g_x_skip[1])
        return (None, g_xp, g_xt, *grads)


def _dual_layer_backward(layer: BlockLayer, par, grads: list, at: int, g_eff: torch.Tensor, g_sum: torch.Tensor,
                         g_dy: torch.Tensor, xp: torch.Tensor, xt: torch.Tensor, sums) -> tuple[torch.Tensor, ...]:
    """One dual convolution's backward (see :class:`_FusedDualBlock`): fills ``grads[at:at + 4]`` (m, a, r, c)
    and returns the input cotangents ``(dL/dxp, dL/dxt)``. ``g_eff = g_y - c g_dy`` (consumed), ``g_sum`` the
    sum of ``g_y`` per channel, ``sums = (<g_y, y>, <g_dy, dy>, <g_dy, y>)``."""
    m, a, r, c = par
    gy_y, gdy_dy, gdy_y = sums
    gdy_sum = g_dy.sum(dim=(0, 2, 3, 4))
    grads[at + 2] = (gy_y - layer.bias * g_sum + gdy_dy) / r
    grads[at + 3] = layer.bias * gdy_sum - gdy_y
    h1 = layer.backward(g_eff, xp, r)
    h2 = layer.backward(g_dy, xp, r)
    h2_xp = channel_dot(h2, xp)
    grads[at] = channel_dot(h1, xp) + channel_dot(h2, xt) + a * h2_xp
    grads[at + 1] = m * h2_xp
    g_xp = h1.mul_(_per_channel(m)).addcmul_(h2, _per_channel(m * a))
    return g_xp, h2.mul_(_per_channel(m))


def fused_block(main: list[BlockLayer], mr: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor,
                skip: BlockLayer | None = None, skip_mr: tuple[torch.Tensor, torch.Tensor] | None = None,
                crop: int = 0, last_act: bool = True) -> torch.Tensor:
    """A styled block with constant weights, differentiable in its input and in every layer's (m, r).

    Parameters
    ----------
    main : list of BlockLayer
        The main path's convolutions; a LeakyReLU follows each but the last.
    mr : list of (Tensor (Cin,), Tensor (Cout,))
        Each main layer's modulation ``m`` and demodulation ``r`` (carry gradients to the style).
    x : Tensor, shape (N, Cin, D, H, W)
    skip : BlockLayer, optional
        A 1^3 convolution of ``x`` whose output, cropped by ``crop`` cells per side, is added to the main
        path's output.
    skip_mr : (Tensor, Tensor), optional
        The skip's ``m`` and ``r``.
    crop : int
    last_act : bool
        A LeakyReLU after the sum.

    Returns
    -------
    Tensor, shape (N, Cout, D', H', W')
        The inference path's output, bit for bit.
    """
    flat = [t for pair in mr for t in pair] + (list(skip_mr) if skip is not None else [])
    return _FusedBlock.apply((tuple(main), skip, crop, last_act), x, *flat)


def fused_dual_block(main: list[BlockLayer], params: list[tuple[torch.Tensor, ...]], x: torch.Tensor,
                     dx: torch.Tensor, skip: BlockLayer | None = None, skip_params: tuple[torch.Tensor, ...] | None = None,
                     crop: int = 0, last_act: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fused_block` on a dual pair: the block's output and its tangent.

    Parameters
    ----------
    main, skip, crop, last_act
        As :func:`fused_block`.
    params : list of (m, a, r, c)
        Per main layer: the modulation ``m`` and ``a = dm / m`` (Cin,), the demodulation ``r`` and
        ``c = dn / n`` (Cout,), all differentiable.
    x, dx : Tensor, shape (N, Cin, D, H, W)
        The input and its tangent.
    skip_params : (m, a, r, c), optional

    Returns
    -------
    (Tensor, Tensor)
        The inference path's output and tangent, bit for bit.
    """
    flat = [t for p in params for t in p] + (list(skip_params) if skip is not None else [])
    return _FusedDualBlock.apply((tuple(main), skip, crop, last_act), x, dx, *flat)
