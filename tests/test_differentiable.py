"""The differentiable forward model (emu_backend.differentiable): values against the package's numpy
implementations, gradients against central finite differences in float64, tiling and shift properties.

Tolerances: a torch twin of a numpy formula agrees to float64 round-off (1e-12 relative or better).
A central difference with step h has truncation error ~h^2 and round-off ~1e-16/h; through the emulator a
LeakyReLU kink crossed inside [x-h, x+h] adds an O(h) error to the outputs whose receptive field holds it
(measured rms ~1e-7 relative at h = 1e-6), so gradients through the network are compared at 1e-5 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emu_backend.cosmology import QUIJOTE_FIDUCIAL, EisensteinHuPower, growth_factor, growth_rate, hubble
from emu_backend.cosmology.linear_power import eisenstein_hu_power
from emu_backend.differentiable import ForwardModel
from emu_backend.differentiable.linear import linear_fields
from emu_backend.differentiable.tiles import emulate_box, periodic_gather
from emu_backend.errors import DomainError, InputError
from emu_backend.ics import linear_field, white_noise
from emu_backend.inference import Emulator, ZdepConvention
from emu_backend.nn import StyledVNet, velocity_norm

F64 = torch.float64
CELL = 1000.0 / 512  # the emulator's training resolution [Mpc/h]


def _t(x):
    return torch.tensor(float(x), dtype=F64, requires_grad=True)


@pytest.fixture(scope="module")
def emu64():
    torch.manual_seed(0)
    return Emulator(ZdepConvention(StyledVNet(2, width=4)), dtype="float64", memory_format="contiguous")


# -- cosmology in torch ---------------------------------------------------------------------------------
@pytest.mark.parametrize("z", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("om", [0.15, 0.3, 0.45])
def test_growth_in_torch_equals_numpy_and_its_gradient_finite_differences(z, om):
    h = 1e-6
    for fn in (growth_factor, growth_rate, hubble, velocity_norm):
        x = _t(om)
        value = fn(z, x)
        assert isinstance(value, torch.Tensor)
        # the same closed form: float64 round-off
        assert float(value.detach()) == pytest.approx(float(fn(z, om)), rel=1e-13), fn.__name__
        (grad,) = torch.autograd.grad(value, x)
        fd = (float(fn(z, om + h)) - float(fn(z, om - h))) / (2 * h)  # numpy path: independent of autograd
        assert float(grad) == pytest.approx(fd, rel=1e-7, abs=1e-12), fn.__name__


def test_growth_factor_second_derivative_exists():
    """The hypergeometric function's derivative is itself differentiable (Hessian-based samplers)."""
    x = _t(0.3)
    (g,) = torch.autograd.grad(growth_factor(1.0, x), x, create_graph=True)
    (g2,) = torch.autograd.grad(g, x)
    h = 1e-4
    fd2 = (growth_factor(1.0, 0.3 + h) - 2 * growth_factor(1.0, 0.3) + growth_factor(1.0, 0.3 - h)) / h**2
    assert float(g2) == pytest.approx(float(fd2), rel=1e-5)  # FD: h^2 truncation ~1e-8, round-off 1e-16/h^2


def test_eisenstein_hu_in_torch_equals_the_provider_and_scales_with_sigma8():
    c = QUIJOTE_FIDUCIAL
    k = np.geomspace(1e-3, 10, 50)
    ours = eisenstein_hu_power(torch.from_numpy(k), _t(c.omega_m), _t(c.omega_b), _t(c.h), _t(c.n_s), _t(c.sigma8))
    np.testing.assert_allclose(ours.detach().numpy(), EisensteinHuPower(c)(k), rtol=1e-12)
    # P is proportional to sigma8^2: d ln P / d ln sigma8 = 2 exactly
    s8 = _t(c.sigma8)
    p = eisenstein_hu_power(torch.tensor([0.1], dtype=F64), c.omega_m, c.omega_b, c.h, c.n_s, s8)
    (g,) = torch.autograd.grad(torch.log(p).sum(), s8)
    assert float(g) * c.sigma8 == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize("name", ["omega_m", "omega_b", "h", "n_s"])
