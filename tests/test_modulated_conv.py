"""The hand-derived reverse mode of the styled convolution with constant weights (emu_backend.nn.modulated_conv).

References, independent of the hand-written backward: torch autograd through the folded weight
(``F.conv3d(x, modulated_weight(...))``, the training path, whose weight-gradient convolution the new
backward replaces by channel reductions) and central finite differences (``torch.autograd.gradcheck``).

Tolerances: the same sums in another order, float64: 1e-12 relative; gradcheck's defaults (eps 1e-6,
atol 1e-5, rtol 1e-3) bound the finite difference's truncation and round-off at float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emu_backend.nn import Dual, StyledConv3d, StyledVNet
from emu_backend.nn.modulated_conv import demodulation, modulated_conv, modulated_dual_conv
from emu_backend.nn.styled_conv import DEMOD_EPS

F64 = torch.float64
KINDS = ["conv", "skip", "down", "up"]


def _layer(kind: str, cin: int = 3, cout: int = 4, seed: int = 0) -> StyledConv3d:
    torch.manual_seed(seed)
    layer = StyledConv3d(2, cin, cout, kind).to(F64)
    with torch.no_grad():
        layer.bias.normal_()  # a non-zero bias: its terms in dL/dr and dL/dc are exercised
    return layer


def _inputs(layer: StyledConv3d, n: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, layer.in_chan, n, n, n, dtype=F64, generator=g)
    xt = torch.randn(2, layer.in_chan, n, n, n, dtype=F64, generator=g)
    style = torch.randn(2, dtype=F64, generator=g)
    dstyle = torch.randn(2, dtype=F64, generator=g)
    return x, xt, style, dstyle


def _reference(layer: StyledConv3d, x, xt, style, dstyle):
    """(y, dy) by autograd-differentiable plain ops: the folded weight and its exact tangent by jvp."""
    op = F.conv_transpose3d if layer.transposed else F.conv3d

    def y_of(xx, s):
        return op(xx, layer.folded_weight(s), layer.bias, stride=layer.stride)

    y = y_of(x, style)
    # the tangent as a directional derivative written with autograd-differentiable ops (double backward)
    _, dy = torch.autograd.functional.jvp(y_of, (x, style), (xt, dstyle), create_graph=True)
    return y, dy


@pytest.mark.parametrize("kind", KINDS)
def test_modulated_conv_gradient_equals_autograd_of_the_folded_weight(kind):
    layer = _layer(kind)
    x, _, style, _ = _inputs(layer)
    g = torch.randn_like(layer(x, style))
    ref_in = [x.clone().requires_grad_(), style.clone().requires_grad_()]
    (g_ref_x, g_ref_s) = torch.autograd.grad((g * layer(*ref_in)).sum(), ref_in)  # weights require grad: autograd
    layer.requires_grad_(False)
    new_in = [x.clone().requires_grad_(), style.clone().requires_grad_()]
    y_new = layer(*new_in)
    assert y_new.grad_fn is not None and "ModulatedConv" in type(y_new.grad_fn).__name__
    with torch.no_grad():  # the forward is the inference path's, bit for bit
        assert torch.equal(y_new.detach(), layer(x, style))
    (g_x, g_s) = torch.autograd.grad((g * y_new).sum(), new_in)
    torch.testing.assert_close(g_x, g_ref_x, rtol=1e-12, atol=1e-13 * float(g_ref_x.abs().max()))
    torch.testing.assert_close(g_s, g_ref_s, rtol=1e-12, atol=1e-13 * float(g_ref_s.abs().max()))


@pytest.mark.parametrize("kind", KINDS)
def test_modulated_conv_passes_gradcheck(kind):
    layer = _layer(kind, cin=2, cout=3)
    x, _, style, _ = _inputs(layer, n=4)
    m = (style @ layer.style_weight.T + layer.style_bias).detach().requires_grad_()
    xr = x[:1].clone().requires_grad_()

    def f(xx, mm):
        r = demodulation(layer.weight.detach(), mm, layer.transposed, DEMOD_EPS)
        return modulated_conv(xx, mm, r, layer.bias.detach(), layer.weight, layer.stride, layer.transposed)

    assert torch.autograd.gradcheck(f, (xr, m))


@pytest.mark.parametrize("kind", KINDS)
def test_modulated_dual_conv_gradient_equals_autograd_of_the_tangent(kind):
    layer = _layer(kind)
    x, xt, style, dstyle = _inputs(layer)
    gy, gdy = torch.randn_like(layer(x, style)), torch.randn_like(layer(x, style))
    leaves = [t.clone().requires_grad_() for t in (x, xt, style, dstyle)]
    y, dy = _reference(layer, *leaves)
    ref = torch.autograd.grad((gy * y).sum() + (gdy * dy).sum(), leaves)
    layer.requires_grad_(False)
    leaves = [t.clone().requires_grad_() for t in (x, xt, style, dstyle)]
    out = layer(Dual(leaves[0], leaves[1]), Dual(leaves[2], leaves[3]))
    assert "ModulatedDualConv" in type(out.primal.grad_fn).__name__
    with torch.no_grad():  # the same forward as the inference path, bit for bit
        plain = layer(Dual(x, xt), Dual(style, dstyle))
    assert torch.equal(out.primal.detach(), plain.primal) and torch.equal(out.tangent.detach(), plain.tangent)
    # and the tangent is the true directional derivative (float64 round-off)
    torch.testing.assert_close(out.tangent.detach(), dy.detach(), rtol=1e-11, atol=1e-12)
    got = torch.autograd.grad((gy * out.primal).sum() + (gdy * out.tangent).sum(), leaves)
    for name, a, b in zip(("x", "x tangent", "style", "style tangent"), got, ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12 * float(b.abs().max()), msg=name)


@pytest.mark.parametrize("kind", ["conv", "up"])
def test_modulated_dual_conv_passes_gradcheck(kind):
    layer = _layer(kind, cin=2, cout=3)
    x, xt, style, dstyle = _inputs(layer, n=4)
    w = layer.weight.detach()
    m0 = (style @ layer.style_weight.T + layer.style_bias).detach()
    a0 = ((dstyle @ layer.style_weight.T) / m0).detach()
    c0 = torch.randn(3, dtype=F64, generator=torch.Generator().manual_seed(3))
    leaves = [t.clone().requires_grad_() for t in (x[:1], xt[:1], m0, a0, c0)]

    def f(xp, xtt, m, a, c):
        r = demodulation(w, m, layer.transposed, DEMOD_EPS)
        return modulated_dual_conv(xp, xtt, m, a, r, c, layer.bias, w, layer.stride, layer.transposed)

    assert torch.autograd.gradcheck(f, leaves)


def test_weights_that_require_grad_take_the_training_path():
    """Training needs the weight gradients: a layer whose weights require grad never takes the shortcut."""
    layer = _layer("conv")
    x, xt, style, dstyle = _inputs(layer)
    y = layer(x.requires_grad_(), style)
    assert "ModulatedConv" not in type(y.grad_fn).__name__
    y.sum().backward()
    assert layer.weight.grad is not None and layer.style_weight.grad is not None
    out = layer(Dual(x, xt), Dual(style, dstyle))
    assert "ModulatedDualConv" not in type(out.tangent.grad_fn).__name__


@pytest.mark.slow
def test_network_gradient_with_constant_weights_equals_autograd():
    """The whole StyledVNet (dual, width 4, float64): the shortcut backward against plain autograd (slow tier:
    ~40 s; the default tier's finite-difference checks in tests/test_differentiable.py go through the same
    composed network)."""
    torch.manual_seed(0)
    net = StyledVNet(2, width=4).to(F64)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 3, 104, 104, 104, dtype=F64, generator=g)
    style = torch.tensor([0.1, -0.2], dtype=F64)
    tangent = torch.tensor([0.0, 1.0], dtype=F64)
    w = torch.randn(2, 1, 3, 8, 8, 8, dtype=F64, generator=g)
    grads = []
    for frozen in (False, True):
        net.requires_grad_(not frozen)
        xs, ss = x.clone().requires_grad_(), style.clone().requires_grad_()
        out = net(Dual(xs, xs * 0.5), Dual(ss, tangent))
        grads.append(torch.autograd.grad((w[0] * out.primal).sum() + (w[1] * out.tangent).sum(), (xs, ss)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12 * float(b.abs().max()))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
@pytest.mark.parametrize("shape", [(2, 5, 7, 6, 9), (1, 64, 40, 33, 31)])
def test_channel_dot_equals_the_plain_product_sum(layout, shape, monkeypatch):
    """The slab-wise channel sum against ``(a * b).sum`` (float64, 1e-12: the same products summed in
    another order), with slabs of one plane and of several, in both memory layouts."""
    from emu_backend.nn import modulated_conv

    g = torch.Generator().manual_seed(0)
    a = torch.randn(shape, dtype=F64, generator=g).contiguous(memory_format=layout)
    b = torch.randn(shape, dtype=F64, generator=g).contiguous(memory_format=layout)
    ref = (a * b).sum(dim=(0, 2, 3, 4))
    for chunk in (1, 3 * a[:, :, :1].numel() + 1, 1 << 20):
        monkeypatch.setattr(modulated_conv, "_DOT_CHUNK", chunk)
        torch.testing.assert_close(modulated_conv.channel_dot(a, b), ref, rtol=1e-12, atol=1e-12)
