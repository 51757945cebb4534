"""Tests of the pmwd adapter (emu_backend.adapters.pmwd, pmwd_convert, pmwd_fields) against real pmwd.

pmwd is not on PyPI: CI installs the wheel of ../shared/wheels (built unmodified from its repository)
when that folder is present, users ``pip install "emu_backend[pmwd]"`` (its git repository); where pmwd
is absent this file skips with the reason. The independent references are pmwd itself (its modes, LPT,
growth table, sigma8 and N-body), our numpy LPT and NumPy emulator path, JaxPM, and central finite
differences for the gradients of the differentiable ``emulator_nbody``. pmwd is imported through the
adapter (never ``import pmwd`` here), so its global x64 switch stays off for the other test files of
the session. All runs are 16^3 particles (8^3 for the gradient check) with a narrow seeded network
for the emulator; pmwd's JIT compilation dominates the run time (the N-body comparisons, the
end-to-end gradient and the doc example, which runs the published-size network, are marked slow).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("pmwd") is None:
    # find_spec, not importorskip: importing pmwd here would switch JAX's x64 on for the whole session
    pytest.skip("pmwd is not installed (not on PyPI): pip install 'emu_backend[pmwd]', or the wheel in "
                "../shared/wheels, to run these tests", allow_module_level=True)

from emu_backend.cosmology import QUIJOTE_FIDUCIAL as COSMO  # noqa: E402
from emu_backend.datatypes import Snapshot
from emu_backend.errors import InputError  # noqa: E402
from emu_backend.ics import InitialConditions
from emu_backend.ics.lpt import second_order_displacement  # noqa: E402
from emu_backend.ics.noise import white_noise  # noqa: E402
from emu_backend.simulator import get_backend, simulate  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "adapters" / "pmwd.md"
N, BOX, SEED = 16, 31.25, 11  # the emulator's training resolution 1000/512 Mpc/h per particle
A_START = 1 / 16
#: The backend setting of the tests: mesh 48^3 (odd factor, see the docs), 16 steps to a = 1.
REF = {"mesh_factor": 3, "steps": 16, "a_start": A_START}


def _nyquist_free(field):
    """Drop every Fourier mode on a Nyquist plane of a (..., n, n, n) real field."""
    n = field.shape[-1]
    fk = np.fft.rfftn(field, axes=(-3, -2, -1))
    fk[..., n // 2, :, :] = 0
    fk[..., :, n // 2, :] = 0
    fk[..., :, :, n // 2] = 0
    return np.fft.irfftn(fk, s=(n, n, n), axes=(-3, -2, -1))


def _rel_rms(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.sqrt(np.mean(np.abs(a - b) ** 2) / np.mean(np.abs(b) ** 2)))


def _pmwd_power(ap, pmwd, cosmo, conf):
    """pmwd's linear P(k, a=1) [(Mpc/h)^3] of k [h/Mpc] as our P(k) provider (evaluated with x64)."""
    def power(k):
        with ap.pmwd_x64():
            return np.asarray(pmwd.linear_power(np.asarray(k, dtype=np.float64), 1.0, cosmo, conf))

    return power


@pytest.fixture(scope="module", autouse=True)
def _restore_backend_registry():
    """Put the "pmwd" registry entry back as it was, so later test files see the usual placeholder."""
    import sys

    from emu_backend.simulator import backends

    before = backends._REGISTRY.get("pmwd")
    yield
    backends._REGISTRY["pmwd"] = before
    sys.modules.pop("emu_backend.adapters.pmwd", None)  # a later get_backend("pmwd") imports it again


@pytest.fixture(scope="module")
def ap():
    from emu_backend.adapters import pmwd as adapter

    return adapter


@pytest.fixture(scope="module")
def pmwd(ap):
    return ap.pmwd_modules()


@pytest.fixture(scope="module")
def conf(ap):
    # the backend's own configuration of a run to z = 0: shared so that pmwd compiles once
    return ap.PmwdBackend(**REF).configuration(N, BOX, 1.0)


@pytest.fixture(scope="module")
def cosmo(ap, conf):
    return ap.to_pmwd_cosmology(COSMO, conf)