def test_eisenstein_hu_gradients_equal_finite_differences(name):
    c = QUIJOTE_FIDUCIAL
    k = torch.tensor([0.02, 0.1, 0.5], dtype=F64)
    base = {"omega_m": c.omega_m, "omega_b": c.omega_b, "h": c.h, "n_s": c.n_s, "sigma8": c.sigma8}
    x = _t(base[name])
    p = eisenstein_hu_power(k, **{**base, name: x})
    (g,) = torch.autograd.grad(p.sum(), x)
    step = 1e-6
    fd = (EisensteinHuPower(c.clone(**{name: base[name] + step}))(k.numpy()).sum()
          - EisensteinHuPower(c.clone(**{name: base[name] - step}))(k.numpy()).sum()) / (2 * step)
    assert float(g) == pytest.approx(fd, rel=1e-6)  # truncation ~h^2 P''' , round-off ~1e-16 P / h


def test_linear_fields_equal_the_ics_linear_field():
    c = QUIJOTE_FIDUCIAL
    n, box = 16, 16 * CELL
    noise = white_noise(n, seed=3)
    ref = linear_field(noise, EisensteinHuPower(c), box, dtype=np.float64)
    delta, psi = linear_fields(torch.from_numpy(noise.astype(np.float64)),
                               lambda k: eisenstein_hu_power(k, c.omega_m, c.omega_b, c.h, c.n_s, c.sigma8), box)
    scale = np.abs(ref.displacement).max()
    np.testing.assert_allclose(psi.numpy(), ref.displacement, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(delta.numpy(), ref.density, rtol=0, atol=1e-12 * np.abs(ref.density).max())


# -- the tiled emulator -----------------------------------------------------------------------------------
def test_periodic_gather_folds_the_halo_gradient_back():
    x = torch.arange(2.0 * 8**3, dtype=F64).reshape(2, 8, 8, 8).requires_grad_(True)
    block = periodic_gather(x, (-3, 5, 0), (14, 4, 8))
    np.testing.assert_array_equal(block.detach()[:, 0, 0, 0].numpy(), x.detach()[:, 5, 5, 0].numpy())
    block.sum().backward()
    # axis 0 reads 14 cells of 8: cells -3..10, i.e. 5, 6, 7 and 0, 1, 2 twice, the others once
    counts0 = np.bincount(np.arange(-3, 11) % 8, minlength=8)
    expected = counts0[:, None, None] * np.ones((8, 8, 8)) * np.isin(np.arange(8), [5, 6, 7, 0])[None, :, None]
    np.testing.assert_array_equal(x.grad[0].numpy(), expected)


@pytest.mark.slow
def test_emulate_box_equals_emulator_predict(emu64):
    n, om, z = 16, 0.3, 0.5
    lin = np.random.default_rng(1).normal(0, 2, (3, n, n, n))
    pred = emu64.predict(lin, om, z, tile_size=8, box_size=n * CELL)
    with torch.no_grad():
        out, dout = emulate_box(emu64.model.net, torch.from_numpy(lin), torch.tensor(om, dtype=F64),
                                torch.tensor(float(growth_factor(z, om)), dtype=F64), tile_size=8, velocity=True)
    # same tiles, same float64 arithmetic; predict stores its outputs as float32 (relative round-off 6e-8)
    np.testing.assert_allclose(out.numpy() * 6.0, pred.displacement, rtol=1e-7, atol=1e-7)
    vel = dout.numpy() * velocity_norm(z, om)
    np.testing.assert_allclose(vel, pred.velocity, rtol=1e-7, atol=1e-7 * np.abs(vel).max())


@pytest.mark.slow
def test_tiled_gradient_equals_whole_box_autograd(emu64):
    """Eight recomputed 8^3 tiles against one 16^3 tile kept whole: the same gradients to round-off."""
    n = 16
    lin = torch.from_numpy(np.random.default_rng(2).normal(0, 2, (3, n, n, n))).requires_grad_(True)
    om, dz = _t(0.3), _t(0.8)
    w = torch.from_numpy(np.random.default_rng(3).normal(size=(2, 3, n, n, n)))
    grads = []
    for tile, recompute in ((8, True), (16, False)):
        out, dout = emulate_box(emu64.model.net, lin, om, dz, tile_size=tile, velocity=True, recompute=recompute)
        grads.append(torch.autograd.grad((w[0] * out).sum() + (w[1] * dout).sum(), (lin, om, dz)))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-11 * float(b.abs().max()))


