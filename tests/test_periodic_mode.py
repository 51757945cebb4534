"""The network's periodic mode (``StyledVNet.forward(..., periodic=True)``) and the oneDNN dispatch of
small float32 convolutions (``emu_backend.nn.modulated_conv.conv``).

The reference of periodic mode is the network's published evaluation of a periodic box: the valid
(cropping) network on the box read periodically with its 48-cell halo (``periodic_gather``), one tile per
box or the package's tiles (``emulate_box(..., periodic=False)``). In float64 the two compute the same
sums on the same cells, so they agree to float64 round-off (measured 9e-16 of the output's maximum; asked
1e-12). Gradients: the same, against the tiled path's gradients and against central finite differences
(tests/test_differentiable.py's tolerance, 1e-5 relative, set by LeakyReLU kinks inside the step).

The oneDNN dispatch changes the summation order of a float32 convolution, so it is compared with PyTorch's
own kernel at float32 round-off: 1e-5 of the output's maximum (a 3^3 x 8-channel sum of O(1) terms, 216
terms at 6e-8 each, bounded by ~1.3e-5 and typically ~1e-6).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emu_backend.cosmology import growth_factor
from emu_backend.differentiable import ForwardModel
from emu_backend.differentiable.tiles import emulate_box, periodic_gather
from emu_backend.errors import InputError
from emu_backend.inference import Emulator, ZdepConvention
from emu_backend.nn import CROP, Dual, StyledVNet
from emu_backend.nn.modulated_conv import _NATIVE_MAX, conv, input_gradient

F64 = torch.float64
CELL = 1000.0 / 512


@pytest.fixture(scope="module")
def net64():
    torch.manual_seed(0)
    return StyledVNet(2, width=4).double().eval()


def _halo_reference(net, x, style):
    """The valid network on the box read periodically with its halo: output n^3 of an (n + 96)^3 input."""
    n = (x.primal if isinstance(x, Dual) else x).shape[-1]
    if isinstance(x, Dual):
        big = Dual(*(periodic_gather(t, (-CROP,) * 3, (n + 2 * CROP,) * 3)[None] for t in x))
    else:
        big = periodic_gather(x, (-CROP,) * 3, (n + 2 * CROP,) * 3)[None]
    return net(big, style)


@pytest.mark.parametrize("n", [8, 16, 24])
def test_periodic_mode_equals_the_network_on_the_box_with_its_halo(net64, n):
    x = torch.from_numpy(np.random.default_rng(n).normal(size=(3, n, n, n)))
    style = torch.tensor([0.2, -0.3], dtype=F64)
    with torch.no_grad():
        ref = _halo_reference(net64, x, style)[0]
        out = net64(x[None], style, periodic=True)[0]
    assert out.shape == (3, n, n, n)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=0, atol=1e-12 * float(ref.abs().max()))


def test_periodic_mode_dual_pair_equals_the_halo_reference(net64):
    n = 16
    rng = np.random.default_rng(5)
    x = Dual(*(torch.from_numpy(rng.normal(size=(3, n, n, n))) for _ in range(2)))
    style = Dual(torch.tensor([0.1, 0.2], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))
    with torch.no_grad():
        ref = _halo_reference(net64, x, style)
        out = net64(Dual(x.primal[None], x.tangent[None]), style, periodic=True)
    for a, b in zip(out, ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-12 * float(b.abs().max()))


def test_periodic_mode_is_shift_equivariant_by_multiples_of_8(net64):
    """Rolling a 24^3 box by 8 or 16 cells rolls the output (the three down-samplings keep their pairs):
    the box has no preferred origin on the network's 8-cell lattice."""
    n = 24
    x = torch.from_numpy(np.random.default_rng(6).normal(size=(1, 3, n, n, n)))
    style = torch.tensor([0.0, 0.1], dtype=F64)
    with torch.no_grad():
        out = net64(x, style, periodic=True)
        for shift in ((8, 0, 16), (16, 8, 8)):
            rolled = net64(torch.roll(x, shift, dims=(2, 3, 4)), style, periodic=True)
            np.testing.assert_allclose(rolled.numpy(), torch.roll(out, shift, dims=(2, 3, 4)).numpy(), rtol=0,
                                       atol=1e-12 * float(out.abs().max()))