@pytest.fixture(scope="module")
def noise():
    # Nyquist-free white noise: pmwd keeps Nyquist-plane modes that our "fourier" convention drops
    return _nyquist_free(white_noise(N, SEED).astype(np.float64)).astype(np.float32)


@pytest.fixture(scope="module")
def lpt_run(ap, pmwd, conf, cosmo, noise):
    """pmwd's linear_modes + lpt (2LPT at a_start) from our noise array."""
    with ap.pmwd_x64():
        modes = pmwd.linear_modes(noise, cosmo, conf)
        ptcl, obsvbl = pmwd.lpt(modes, cosmo, conf)
        growth = {o: float(pmwd.growth(A_START, cosmo, conf, order=o)) for o in (1, 2)}
    return np.asarray(modes), ptcl, growth


@pytest.fixture(scope="module")
def small_emulator():
    """A seeded narrow StyledVNet (width 4): the published one costs ~1 min per 8^3 box on 2 CPU cores."""
    import torch

    from emu_backend.inference import Emulator, ZdepConvention
    from emu_backend.nn.vnet import StyledVNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = StyledVNet(2, width=4)
    return Emulator(ZdepConvention(net), source="test-width4-seed0")


@pytest.fixture(scope="module")
def ics():
    return InitialConditions.from_noise(N, BOX, COSMO, seed=SEED)


# -- JAX state ------------------------------------------------------------------------------------
def test_x64_flag_is_contained(ap, lpt_run):
    # pmwd turns jax_enable_x64 on at import; the adapter restores it and scopes pmwd's computations
    import jax

    assert jax.enable_x64.get_global() is False and jax.config.jax_enable_x64 is False
    assert jax.numpy.asarray(1.0).dtype == np.float32
    with ap.pmwd_x64():
        assert jax.numpy.asarray(1.0).dtype == np.float64
    assert jax.numpy.asarray(1.0).dtype == np.float32


# -- Configuration and Cosmology ------------------------------------------------------------------
def test_configuration_round_trip(ap, pmwd, conf):
    spec = ap.grid_from_configuration(conf)
    assert (spec.n, spec.box_size, spec.n_mesh, spec.lpt_order) == (N, BOX, 3 * N, 2)
    assert spec.a_start == A_START and spec.a_stop == 1.0 and conf.a_nbody_num == REF["steps"]
    assert float(conf.ptcl_spacing) == BOX / N and tuple(conf.mesh_shape) == (3 * N,) * 3
    with ap.pmwd_x64():
        flat = pmwd.Configuration(1.0, (4, 4, 8))
    with pytest.raises(InputError, match="cubic"):
        ap.grid_from_configuration(flat)
    with pytest.raises(InputError, match="mesh_factor"):
        ap.configuration_from_grid(N, BOX, mesh_factor=0.5)


def test_cosmology_conversions(ap, pmwd, conf, cosmo):
    # ours (sigma8) -> pmwd -> ours (sigma8): pmwd's own variance table, exact D_1(1) [ODE tol ~1e-8]
    back = ap.from_pmwd_cosmology(cosmo, amplitude="sigma8")
    assert back.sigma8 == pytest.approx(COSMO.sigma8, rel=1e-6)
    assert (back.omega_m, back.omega_b, back.h, back.n_s) == (COSMO.omega_m, COSMO.omega_b, COSMO.h, COSMO.n_s)
    # A_s maps exactly both ways
    ours_as = ap.from_pmwd_cosmology(cosmo)
    assert ours_as.A_s == pytest.approx(float(cosmo.A_s_1e9) * 1e-9, rel=1e-15)
    again = ap.to_pmwd_cosmology(ours_as, conf)
    assert float(again.A_s_1e9) == pytest.approx(float(cosmo.A_s_1e9), rel=1e-12)
    with ap.pmwd_x64():
        # pmwd's from_sigma8 (its growth table reaches a_stop = 1 here): same A_s to the ODE tolerance
        ref = pmwd.Cosmology.from_sigma8(conf, COSMO.sigma8, n_s=COSMO.n_s, Omega_m=COSMO.omega_m,
                                         Omega_b=COSMO.omega_b, h=COSMO.h)
        d1 = float(pmwd.growth(1.0, cosmo, conf))
        closed = pmwd.Cosmology(conf, 2.0, 0.96, 0.3, 0.05, 0.7, Omega_k_=0.1)
    assert float(cosmo.A_s_1e9) == pytest.approx(float(ref.A_s_1e9), rel=1e-6)
    # analytic D_1(a=1) against pmwd's integrated growth table (rtol ~1.5e-8 plus interpolation)
    assert ap.pmwd_growth_today(COSMO.omega_m) == pytest.approx(d1, rel=1e-7)
    with pytest.raises(InputError, match="flat LambdaCDM"):
        ap.from_pmwd_cosmology(closed)