# -- the forward model ------------------------------------------------------------------------------------
def _fd_check(fm, noise, params, w, direction: dict, h: float):
    """(autograd directional derivative, central difference) of ``sum(w * fm(noise, **params))`` along
    ``direction`` ({"noise": tensor, parameter name: float}; one or several components)."""
    leaves = {k: _t(v) for k, v in params.items()}
    x = noise.clone().requires_grad_(True)
    grads = dict(zip(["noise", *leaves], torch.autograd.grad((w * fm(x, **leaves)).sum(), [x, *leaves.values()])))
    ad = sum(float((grads[k] * v).sum()) for k, v in direction.items())

    def value(step):
        moved = {k: v + step * direction.get(k, 0.0) for k, v in params.items()}
        return float((w * fm(noise + step * direction.get("noise", 0.0), **moved)).sum())

    with torch.no_grad():
        return ad, (value(h) - value(-h)) / (2 * h)


@pytest.mark.parametrize("output", ["displacement", "velocity", "density",
                                    pytest.param("rsd_density", marks=pytest.mark.slow)])
def test_forward_model_gradients_equal_finite_differences(emu64, output):
    """One random direction in (noise, Omega_m, sigma8, n_s) jointly, per output kind."""
    n = 8
    fm = ForwardModel(n, n * CELL, 0.5, emulator=emu64, output=output, tile_size=8)
    noise = torch.from_numpy(white_noise(n, seed=4).astype(np.float64))
    shape = (3, n, n, n) if output in ("displacement", "velocity") else (n, n, n)
    rng = np.random.default_rng(5)
    w = torch.from_numpy(rng.normal(size=shape))
    params = {"omega_m": 0.3, "sigma8": 0.8, "n_s": 0.96}
    direction = {"noise": torch.from_numpy(rng.normal(size=noise.shape)), **dict(zip(params, rng.normal(size=3)))}
    ad, fd = _fd_check(fm, noise, params, w, direction, 1e-6)
    assert ad == pytest.approx(fd, rel=1e-5, abs=1e-9), output


@pytest.mark.parametrize("name", ["noise", "omega_m", pytest.param("sigma8", marks=pytest.mark.slow),
                                  pytest.param("n_s", marks=pytest.mark.slow)])
def test_density_gradient_along_each_input_equals_finite_differences(emu64, name):
    n = 8
    fm = ForwardModel(n, n * CELL, 1.0, emulator=emu64, output="density", tile_size=8)
    noise = torch.from_numpy(white_noise(n, seed=8).astype(np.float64))
    w = torch.from_numpy(np.random.default_rng(10).normal(size=(n, n, n)))
    params = {"omega_m": 0.25, "sigma8": 0.85, "n_s": 0.95}
    step = torch.from_numpy(np.random.default_rng(11).normal(size=noise.shape)) if name == "noise" else 1.0
    ad, fd = _fd_check(fm, noise, params, w, {name: step}, 1e-6)
    assert ad == pytest.approx(fd, rel=1e-5, abs=1e-9), name


@pytest.mark.slow
def test_forward_model_shift_moves_the_gradient(emu64):
    """A periodic shift by 8 cells (the network's resampling period) of the noise and of the loss weights
    shifts the gradient."""
    n = 16
    fm = ForwardModel(n, n * CELL, 0.0, emulator=emu64, output="density", tile_size=16)  # one tile, shift by 8
    noise = torch.from_numpy(white_noise(n, seed=6).astype(np.float64))
    w = torch.from_numpy(np.random.default_rng(7).normal(size=(n, n, n)))

    def grad(x, weights):
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((weights * fm(x, omega_m=0.3)).sum(), x)
        return g

    shifted = grad(torch.roll(noise, 8, dims=1), torch.roll(w, 8, dims=1))
    np.testing.assert_allclose(shifted.numpy(), torch.roll(grad(noise, w), 8, dims=1).numpy(), rtol=1e-9,
                               atol=1e-12 * float(shifted.abs().max()))


def test_forward_model_refuses_out_of_domain_and_bad_input(emu64):
    fm = ForwardModel(8, 8 * CELL, 0.5, emulator=emu64, output="displacement")
    noise = torch.zeros(8, 8, 8, dtype=F64)
    with pytest.raises(DomainError, match="omega_m"):
        fm(noise, omega_m=0.7)
    with pytest.raises(InputError, match="unknown cosmological parameters"):
        fm(noise, w0=-1.0)
    with pytest.raises(InputError, match="noise must be a tensor of shape"):
        fm(torch.zeros(4, 4, 4, dtype=F64))
    with pytest.raises(InputError, match="output must be one of"):
        ForwardModel(8, 8 * CELL, 0.5, emulator=emu64, output="halos")
    out = ForwardModel(8, 8 * CELL, 0.5, emulator=emu64, output="displacement", allow_extrapolation=True)(
        noise, omega_m=0.7)
    assert out.shape == (3, 8, 8, 8)