@pytest.mark.parametrize("velocity,n", [(False, 8), pytest.param(True, 16, marks=pytest.mark.slow)])
def test_emulate_box_periodic_gradient_equals_the_tiled_gradient(net64, velocity, n):
    """The box as 8^3 tiles (one, or eight recomputed ones) against the periodic mode: values to float64
    round-off (1e-12) and the gradients with respect to the linear field, Omega_m and D to 1e-10."""
    lin = torch.from_numpy(np.random.default_rng(2).normal(0, 2, (3, n, n, n))).requires_grad_(True)
    om = torch.tensor(0.3, dtype=F64, requires_grad=True)
    dz = torch.tensor(0.8, dtype=F64, requires_grad=True)
    w = torch.from_numpy(np.random.default_rng(3).normal(size=(2, 3, n, n, n)))
    results = []
    for periodic in (False, True):
        out, dout = emulate_box(net64, lin, om, dz, tile_size=8, velocity=velocity, periodic=periodic)
        loss = (w[0] * out).sum() + ((w[1] * dout).sum() if velocity else 0.0)
        results.append(([out.detach()] + ([dout.detach()] if velocity else []),
                        torch.autograd.grad(loss, (lin, om, dz))))
    (v_tiles, g_tiles), (v_per, g_per) = results
    for a, b in zip(v_per, v_tiles):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-12 * float(b.abs().max()))
    for a, b in zip(g_per, g_tiles):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-10 * float(b.abs().max()))


def test_forward_model_periodic_gradient_equals_finite_differences():
    torch.manual_seed(1)
    emu = Emulator(ZdepConvention(StyledVNet(2, width=4)), dtype="float64", memory_format="contiguous")
    n = 8
    fm = ForwardModel(n, n * CELL, 0.5, emulator=emu, output="density", periodic=True)
    assert fm.periodic
    rng = np.random.default_rng(4)
    noise = torch.from_numpy(rng.normal(size=(n,) * 3))
    w = torch.from_numpy(rng.normal(size=(n,) * 3))
    direction = torch.from_numpy(rng.normal(size=(n,) * 3))
    x = noise.clone().requires_grad_(True)
    om = torch.tensor(0.3, dtype=F64, requires_grad=True)
    gx, gom = torch.autograd.grad((w * fm(x, omega_m=om)).sum(), (x, om))
    h = 1e-6
    with torch.no_grad():
        def value(dx, dom):
            return float((w * fm(noise + dx, omega_m=0.3 + dom)).sum())
        fd_x = (value(h * direction, 0.0) - value(-h * direction, 0.0)) / (2 * h)
        fd_om = (value(0.0, h) - value(0.0, -h)) / (2 * h)
    assert float((gx * direction).sum()) == pytest.approx(fd_x, rel=1e-5)
    assert float(gom) == pytest.approx(fd_om, rel=1e-5)


def test_forward_model_chooses_periodic_mode_where_it_fits_a_tile():
    emu = Emulator(ZdepConvention(StyledVNet(2, width=4)), dtype="float64")
    assert ForwardModel(32, 32 * CELL, 0.5, emulator=emu).periodic  # 32 <= 32 + 96
    assert not ForwardModel(12, 12 * CELL, 0.5, emulator=emu).periodic  # not a multiple of 8
    assert not ForwardModel(144, 144 * CELL, 0.5, emulator=emu, tile_size=32).periodic  # 144 > 32 + 96
    assert not ForwardModel(32, 32 * CELL, 0.5, emulator=emu, periodic=False).periodic


def test_periodic_mode_refusals(net64):
    with pytest.raises(InputError, match=r"multiples of 8 .*got \(12, 12, 12\)"):
        net64(torch.zeros(1, 3, 12, 12, 12, dtype=F64), torch.zeros(2, dtype=F64), periodic=True)
    emu = Emulator(ZdepConvention(StyledVNet(2, width=4)), dtype="float64")
    with pytest.raises(InputError, match="multiple of 8, got grid 12"):
        ForwardModel(12, 12 * CELL, 0.5, emulator=emu, periodic=True)
    with pytest.raises(InputError, match=r"multiple of 8 cells per axis, got \(12, 12, 12\)"):
        emulate_box(net64, torch.zeros(3, 12, 12, 12, dtype=F64), torch.tensor(0.3, dtype=F64),
                    torch.tensor(float(growth_factor(0.5, 0.3)), dtype=F64), tile_size=8, periodic=True)
    with pytest.raises(InputError, match="method='dual'"):
        emulate_box(net64, torch.zeros(3, 8, 8, 8, dtype=F64), torch.tensor(0.3, dtype=F64),
                    torch.tensor(0.8, dtype=F64), tile_size=8, velocity=True, method="jvp", periodic=True)