# -- modes, LPT ------------------------------------------------------------------------------------
def test_same_noise_gives_the_same_linear_field(ap, pmwd, conf, cosmo, noise, lpt_run):
    # pmwd: delta_k = sqrt(P V) rfftn(noise, ortho), at a=None (growth 1 in matter domination);
    # ours: the same with P at z = 0 = pmwd's P(a=1). Same noise array -> same field, float32 round-off.
    from emu_backend.ics.conditions import linear_field

    modes, _, _ = lpt_run
    ours = linear_field(noise, _pmwd_power(ap, pmwd, cosmo, conf), BOX)
    ics = ap.initial_conditions_from_modes(modes, cosmo, conf)
    assert _rel_rms(ics.density, ours.density) < 1e-5
    assert _rel_rms(ics.displacement, ours.displacement) < 1e-5
    # pmwd's white noise in, pmwd applies linear_modes itself
    ics_noise = ap.initial_conditions_from_modes(noise, cosmo, conf, white_noise=True)
    assert _rel_rms(ics_noise.density, ours.density) < 1e-5
    # and back to pmwd's modes (exact up to float32; no Nyquist modes here)
    back = np.asarray(ap.modes_from_initial_conditions(ics, cosmo, conf))
    assert _rel_rms(back, modes) < 1e-5


def test_pmwd_lpt_equals_our_2lpt(ap, pmwd, conf, cosmo, noise, lpt_run):
    # pmwd: dis = D1 Psi - D2 Psi2[Psi] with its growth factors; ours: the same Psi (linear_field)
    # and our second_order_displacement. Nyquist planes dropped from both (conventions differ there).
    from emu_backend.ics.conditions import linear_field

    _, ptcl, growth = lpt_run
    d1_today = ap.pmwd_growth_today(COSMO.omega_m)
    psi0 = linear_field(noise, _pmwd_power(ap, pmwd, cosmo, conf), BOX,
                        dtype=np.float64).displacement
    psi = psi0 / d1_today
    ours = growth[1] * psi - growth[2] * second_order_displacement(psi, BOX)
    theirs = ap.lagrangian_displacement(ptcl).T.reshape(3, N, N, N)
    # float32 arithmetic in pmwd: ~1e-6 relative; 1e-5 leaves room for the FFTs
    assert _rel_rms(_nyquist_free(theirs), _nyquist_free(ours)) < 1e-5
    # against our LPT module with our closed-form growth (D2 there is the Omega_m^-1/143 fit, not
    # pmwd's ODE): the first order agrees to 1e-6, the second-order term to ~1%
    from emu_backend.ics.lpt import lpt_particles

    pos, _ = lpt_particles(psi0, BOX, COSMO, 1 / A_START - 1, order=2, dtype=np.float64)
    q = np.stack(np.meshgrid(*(np.arange(N) * BOX / N,) * 3, indexing="ij"))
    ours_module = (pos - q + BOX / 2) % BOX - BOX / 2
    second = growth[2] * second_order_displacement(psi, BOX)
    err = np.sqrt(np.mean((_nyquist_free(theirs) - _nyquist_free(ours_module)) ** 2))
    assert err < 0.02 * np.sqrt(np.mean(second**2)) + 1e-5 * np.sqrt(np.mean(theirs**2))


