"""Tests of the JAX adapter (emu_backend.adapters.jax, jax_bridge, jax_lpt): the torch forward model and
emulator as JAX functions under jit, grad and vmap.

References: the torch computation itself (torch.autograd on the same ForwardModel / emulate_box), the
NumPy spectral operators of emu_backend.ics, and central finite differences. The JAX function runs the
same torch operations on the same inputs, so its values and gradients equal torch's up to the float
round-off of the final casts; the tolerances say so test by test.

Cost: the width-4 StyledVNet still sees a (8 + 96)^3 input tile, and float64 convolutions are ~8x slower
than float32 on CPUs (no oneDNN kernel), so one float64 gradient of an 8^3 box takes ~25 s on 2 cores:
the float64 gradient test is the only one paying it; the others use a float32 network. The tests that
run the network's backward pass take 30-70 s each on 2 busy cores and are marked slow.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax", reason="JAX not installed: pip install 'emu_backend[jax]'")
jnp = jax.numpy

from emu_backend.adapters import jax_lpt  # noqa: E402
from emu_backend.adapters.jax import jax_emulator, jax_forward_model  # noqa: E402
from emu_backend.adapters.jax_bridge import torch_callable  # noqa: E402

from emu_backend.cosmology import growth_factor  # noqa: E402
from emu_backend.differentiable import ForwardModel, emulate_box  # noqa: E402
from emu_backend.errors import DomainError, InputError  # noqa: E402
from emu_backend.ics.linear import displacement_from_density, divergence  # noqa: E402
from emu_backend.ics.lpt import second_order_displacement  # noqa: E402
from emu_backend.ics.noise import white_noise  # noqa: E402
from emu_backend.inference import EmuConvention, Emulator, ZdepConvention  # noqa: E402
from emu_backend.nn import StyledVNet, velocity_norm  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "adapters" / "jax.md"
N = 8
BOX = N * 1000 / 512  # the emulator's training cell, 1000/512 Mpc/h
F64 = torch.float64


@pytest.fixture
def x64():
    """JAX in float64 for the test (thread-local ``jax.enable_x64``), restored afterwards."""
    before = jnp.asarray(1.0).dtype
    with jax.enable_x64(True):
        yield
    assert jnp.asarray(1.0).dtype == before


def _emulator(dtype: str) -> Emulator:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = StyledVNet(2, width=4)
    return Emulator(ZdepConvention(net), dtype=dtype, memory_format="contiguous", source=f"test-width4-{dtype}")


@pytest.fixture(scope="module")
def emu64():
    return _emulator("float64")


@pytest.fixture(scope="module")
def emu32():
    return _emulator("float32")


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# -- the bridge ---------------------------------------------------------------------------------------
def test_torch_callable_grad_jit_vmap_and_dtypes():
    """A closed form through the bridge: values and gradients against the analytic derivative."""
    f = torch_callable(lambda x, s: (torch.sin(x) * s, (x * x).sum()), [(4,), ()])
    x = jnp.linspace(0.1, 1.0, 4)
    y, sq = f(x, jnp.asarray(2.0))
    assert y.dtype == jnp.float32 and sq.shape == ()
    np.testing.assert_allclose(np.asarray(y), 2 * np.sin(np.asarray(x)), rtol=1e-6)  # float32 round-off

    def loss(x, s):
        y, sq = f(x, s)
        return jnp.sum(y) + 3.0 * sq

    gx, gs = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, jnp.asarray(2.0))
    np.testing.assert_allclose(np.asarray(gx), 2 * np.cos(np.asarray(x)) + 6 * np.asarray(x), rtol=1e-6)
    assert float(gs) == pytest.approx(float(np.sin(np.asarray(x)).sum()), rel=1e-6)
    batch = jnp.stack([x, 2 * x])
    gb = jax.vmap(jax.grad(loss), in_axes=(0, None))(batch, jnp.asarray(1.0))
    np.testing.assert_allclose(np.asarray(gb), np.cos(np.asarray(batch)) + 6 * np.asarray(batch), rtol=1e-6)
    x64 = np.asarray(x, np.float64)
    with jax.enable_x64(True):
        g64 = jax.grad(loss)(jnp.asarray(x64), 2.0)
        # float64 crosses the callback exactly (as uint32 pairs): a bit below float32's resolution survives
        tiny = torch_callable(lambda x: (x - 1.0,), [(1,)])(jnp.asarray([1.0 + 2.0**-40]))[0]
    assert g64.dtype == jnp.float64  # float64 throughout: round-off
    np.testing.assert_allclose(np.asarray(g64), 2 * np.cos(x64) + 6 * x64, rtol=1e-14)
    assert float(tiny[0]) == 2.0**-40
    with pytest.raises(TypeError, match="can't apply forward-mode"):
        jax.jvp(lambda x: f(x, jnp.asarray(1.0))[0], (x,), (x,))


def test_torch_callable_gradient_runs_the_torch_forward_once():
    """A gradient keeps the forward's torch graph for its backward: one torch call per gradient (not two),
    under jit too; under vmap (all forwards before the backwards) the backward recomputes. Values and
    gradients against the closed form d/dx sum(x^3) = 3 x^2, and equal bit for bit in all three ways."""
    calls = []

    def cube(x):
        calls.append(torch.is_grad_enabled())
        return ((x ** 3).sum(),)

    f = torch_callable(cube, [()])
    x = jnp.linspace(0.5, 2.0, 5)
    value, grad = jax.value_and_grad(lambda x: f(x)[0])(x)
    assert calls == [True]  # one forward, with grad: its graph went to the backward
    np.testing.assert_allclose(np.asarray(grad), 3 * np.asarray(x) ** 2, rtol=1e-6)
    assert float(value) == pytest.approx(float((np.asarray(x) ** 3).sum()), rel=1e-6)
    calls.clear()
    jitted = jax.jit(jax.grad(lambda x: f(x)[0]))(x)
    assert calls == [True]
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(grad))
    calls.clear()
    batch = jnp.stack([x, x + 1.0])
    gb = jax.vmap(jax.grad(lambda x: f(x)[0]))(batch)
    assert len(calls) == 3  # two kept forwards (the second replaces the first's graph), one recomputed backward
    np.testing.assert_allclose(np.asarray(gb), 3 * np.asarray(batch) ** 2, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(gb[0]), np.asarray(grad))


def test_jax_lpt_twins_equal_numpy(x64):
    # the same spectral formulas in jnp.fft and scipy.fft, float64: round-off (measured <= 5e-16)
    psi = np.random.default_rng(0).normal(size=(3, 16, 16, 16))
    box = 16 * 1000 / 512
    assert _rel(jax_lpt.divergence(psi, box), divergence(psi, box)) < 1e-13
    assert _rel(jax_lpt.second_order_displacement(psi, box), second_order_displacement(psi, box)) < 1e-13
    assert _rel(jax_lpt.displacement_from_density(psi[0], box), displacement_from_density(psi[0], box)) < 1e-13


# -- the forward model --------------------------------------------------------------------------------
@pytest.mark.slow
def test_forward_model_gradient_equals_torch_under_jit(emu64, x64):
    """jax.jit(jax.value_and_grad) of sum(w * f(noise, omega_m, sigma8)) against torch.autograd of the
    same loss: the same float64 torch operations, so equal to round-off (1e-12 relative; measured 0)."""
    fm = ForwardModel(N, BOX, 0.5, emulator=emu64, output="density", tile_size=8)
    f = jax_forward_model(fm)
    noise = white_noise(N, 4).astype(np.float64)
    w = np.random.default_rng(5).normal(size=(N, N, N))

    def loss(x, om, s8):
        return jnp.sum(jnp.asarray(w) * f(x, omega_m=om, sigma8=s8))

    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(jnp.asarray(noise), 0.3, 0.8)
    assert all(g.dtype == jnp.float64 for g in grads)
    x = torch.from_numpy(noise).requires_grad_(True)
    om, s8 = (torch.tensor(v, dtype=F64, requires_grad=True) for v in (0.3, 0.8))
    ref_value = (torch.from_numpy(w) * fm(x, omega_m=om, sigma8=s8)).sum()
    ref = torch.autograd.grad(ref_value, (x, om, s8))
    assert float(value) == pytest.approx(float(ref_value.detach()), rel=1e-12)
    for name, g, r in zip(("noise", "omega_m", "sigma8"), grads, ref):
        assert _rel(g, r.numpy()) < 1e-12, name


@pytest.mark.slow
def test_forward_model_float32_lists_and_vmap(emu32):
    """x64 off: float32 in and out; two redshifts give a list; vmap over two noise fields equals the
    fields one by one and torch's float32 values and gradients (the same float32 torch operations, in
    buffers of another alignment: equal to float32 round-off, 1e-6 relative; measured 2e-7)."""
    fm = ForwardModel(N, BOX, [0.0, 1.0], emulator=emu32, output="displacement", tile_size=8)
    f = jax_forward_model(fm)
    noises = np.stack([white_noise(N, s) for s in (1, 2)]).astype(np.float32)
    outs = jax.vmap(lambda x: f(x, omega_m=0.3))(jnp.asarray(noises))
    assert isinstance(outs, list) and len(outs) == 2 and outs[0].shape == (2, 3, N, N, N)
    assert outs[0].dtype == jnp.float32
    w = np.random.default_rng(3).normal(size=(3, N, N, N)).astype(np.float32)

    def loss(x, om):
        a, b = f(x, omega_m=om)
        return jnp.sum(jnp.asarray(w) * (a - 0.5 * b))

    grads = jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(0, None))(jnp.asarray(noises), 0.3)
    for i, noise in enumerate(noises):
        x = torch.from_numpy(noise).requires_grad_(True)
        om = torch.tensor(0.3, dtype=F64, requires_grad=True)
        ref = fm(x, omega_m=om)
        for z_out, r in zip(outs, ref):
            assert _rel(z_out[i], r.detach().numpy()) < 1e-6
        gx, gom = torch.autograd.grad((torch.from_numpy(w) * (ref[0] - 0.5 * ref[1])).sum(), (x, om))
        assert _rel(grads[0][i], gx.numpy()) < 1e-6
        # d/dOmega_m: a float32 sum over 2 x 1536 cells with cancellations (measured 7e-6, 3e-7)
        assert float(grads[1][i]) == pytest.approx(float(gom), rel=1e-4)


def test_forward_model_refuses_bad_input(emu32):
    f = jax_forward_model(ForwardModel(N, BOX, 0.5, emulator=emu32, output="density", tile_size=8))
    noise = jnp.zeros((N, N, N))
    with pytest.raises(InputError, match="noise must have shape"):
        f(jnp.zeros((4, 4, 4)))
    with pytest.raises(InputError, match="unknown cosmological parameters"):
        f(noise, w0=-1.0)
    with pytest.raises(InputError, match="must be a scalar"):
        f(noise, omega_m=jnp.ones(2))
    with pytest.raises(DomainError, match="omega_m"):
        f(noise, omega_m=0.7)  # concrete: refused before the callback
    # traced: refused inside the callback, JAX's runtime error quotes ours
    with pytest.raises(Exception, match="outside the training range"):
        jax.jit(lambda om: f(noise, omega_m=om))(0.7).block_until_ready()
    with pytest.raises(InputError, match="must be a ForwardModel"):
        jax_forward_model("density")


# -- the emulator alone --------------------------------------------------------------------------------
@pytest.mark.slow
def test_jax_emulator_gradients_equal_torch(emu32, x64):
    """g(linear displacement, Omega_m) at two redshifts, displacement and velocity, against emulate_box,
    growth_factor and velocity_norm composed in torch: a float32 network on float64 JAX inputs, the
    same casts and operations on both sides, so equal to float32 round-off (1e-6 relative)."""
    g = jax_emulator(BOX, [0.0, 1.0], emulator=emu32, tile_size=8)
    rng = np.random.default_rng(7)
    psi = rng.normal(0, 2, (3, N, N, N))
    w = rng.normal(size=(2, 2, 3, N, N, N))

    def loss(p, om):
        dis, vel = g(p, om)
        return jnp.sum(jnp.asarray(w[0]) * dis) + 1e-2 * jnp.sum(jnp.asarray(w[1]) * vel)

    (dis, vel) = g(jnp.asarray(psi), 0.3)
    assert dis.shape == vel.shape == (2, 3, N, N, N) and dis.dtype == jnp.float64
    gp, gom = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(psi), 0.3)

    x = torch.from_numpy(psi).requires_grad_(True)
    om = torch.tensor(0.3, dtype=F64, requires_grad=True)
    total = 0.0
    for i, z in enumerate((0.0, 1.0)):
        out, dout = emulate_box(emu32.model.net, x.float(), om.float(), growth_factor(z, om).float(),
                                tile_size=8, velocity=True)
        rdis, rvel = out * 6.0, dout * velocity_norm(z, om).float()
        assert _rel(dis[i], rdis.detach().numpy()) < 1e-6 and _rel(vel[i], rvel.detach().numpy()) < 1e-6
        total = total + (torch.from_numpy(w[0, i]) * rdis).sum() + 1e-2 * (torch.from_numpy(w[1, i]) * rvel).sum()
    rp, rom = torch.autograd.grad(total, (x, om))
    assert _rel(gp, rp.numpy()) < 1e-6
    # d/dOmega_m: a float32 sum over 2 x 3072 cells with cancellations (measured: equal)
    assert float(gom) == pytest.approx(float(rom), rel=1e-4)


def test_jax_emulator_refuses_bad_input(emu32):
    g = jax_emulator(BOX, 0.5, emulator=emu32, velocity=False)
    dis, vel = g(jnp.zeros((3, N, N, N)), 0.3)
    assert vel is None and dis.shape == (3, N, N, N)
    with pytest.raises(InputError, match="linear_displacement must have shape"):
        g(jnp.zeros((3, 4, 4, 4)), 0.3)
    with pytest.raises(DomainError, match="omega_m"):
        g(jnp.zeros((3, N, N, N)), 0.05)
    with pytest.raises(DomainError, match="cell size"):
        jax_emulator(2 * BOX, 0.5, emulator=emu32)(jnp.zeros((3, N, N, N)), 0.3)
    with pytest.raises(InputError, match="tile_size"):
        jax_emulator(BOX, 0.5, emulator=emu32, tile_size=12)
    emu_z0 = Emulator(EmuConvention(StyledVNet(1, width=4), None))
    with pytest.raises(InputError, match="ZdepConvention"):
        jax_emulator(BOX, 0.0, emulator=emu_z0)


@pytest.mark.slow
def test_doc_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, f"no python block in {DOC}"
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {})
