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
from torch.autograd.function import once_differentiable

__all__ = ["channel_dot", "channel_shapes", "conv", "demodulation", "input_gradient", "like_layout", "modulated_conv",
           "modulated_dual_conv"]

#: PyTorch's CPU dispatch gives a float32 convolution of batch 1 its native kernel (``slow_conv3d``) when
#: ``N * C * D * H`` of the input is at most this (ATen's ConvUtils heuristic, "native is faster" for small
#: 2-d images): for the network's small activations (a periodic box's lower levels) oneDNN is ~20x faster
#: (a width-8 36^3 activation: 1.1 ms against 22.5 ms on machine B).
_NATIVE_MAX = 20480


def _small_onednn(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether a float32 CPU convolution of ``x`` would take the native kernel where oneDNN can run it."""
    # is_compiling() first: under torch.compile it folds to True and ends the test before
    # torch.backends.mkldnn.is_available(), which Dynamo does not trace (a graph break at every convolution,
    # so the compiled network fell apart into one graph per layer, recompiled per level until Dynamo's
    # recompile limit sent the rest back to eager)
    return (not torch.compiler.is_compiling()
            and x.device.type == "cpu" and x.dtype == torch.float32 and w.dtype == torch.float32 and x.dim() == 5
            and x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3] <= _NATIVE_MAX
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and not torch.is_autocast_enabled("cpu")
            # oneDNN's op has no forward-mode derivative and no batching rule: jvp, vmap and dual levels
            # take PyTorch's own dispatch
            and not torch._C._are_functorch_transforms_active() and torch.autograd.forward_ad._current_level < 0)


def conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, stride: int, transposed: bool) -> torch.Tensor:
    """``F.conv3d`` (or ``F.conv_transpose3d``) of every styled convolution, with small float32 CPU inputs
    sent to oneDNN (:data:`_NATIVE_MAX`); elsewhere the same kernel PyTorch picks, so the same bits."""
    if not transposed and _small_onednn(x, w):
        return torch.ops.aten.mkldnn_convolution(x, w, bias, [0] * 3, [stride] * 3, [1] * 3, 1)
    op = F.conv_transpose3d if transposed else F.conv3d
    return op(x, w, bias, stride=stride)


def channel_shapes(ndim: int, transposed: bool) -> tuple[list[int], list[int]]:
    """View shapes that put a per-input-channel / per-output-channel vector on the weight's axes."""
    in_dim = 0 if transposed else 1
    ishape, oshape = [1] * ndim, [1] * ndim
    ishape[in_dim], oshape[1 - in_dim] = -1, -1
    return ishape, oshape


#: Elements per chunk of :func:`channel_dot`'s product (4 MiB in float32: it stays in cache).
_DOT_CHUNK = 1 << 20


def channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_{n, space} a * b`` per channel of two (N, C, D, H, W) tensors of one layout, shape (C,).

    The product is formed a slab of ``D`` planes at a time in one reused buffer of ~:data:`_DOT_CHUNK`
    elements and reduced at once: no activation-sized temporary (fresh CPU allocations of that size cost
    page faults) and no layout copy (``torch.einsum`` of channels-last tensors copied both operands, 18x
    slower at a width-64 104^3 activation).
    """
    depth = a.shape[2]
    plane = max(1, a[:, :, :1].numel())
    step = max(1, min(depth, _DOT_CHUNK // plane))
    buf = torch.empty_like(a[:, :, :step])
    out = None
    for start in range(0, depth, step):
        stop = min(depth, start + step)
        part = torch.mul(a[:, :, start:stop], b[:, :, start:stop], out=buf[:, :, :stop - start])
        s = part.sum(dim=(0, 2, 3, 4))
        out = s if out is None else out.add_(s)
    return out


class _ModulatedConv(torch.autograd.Function):
    """``conv(x, W m r) + b`` with the reverse mode of the module docstring (``W`` constant)."""

    @staticmethod
    def forward(ctx, x, m, r, bias, weight, stride: int, transposed: bool):
        ishape, oshape = channel_shapes(weight.dim(), transposed)
        w = weight * m.view(ishape)
        w = w * r.view(oshape)  # the same two products as modulated_weight(): the forward is bit-identical
        y = conv(x, w, bias, stride, transposed)
        ctx.stride, ctx.transposed = stride, transposed
        ctx.save_for_backward(x, m, r, bias, weight, y)
        return y

    @staticmethod
    @once_differentiable  # first order only: a second derivative raises instead of going wrong
    def backward(ctx, g):
        x, m, r, bias, weight, y = ctx.saved_tensors
        g = like_layout(g, y)
        need_x, need_m, need_r, need_b = ctx.needs_input_grad[:4]
        if ctx.needs_input_grad[4]:
            raise RuntimeError("modulated_conv treats the weight as constant; use the styled convolution's "
                               "autograd path to train it")
        ishape, oshape = channel_shapes(weight.dim(), ctx.transposed)
        g_x = g_m = g_r = g_b = None
        if need_x or need_m:
            h = input_gradient(g, x, weight * r.view(oshape), ctx.stride, ctx.transposed)
            if need_m:
                g_m = channel_dot(h, x)
            if need_x:
                g_x = h.mul_(m.view(1, -1, 1, 1, 1))
        if need_r or need_b:
            g_sum = g.sum(dim=(0, 2, 3, 4))
            if need_b:
                g_b = g_sum
            if need_r:
                g_yb = channel_dot(g, y)
                if bias is not None:
                    g_yb = g_yb - g_sum * bias
                g_r = g_yb / r
        return g_x, g_m, g_r, g_b, None, None, None


def like_layout(g: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``g`` in ``ref``'s memory layout (channels-last or contiguous), copied only where it differs.

    Autograd hands a backward the cotangent in whatever layout the op after it produced (a crop's backward
    makes a contiguous zero tensor): a channels-last activation's cotangent can arrive contiguous, and
    oneDNN's convolutions and the channel sums are slow on mixed layouts.
    """
    cl = torch.channels_last_3d
    if g.dim() == 5 and ref.is_contiguous(memory_format=cl) and not ref.is_contiguous():
        return g.contiguous(memory_format=cl)
    return g.contiguous()


def input_gradient(g: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: int,
                    transposed: bool) -> torch.Tensor:
    """The input-gradient convolution: the adjoint of ``x -> conv(x, weight)`` applied to ``g``.

    A 1^3 kernel's adjoint is the 1^3 convolution with the channel axes swapped, run as a forward
    convolution (``convolution_backward`` would first copy a non-contiguous ``x``, e.g. a crop, although it
    needs only its shape).
    """
    if weight.shape[2:] == (1, 1, 1) and stride == 1 and not transposed:
        return conv(g, weight.transpose(0, 1), None, 1, False)
    k = weight.shape[2]
    if stride == 1 and not transposed and _small_onednn(g, weight):
        # the adjoint of a valid k^3 convolution: the full convolution with the flipped, channel-swapped
        # kernel, in oneDNN (convolution_backward would take the native kernel at this size, ~20x slower)
        cl = torch.channels_last_3d if g.is_contiguous(memory_format=torch.channels_last_3d) else torch.contiguous_format
        w_adj = weight.transpose(0, 1).flip(2, 3, 4).contiguous(memory_format=cl)
        return torch.ops.aten.mkldnn_convolution(g, w_adj, None, [k - 1] * 3, [1] * 3, [1] * 3, 1)
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
        ishape, oshape = channel_shapes(weight.dim(), transposed)
        w = weight * m.view(ishape)
        w = w * r.view(oshape)
        y = conv(xp, w, bias, stride, transposed)
        u = torch.addcmul(xt, xp, a.view(1, -1, 1, 1, 1))
        dy = conv(u, w, c * bias, stride, transposed)
        dy.addcmul_(y, c.view(1, -1, 1, 1, 1), value=-1.0)
        ctx.stride, ctx.transposed = stride, transposed
        ctx.save_for_backward(xp, xt, m, a, r, c, bias, weight, y, dy)
        return y, dy

    @staticmethod
    @once_differentiable  # first order only: a second derivative raises instead of going wrong
    def backward(ctx, gy, gdy):
        xp, xt, m, a, r, c, bias, weight, y, dy = ctx.saved_tensors
        gy, gdy = like_layout(gy, y), like_layout(gdy, dy)
        if any(ctx.needs_input_grad[6:8]):
            raise RuntimeError("modulated_dual_conv treats the weight and bias as constant")
        _, oshape = channel_shapes(weight.dim(), ctx.transposed)
        wr = weight * r.view(oshape)
        cv = c.view(1, -1, 1, 1, 1)
        h1 = input_gradient(torch.addcmul(gy, gdy, cv, value=-1.0), xp, wr, ctx.stride, ctx.transposed)
        h2 = input_gradient(gdy, xp, wr, ctx.stride, ctx.transposed)
        h2_xp = channel_dot(h2, xp)
        g_m = channel_dot(h1, xp) + channel_dot(h2, xt) + a * h2_xp
        g_a = m * h2_xp
        gy_y, gdy_y = channel_dot(gy, y), channel_dot(gdy, y)
        gy_sum, gdy_sum = gy.sum(dim=(0, 2, 3, 4)), gdy.sum(dim=(0, 2, 3, 4))
        g_r = (gy_y - bias * gy_sum + channel_dot(gdy, dy)) / r
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
    ishape, oshape = channel_shapes(weight.dim(), transposed)
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