def test_particles_snapshot_round_trip(ap, cosmo, lpt_run):
    # pmwd Particles -> Snapshot -> Particles: pmid exact, disp to float32 positions in a 31 Mpc/h box
    _, ptcl, _ = lpt_run
    snap = ap.snapshot_from_particles(ptcl, A_START, COSMO, meta={"source": "pmwd lpt"})
    assert isinstance(snap, Snapshot) and snap.grid == N and snap.box_size == BOX
    back = ap.particles_from_snapshot(snap, ptcl.conf)
    np.testing.assert_array_equal(np.asarray(back.pmid), np.asarray(ptcl.pmid))
    np.testing.assert_allclose(np.asarray(back.disp), np.asarray(ptcl.disp), atol=1e-5)  # ulp(31.25) = 2e-6
    np.testing.assert_allclose(np.asarray(back.vel), np.asarray(ptcl.vel), rtol=1e-6, atol=1e-9)
    # velocity units, independently: pmwd's canonical momentum a^2 E dD/dlna Psi [100 km/s] is our
    # a H f D Psi [km/s] (linear theory; the second order adds ~1% at a = 1/16)
    from emu_backend.ics.lpt import lpt_particles

    ics = ap.initial_conditions_from_modes(lpt_run[0], cosmo, ptcl.conf)
    _, vel = lpt_particles(ics.displacement, BOX, COSMO, 1 / A_START - 1, order=2, dtype=np.float64)
    assert _rel_rms(_nyquist_free(snap.velocity_field()), _nyquist_free(vel)) < 2e-3


def test_linear_ics_recovered_from_lpt_particles(ap, conf, cosmo, lpt_run):
    # inverting pmwd's 2LPT at a_start gives back the ICs of its modes (fixed point converges as D^k)
    modes, ptcl, _ = lpt_run
    ref = ap.initial_conditions_from_modes(modes, cosmo, conf)
    got = ap.linear_ics_from_particles(ptcl, cosmo, conf)
    assert _rel_rms(_nyquist_free(got.displacement), ref.displacement) < 1e-4


def test_emulator_nbody_matches_the_emulator_backend(ap, conf, cosmo, lpt_run, small_emulator):
    # pmwd-shaped call: same particles out as our emulator backend run on the same linear field
    from emu_backend.simulator import EmulatorBackend

    modes, ptcl, _ = lpt_run
    emu = small_emulator
    out, obsvbl = ap.emulator_nbody(ptcl, "kept", cosmo, conf, emulator=emu)
    assert obsvbl == "kept" and type(out) is type(ptcl) and out.conf is conf
    ref = EmulatorBackend(emu).run(ap.initial_conditions_from_modes(modes, cosmo, conf), COSMO, [0.0])[0]
    got = ap.snapshot_from_particles(out, 1.0, COSMO)
    # inputs differ by the 2LPT inversion (<1e-4) and float32; a random network amplifies input
    # differences ~10x (measured 1.3e-3 with the published architecture)
    assert _rel_rms(got.displacement_field(), ref.displacement_field()) < 3e-3
    assert _rel_rms(got.velocity_field(), ref.velocity_field()) < 3e-3
    with pytest.raises(InputError, match="forward"):
        ap.emulator_nbody(ptcl, None, cosmo, conf, reverse=True)


def test_emulator_nbody_equals_the_numpy_path(ap, conf, cosmo, lpt_run, small_emulator):
    # the JAX path against the former NumPy path (emulator_nbody_numpy): the same inversion (float64 in
    # both), the same float32 network on the same tiles; the NumPy path stores ICs and snapshot positions in
    # float32, so disp differs by float32 position round-off (ulp(31.25) = 1.9e-6 Mpc/h; measured 9.5e-7)
    # and modulo the box (the NumPy path takes the minimal image, the JAX path does not wrap)
    _, ptcl, _ = lpt_run
    new, obsvbl = ap.emulator_nbody(ptcl, "kept", cosmo, conf, emulator=small_emulator)
    old, _ = ap.emulator_nbody_numpy(ptcl, "kept", cosmo, conf, emulator=small_emulator)
    assert obsvbl == "kept" and new.conf is conf
    np.testing.assert_array_equal(np.asarray(new.pmid), np.asarray(old.pmid))
    d = np.asarray(new.disp, np.float64) - np.asarray(old.disp, np.float64)
    assert np.abs((d + BOX / 2) % BOX - BOX / 2).max() < 4e-6
    vel = np.asarray(old.vel, np.float64)
    np.testing.assert_allclose(np.asarray(new.vel), vel, rtol=0, atol=1e-6 * np.abs(vel).max())  # measured: equal