# -- the oneDNN dispatch of small float32 convolutions ------------------------------------------------------
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
def test_small_float32_convolution_in_onednn_equals_pytorchs_kernel(layout):
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.normal(size=(1, 8, 12, 12, 12)).astype(np.float32)).contiguous(memory_format=layout)
    w = torch.from_numpy(rng.normal(size=(8, 8, 3, 3, 3)).astype(np.float32) / 15).contiguous(memory_format=layout)
    b = torch.from_numpy(rng.normal(size=8).astype(np.float32))
    assert 8 * 12 * 12 <= _NATIVE_MAX  # PyTorch's own dispatch takes its native kernel here
    ref = F.conv3d(x, w, b)
    out = conv(x, w, b, 1, False)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=0, atol=1e-5 * float(ref.abs().max()))
    down = torch.from_numpy(rng.normal(size=(8, 8, 2, 2, 2)).astype(np.float32) / 8)
    np.testing.assert_allclose(conv(x, down, b, 2, False).numpy(), F.conv3d(x, down, b, stride=2).numpy(),
                               rtol=0, atol=1e-5 * float(ref.abs().max()))
    # the input-gradient convolution of a valid 3^3 convolution: against autograd's adjoint
    g = torch.from_numpy(rng.normal(size=(1, 8, 10, 10, 10)).astype(np.float32)).contiguous(memory_format=layout)
    xr = x.detach().clone().requires_grad_(True)
    (ref_h,) = torch.autograd.grad(F.conv3d(xr, w), xr, g)
    h = input_gradient(g, x, w, 1, False)
    assert h.shape == x.shape
    np.testing.assert_allclose(h.numpy(), ref_h.numpy(), rtol=0, atol=1e-5 * float(ref_h.abs().max()))


def test_float64_convolutions_keep_pytorchs_kernel():
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.normal(size=(1, 4, 10, 10, 10)))
    w = torch.from_numpy(rng.normal(size=(4, 4, 3, 3, 3)))
    assert torch.equal(conv(x, w, None, 1, False), F.conv3d(x, w))


def test_small_convolution_under_jvp_vmap_and_dual_levels_takes_pytorchs_dispatch():
    """oneDNN's op has no forward-mode derivative or batching rule: under ``torch.func.jvp``, ``vmap`` and
    ``forward_ad`` dual levels the styled convolutions take PyTorch's dispatch (exact tangents of a linear
    map: the convolution of the tangent, equal bit for bit; under vmap to float32 round-off)."""
    import torch.autograd.forward_ad as fwAD

    rng = np.random.default_rng(9)
    x = torch.from_numpy(rng.normal(size=(1, 8, 10, 10, 10)).astype(np.float32))
    t = torch.from_numpy(rng.normal(size=x.shape).astype(np.float32))
    w = torch.from_numpy(rng.normal(size=(8, 8, 3, 3, 3)).astype(np.float32))
    _, tangent = torch.func.jvp(lambda a: conv(a, w, None, 1, False), (x,), (t,))
    assert torch.equal(tangent, F.conv3d(t, w))
    batched = torch.func.vmap(lambda a: conv(a[None], w, None, 1, False)[0])(torch.cat([x, t]))
    ref = F.conv3d(t, w)[0]  # vmap runs a batch of 2, which PyTorch sends to oneDNN itself: float32 round-off
    np.testing.assert_allclose(batched[1].numpy(), ref.numpy(), rtol=0, atol=1e-5 * float(ref.abs().max()))
    with fwAD.dual_level():
        y = conv(fwAD.make_dual(x, t), w, None, 1, False)
        assert torch.equal(fwAD.unpack_dual(y).tangent, F.conv3d(t, w))
