"""The styled block as one autograd node with a written-out backward (emu_backend.nn.fused_block).

References, independent of the hand-written backward: torch autograd through the same block with weights
that require grad (the training path: plain ops, the folded weight differentiated as a whole), central
finite differences (``torch.autograd.gradcheck``) and, for the forward, the inference path (autograd off,
in-place activations).

Tolerances: the same sums in another order, float64: 1e-11 relative; gradcheck's defaults (eps 1e-6,
atol 1e-5, rtol 1e-3) bound the finite difference's truncation and round-off at float64; the forward is
the inference path's operations on the same operands, so equal bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from emu_backend.nn import Dual, StyledConv3d, StyledVNet
from emu_backend.nn.blocks import ConvStyledBlock, ResStyledBlock

F64 = torch.float64
#: (block class, arguments after style size, input size): every block kind of the published network
BLOCKS = {
    "CACA": (ResStyledBlock, (3, 4, "CACA"), 10),
    "CAC": (ResStyledBlock, (4, 3, "CAC"), 10),
    "DA": (ConvStyledBlock, (4, 4, "DA"), 8),
    "UA": (ConvStyledBlock, (4, 4, "UA"), 5),
}


def _block(kind: str, dtype=F64, seed: int = 0, n: int | None = None, batch: int = 2):
    cls, args, n_default = BLOCKS[kind]
    n = n or n_default
    torch.manual_seed(seed)
    block = cls(2, *args).to(dtype)
    with torch.no_grad():
        for layer in block.modules():
            if isinstance(layer, StyledConv3d):
                layer.bias.normal_()  # non-zero biases: their terms in dL/dr are exercised
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, args[0], n, n, n, dtype=dtype, generator=g)
    style = torch.randn(2, dtype=dtype, generator=g)
    return block, x, style


def _grads(block, x, style, cotangent_seed: int = 3, frozen: bool = True):
    block.requires_grad_(not frozen)
    xs, ss = x.clone().requires_grad_(), style.clone().requires_grad_()
    out = block(xs, ss)
    g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(cotangent_seed))
    return out, torch.autograd.grad((g * out).sum(), (xs, ss))


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_fused_block_gradient_equals_autograd(kind):
    block, x, style = _block(kind)
    out, fused = _grads(block, x, style, frozen=True)
    assert type(out.grad_fn).__name__ == "_FusedBlockBackward"
    ref_out, ref = _grads(block, x, style, frozen=False)
    assert "Fused" not in type(ref_out.grad_fn).__name__  # weights that require grad: plain autograd
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=0)
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12 * float(b.abs().max()))


@pytest.mark.parametrize("kind", ["CACA", "UA"])
def test_fused_block_passes_gradcheck(kind):
    block, x, style = _block(kind, n=BLOCKS[kind][2] - 2 if kind == "CACA" else None, batch=1)
    block.requires_grad_(False)
    assert torch.autograd.gradcheck(lambda xx, ss: block(xx, ss), (x.requires_grad_(), style.requires_grad_()))


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_fused_block_forward_is_the_inference_path_bit_for_bit(kind):
    """float32, channels-last as the emulator runs: the recorded forward and the inference forward agree."""
    block, x, style = _block(kind, dtype=torch.float32)
    block.requires_grad_(False)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        ref = block(x.clone(), style)
    out = block(x.clone().requires_grad_(), style.clone().requires_grad_())
    assert type(out.grad_fn).__name__ == "_FusedBlockBackward"
    assert torch.equal(out, ref)


TANGENT = torch.tensor([0.0, 1.0], dtype=F64)  # d style / dD of the zdep style


def _dual_grads(block, x, style, frozen: bool = True):
    """Output pair and the gradients of <g, out> + <g', dout> w.r.t. the input, its tangent and the style."""
    block.requires_grad_(not frozen)
    xs, dxs, ss = (t.clone().requires_grad_() for t in (x, 0.5 * x.flip(2), style))
    out = block(Dual(xs, dxs), Dual(ss, TANGENT))
    g = torch.Generator().manual_seed(5)
    loss = sum((torch.randn(o.shape, dtype=o.dtype, generator=g) * o).sum() for o in out)
    return out, torch.autograd.grad(loss, (xs, dxs, ss))


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_fused_dual_block_gradient_equals_autograd(kind):
    block, x, style = _block(kind)
    out, fused = _dual_grads(block, x, style, frozen=True)
    assert type(out.primal.grad_fn).__name__ == "_FusedDualBlockBackward"
    ref_out, ref = _dual_grads(block, x, style, frozen=False)
    assert "Fused" not in type(ref_out.primal.grad_fn).__name__
    for a, b in zip(out, ref_out):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12 * float(b.abs().max()))