def test_linear_displacement_from_particles_equals_the_numpy_inversion(ap, pmwd, conf, cosmo, lpt_run):
    # jnp twin against the NumPy operators of our ICs (float64 both; FFT round-off, measured ~1e-15)
    from emu_backend.ics.linear import displacement_from_density, divergence

    _, ptcl, growth = lpt_run
    dis = ap.lagrangian_displacement(ptcl).T.reshape(3, N, N, N)
    psi = dis / growth[1]
    for _ in range(4):
        psi = (dis + growth[2] * second_order_displacement(psi, BOX)) / growth[1]
    ref = displacement_from_density(-divergence(psi, BOX) * ap.pmwd_growth_today(COSMO.omega_m), BOX)
    got = np.asarray(ap.linear_displacement_from_particles(ptcl, cosmo, conf))
    assert got.dtype == np.float64 and _rel_rms(got, ref) < 1e-12


def test_growth_today_in_jax_is_differentiable(ap):
    # the JAX path goes through the torch 2F1 (scipy values, exact derivative): the same value as the
    # float path, and its derivative against a central difference (h^2 truncation ~1e-12, round-off ~1e-10)
    import jax

    with ap.pmwd_x64():
        value, grad = jax.jit(jax.value_and_grad(ap.pmwd_growth_today))(jax.numpy.asarray(0.3))
    assert float(value) == ap.pmwd_growth_today(0.3)
    h = 1e-6
    fd = (ap.pmwd_growth_today(0.3 + h) - ap.pmwd_growth_today(0.3 - h)) / (2 * h)
    assert float(grad) == pytest.approx(fd, rel=1e-8)


def test_emulator_nbody_refuses_what_it_cannot_differentiate(ap, pmwd, conf, cosmo, lpt_run):
    import jax

    from emu_backend.inference import EmuConvention, Emulator
    from emu_backend.nn.vnet import StyledVNet

    _, ptcl, _ = lpt_run
    with pytest.raises(InputError, match="emulator_nbody_numpy"):
        ap.emulator_nbody(ptcl, None, cosmo, conf, emulator=Emulator(EmuConvention(StyledVNet(1, width=4))))
    with pytest.raises(InputError, match="Omega_k is traced"), ap.pmwd_x64():
        jax.grad(lambda ok: ap.emulator_nbody(ptcl, None, cosmo.replace(Omega_k_=ok), conf)[0].disp.sum())(0.0)
    with pytest.raises(InputError, match="ptcl must be pmwd.Particles"):
        ap.emulator_nbody("particles", None, cosmo, conf)