@pytest.mark.slow
def test_several_redshifts_in_one_call_equal_separate_calls(emu64):
    """Batch independence: the outputs and gradients of a call with z = [0, 1] are those of two calls."""
    n = 8
    noise = torch.from_numpy(white_noise(n, seed=12).astype(np.float64))
    w = torch.from_numpy(np.random.default_rng(13).normal(size=(2, 3, n, n, n)))

    def grads(zs, weights):
        fm = ForwardModel(n, n * CELL, zs, emulator=emu64, output="velocity", tile_size=8)
        x, om = noise.clone().requires_grad_(True), _t(0.3)
        outs = fm(x, omega_m=om)
        outs = outs if isinstance(outs, list) else [outs]
        loss = sum((wi * o).sum() for wi, o in zip(weights, outs))
        return [o.detach() for o in outs], torch.autograd.grad(loss, (x, om))

    both, (gx, gom) = grads([0.0, 1.0], w)
    (a,), (gxa, goma) = grads(0.0, w[:1])
    (b,), (gxb, gomb) = grads(1.0, w[1:])
    # the same operations on the same tiles: equal to float64 round-off of the summed gradients
    for got, ref in zip(both, (a, b)):
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(gx.numpy(), (gxa + gxb).numpy(), rtol=1e-12, atol=1e-13 * float(gx.abs().max()))
    assert float(gom) == pytest.approx(float(goma + gomb), rel=1e-12)


@pytest.mark.slow
def test_recomputation_variants_give_the_same_gradient(emu64):
    """The inference-path forward recomputed in the backward (default: a one-tile box keeps its tile; "all":
    recomputed too), torch.utils.checkpoint, and kept activations: the same operations in the backward, so
    the same gradients (float64, 1e-12 relative)."""
    n = 8
    lin = torch.from_numpy(np.random.default_rng(14).normal(0, 2, (3, n, n, n)))
    w = torch.from_numpy(np.random.default_rng(15).normal(size=(2, 3, n, n, n)))
    grads = []
    for recompute in (True, "all", "checkpoint", False):
        x, om, dz = lin.clone().requires_grad_(True), _t(0.3), _t(0.8)
        out, dout = emulate_box(emu64.model.net, x, om, dz, tile_size=8, velocity=True, recompute=recompute)
        grads.append(torch.autograd.grad((w[0] * out).sum() + (w[1] * dout).sum(), (x, om, dz)))
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14 * float(b.abs().max()))


def test_only_the_last_tile_keeps_its_activations():
    """T tiles: the default runs the network 2T - 1 times per gradient (T forwards, every tile but the last
    recomputed in the backward), "all" 2T, and both give the kept-activations gradient. A 16 x 8 x 8 box
    of two 8^3 tiles, a float32 width-1 network (the counts depend on neither; float64 convolutions
    without oneDNN are ~10x slower): the same operations on the same values, so 1e-5 of the largest
    component bounds float32 round-off differences of the gradient sums (measured: equal)."""
    shape = (3, 16, 8, 8)
    torch.manual_seed(0)
    net = StyledVNet(2, width=1)
    calls = []
    hook = net.conv_l00.register_forward_hook(lambda *args: calls.append(1))
    lin = torch.from_numpy(np.random.default_rng(16).normal(0, 2, shape).astype(np.float32))
    w = torch.from_numpy(np.random.default_rng(17).normal(size=shape).astype(np.float32))
    grads, counts = [], []
    try:
        for recompute in (True, "all", False):
            calls.clear()
            x = lin.clone().requires_grad_(True)
            om = torch.tensor(0.3, requires_grad=True)
            out, _ = emulate_box(net, x, om, torch.tensor(0.8), tile_size=8, recompute=recompute)
            grads.append(torch.autograd.grad((w * out).sum(), (x, om)))
            counts.append(len(calls))
    finally:
        hook.remove()
    assert counts == [3, 4, 2]
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-5 * float(b.abs().max()))