def test_fused_dual_block_passes_gradcheck():
    block, x, style = _block("CACA", n=7, batch=1)
    block.requires_grad_(False)

    def f(xx, dxx, ss):
        return tuple(block(Dual(xx, dxx), Dual(ss, TANGENT)))

    assert torch.autograd.gradcheck(f, (x.requires_grad_(), (0.5 * x).detach().requires_grad_(),
                                        style.requires_grad_()))


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_fused_dual_block_forward_is_the_inference_path_bit_for_bit(kind):
    block, x, style = _block(kind, dtype=torch.float32)
    block.requires_grad_(False)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    tangent = TANGENT.float()
    with torch.no_grad():
        ref = block(Dual(x.clone(), x.flip(2).contiguous(memory_format=torch.channels_last_3d)), Dual(style, tangent))
    out = block(Dual(x.clone().requires_grad_(), x.flip(2).contiguous(memory_format=torch.channels_last_3d)),
                Dual(style.clone().requires_grad_(), tangent))
    assert type(out.primal.grad_fn).__name__ == "_FusedDualBlockBackward"
    assert torch.equal(out.primal, ref.primal) and torch.equal(out.tangent, ref.tangent)


def test_unfoldable_tangents_and_per_sample_styles_are_not_fused():
    """A modulation below 1e-3 needs the general tangent (layer by layer); (N, S) styles a grouped convolution."""
    block, x, style = _block("CACA")
    block.requires_grad_(False)
    with torch.no_grad():
        block.convs[2].style_bias.zero_()
        block.convs[2].style_weight.zero_()  # m = 0 on every channel of the second convolution
    out = block(Dual(x.requires_grad_(), x * 0.5), Dual(style.requires_grad_(), TANGENT))
    assert "Fused" not in type(out.primal.grad_fn).__name__
    out = block(x, torch.stack([style, style]))
    assert "Fused" not in type(out.grad_fn).__name__


@pytest.mark.slow
def test_network_displacement_gradient_with_constant_weights_equals_autograd():
    """The whole StyledVNet (width 4, float64, displacement): fused blocks against plain autograd (slow tier;
    the default tier's finite-difference checks in tests/test_differentiable.py go through the same network)."""
    torch.manual_seed(0)
    net = StyledVNet(2, width=4).to(F64)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 3, 104, 104, 104, dtype=F64, generator=g)
    style = torch.tensor([0.1, -0.2], dtype=F64)
    w = torch.randn(1, 3, 8, 8, 8, dtype=F64, generator=g)
    grads = []
    for frozen in (False, True):
        net.requires_grad_(not frozen)
        xs, ss = x.clone().requires_grad_(), style.clone().requires_grad_()
        grads.append(torch.autograd.grad((w * net(xs, ss)).sum(), (xs, ss)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12 * float(b.abs().max()))


def test_crop_gradient_keeps_the_activation_layout():
    """The V-net's crops pad their cotangent in the input's layout (autograd's slice would make it
    contiguous): a channels-last activation gets a channels-last gradient, with the cotangent in the centre."""
    from emu_backend.nn.blocks import narrow_by

    x = torch.randn(1, 4, 9, 9, 9, dtype=F64).contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    g = torch.randn(1, 4, 5, 5, 5, dtype=F64)
    (grad,) = torch.autograd.grad((narrow_by(x, 2) * g).sum(), x)
    assert grad.is_contiguous(memory_format=torch.channels_last_3d)
    ref = torch.zeros(1, 4, 9, 9, 9, dtype=F64)
    ref[:, :, 2:-2, 2:-2, 2:-2] = g
    assert torch.equal(grad, ref)


def test_second_derivatives_are_refused_not_wrong():
    """The written-out backward is first order: differentiating it again raises."""
    block, x, style = _block("CACA")
    block.requires_grad_(False)
    xs = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(block(xs, style).square().sum(), xs, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()