@pytest.mark.slow
def test_pmwd_pipeline_gradient_equals_finite_differences(ap, pmwd):
    """modes -> linear_modes -> lpt -> emulator_nbody -> scatter -> loss, jitted, with jax.grad with respect
    to the white noise and to every leaf of the pmwd Cosmology (A_s_1e9, n_s, Omega_m, Omega_b, h and the
    transfer, growth and varlin tables of pmwd.boltzmann), along one random direction, against a central
    difference.

    float64 everywhere (conf.float_dtype, a float64 network). Tolerance 1e-6 relative at h = 1e-6: the
    truncation (h^2) and round-off (1e-15 / h) are ~1e-9; measured 1.3e-9 (1e-10 along the noise and the
    cosmology directions separately; 4e-3 at h = 1e-5, where a CIC cell face or a LeakyReLU kink is crossed
    inside [x - h, x + h], as in tests/test_differentiable.py). The tables are perturbed as leaves rather
    than recomputed by boltzmann inside the loss, whose adaptive ODE would put its own tolerance into the
    difference; the velocities (a jump at every LeakyReLU kink, being the network's D-derivative) are checked against
    torch in tests/test_adapter_jax.py.
    """
    import jax
    import torch

    from emu_backend.inference import Emulator, ZdepConvention
    from emu_backend.nn.vnet import StyledVNet

    jnp = jax.numpy
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        emu = Emulator(ZdepConvention(StyledVNet(2, width=4)), dtype="float64", memory_format="contiguous")
    n = 8
    conf = ap.configuration_from_grid(n, n * 1000 / 512, mesh_factor=1, a_start=A_START, a_stop=1.0,
                                      a_nbody_maxstep=1 - A_START, float_dtype=np.float64)
    rng = np.random.default_rng(12)
    w = rng.normal(size=(n, n, n))
    tree_map = jax.tree_util.tree_map

    with ap.pmwd_x64():
        cosmo0 = pmwd.boltzmann(pmwd.Cosmology(conf, A_s_1e9=2.1, n_s=COSMO.n_s, Omega_m=COSMO.omega_m,
                                               Omega_b=COSMO.omega_b, h=COSMO.h), conf)

        @jax.jit
        def loss(noise, cosmo):
            ptcl, obsvbl = pmwd.lpt(pmwd.linear_modes(noise, cosmo, conf), cosmo, conf)
            ptcl, obsvbl = ap.emulator_nbody(ptcl, obsvbl, cosmo, conf, emulator=emu, tile_size=8)
            return jnp.sum(w * pmwd.scatter(ptcl, conf))

        noise = jnp.asarray(white_noise(n, 13), dtype=jnp.float64)
        g_noise, g_cosmo = jax.grad(loss, argnums=(0, 1))(noise, cosmo0)
        assert isinstance(g_cosmo, pmwd.Cosmology) and float(g_cosmo.Omega_m) != 0
        assert float(jnp.abs(g_cosmo.growth).max()) > 0
        d_noise = jnp.asarray(rng.normal(size=(n, n, n)))
        d_cosmo = tree_map(lambda x: jnp.asarray(rng.normal(size=np.shape(x))) * 0.01 * jnp.abs(x).mean(), cosmo0)
        ad = float(jnp.vdot(g_noise, d_noise)) + sum(
            float(jnp.vdot(a, b)) for a, b in zip(jax.tree_util.tree_leaves(g_cosmo),
                                                   jax.tree_util.tree_leaves(d_cosmo)))
        h = 1e-6
        plus = loss(noise + h * d_noise, tree_map(lambda x, d: x + h * d, cosmo0, d_cosmo))
        minus = loss(noise - h * d_noise, tree_map(lambda x, d: x - h * d, cosmo0, d_cosmo))
        fd = float(plus - minus) / (2 * h)
    assert ad == pytest.approx(fd, rel=1e-6)


# -- the backend -----------------------------------------------------------------------------------
def test_backend_registration_and_bad_inputs(ap, ics):
    assert isinstance(get_backend("pmwd", mesh_factor=2), ap.PmwdBackend)
    with pytest.raises(InputError, match="mesh_factor"):
        get_backend("pmwd", mesh_factor=5)
    with pytest.raises(InputError, match="steps"):
        get_backend("pmwd", steps=0)
    with pytest.raises(InputError, match="a_start"):
        simulate(ics, COSMO, z=[20.0], backend="pmwd", a_start=0.1)


@pytest.mark.slow
def test_backend_equals_pmwd_nbody(ap, pmwd, conf, cosmo, ics):
    # one output at a_stop = 1: the backend's loop is pmwd.nbody's (same steps, same compiled step)
    snap = simulate(ics, COSMO, z=[0.0], backend="pmwd", **REF)[0]
    with ap.pmwd_x64():
        ptcl, obsvbl = pmwd.lpt(ap.modes_from_initial_conditions(ics, cosmo, conf), cosmo, conf)
        ptcl, _ = pmwd.nbody(ptcl, obsvbl, cosmo, conf)
    ref = ap.snapshot_from_particles(ptcl, 1.0, COSMO)
    np.testing.assert_allclose(snap.displacement_field(), ref.displacement_field(), atol=1e-5)
    np.testing.assert_allclose(snap.velocity_field(), ref.velocity_field(), rtol=1e-5, atol=1e-3)
    assert snap.meta["backend"] == "pmwd" and snap.meta["steps_taken"] == REF["steps"]
    assert snap.meta["n_mesh"] == 3 * N and snap.meta["seed"] == SEED


@pytest.fixture(scope="module")
def pm_runs(ics):
    return simulate(ics, COSMO, z=[3.0, 0.0], backend="pmwd", **REF)


@pytest.mark.slow
def test_backend_vs_2lpt_at_high_z_and_jaxpm_at_z0(pm_runs, ics):
    from emu_backend.validation.power import power_spectrum

    lpt = simulate(ics, COSMO, z=[3.0, 0.0], backend="2lpt")

    def power(s):
        return power_spectrum(s.density(N), BOX).power

    assert [s.z for s in pm_runs] == [3.0, 0.0] and pm_runs[0].meta["steps_taken"] < pm_runs[1].meta["steps_taken"]
    # z = 3, the two lowest k bins (k < 0.6 h/Mpc, linear): PM with a 3x CIC mesh from a = 1/16
    # loses ~3% of the power to force smoothing (measured 2-4%); 6% bounds it
    ratio = power(pm_runs[0])[:2] / power(lpt[0])[:2]
    assert np.all(np.abs(ratio - 1) < 0.06), ratio
    pytest.importorskip("jaxpm", reason="JaxPM not installed: pip install 'emu_backend[jaxpm]'")
    jx = simulate(ics, COSMO, z=[0.0], backend="jaxpm", mesh_factor=2, rtol=1e-3, atol=1e-3)[0]
    # z = 0, k < k_Nyquist / 2: two PM codes (different mesh, painting, integrator) agree within 6%
    # (measured 1-4% on this grid)
    ratio = power(pm_runs[1])[:4] / power(jx)[:4]
    assert np.all(np.abs(ratio - 1) < 0.06), ratio


_JAXPM_ALONE = """
import sys, numpy as np
from emu_backend.cosmology import QUIJOTE_FIDUCIAL as C
from emu_backend.ics import InitialConditions
from emu_backend.simulator import simulate
ics = InitialConditions.from_noise({n}, {box}, C, seed={seed})
s = simulate(ics, C, z=[1.0], backend="jaxpm", mesh_factor=1, rtol=1e-3, atol=1e-3)[0]
assert "pmwd" not in sys.modules
np.save(sys.argv[1], np.concatenate([s.positions, s.velocities], axis=1))
"""


@pytest.mark.slow
def test_mixed_use_pmwd_torch_jaxpm(ap, ics, pm_runs, tmp_path, small_emulator):
    # pmwd (run by the fixture), then the torch emulator, then JaxPM in this process gives JaxPM's
    # numbers of a process that never imported pmwd, bit for bit; JAX's x64 and torch's dtype unchanged
    pytest.importorskip("jaxpm", reason="JaxPM not installed: pip install 'emu_backend[jaxpm]'")
    import subprocess
    import sys

    import jax
    import torch

    dtype = torch.get_default_dtype()
    emu_a = small_emulator.predict(ics.displacement, COSMO.omega_m, [0.0], tile_size=16)[0].displacement
    here = simulate(ics, COSMO, z=[1.0], backend="jaxpm", mesh_factor=1, rtol=1e-3, atol=1e-3)[0]
    out = tmp_path / "alone.npy"
    code = _JAXPM_ALONE.format(n=N, box=BOX, seed=SEED)
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    alone = np.load(out)
    np.testing.assert_array_equal(here.positions, alone[:, :3])
    np.testing.assert_array_equal(here.velocities, alone[:, 3:])
    assert jax.config.jax_enable_x64 is False and torch.get_default_dtype() == dtype
    emu_b = small_emulator.predict(ics.displacement, COSMO.omega_m, [0.0], tile_size=16)[0].displacement
    np.testing.assert_array_equal(emu_a, emu_b)
    # and the pmwd run itself was not disturbed by torch: same numbers again
    again = simulate(ics, COSMO, z=[3.0, 0.0], backend="pmwd", **REF)[0]
    np.testing.assert_array_equal(again.positions, pm_runs[0].positions)


@pytest.mark.slow
def test_doc_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, f"no python block in {DOC}"
    namespace = {}  # the blocks continue each other
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), namespace)
