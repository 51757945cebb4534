"""Field-level inference (emu_backend.fieldlevel): the posterior against scipy and numpyro, the MAP and the
NUTS posterior against the Wiener filter, resume bit for bit.

References independent of the code under test:
- the log posterior against ``scipy.stats.norm.logpdf`` sums (float64 round-off, 1e-12 relative);
- numpyro's potential energy of the same posterior, built from its own distributions and interval
  transform, against the torch log posterior plus the logit Jacobian written out here (1e-10 relative);
- linear dynamics at fixed cosmology make the posterior Gaussian with a closed form per Fourier mode: for
  ``d = D L w + n``, ``L`` diagonal in Fourier space with real amplitudes ``a_k`` (taken from the numpy ICs
  code, :func:`emu_backend.ics.linear_field`), the mean is ``w_k = D a_k d_k / (D^2 a_k^2 + sigma^2)`` and the
  variance per mode ``sigma^2 / (D^2 a_k^2 + sigma^2)`` (the Wiener filter), computed here with numpy FFTs.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.stats
import torch

from emu_backend.cosmology import QUIJOTE_FIDUCIAL, EisensteinHuPower, growth_factor
from emu_backend.differentiable import ForwardModel
from emu_backend.errors import DomainError, FileFormatError, InputError, OutputLockedError
from emu_backend.ics import linear_field, white_noise
from emu_backend.io.output_lock import output_lock

pytest.importorskip("jax", reason="field-level sampling runs numpyro through the JAX adapter (extra 'jax')")
pytest.importorskip("numpyro", reason="field-level sampling needs numpyro (extra 'jax')")

from _calibration import coverage  # noqa: E402  (tests/_calibration.py)

from emu_backend.fieldlevel import (  # noqa: E402
    FieldLikelihood,
    Priors,
    SamplerConfig,
    find_map,
    numpyro_model,
    sample_posterior,
)
from emu_backend.fieldlevel import sampling as sampling_module  # noqa: E402
from emu_backend.fieldlevel.coordinates import NoiseCoordinates  # noqa: E402
from emu_backend.fieldlevel.precondition import (  # noqa: E402
    fourier_scale,
    from_noise,
    hessian_scale,
    shell_index,
    to_noise,
)

N = 8
BOX = 250.0  # Mpc/h: large cells keep the linear model linear-ish; the emulator is not used here
Z = 0.5


def _linear_problem(sigma=0.3, seed=1, infer=(), mask=None):
    fm = ForwardModel(N, BOX, Z, dynamics="linear")
    w = white_noise(N, seed=seed).astype(np.float64)
    truth = fm(torch.from_numpy(w)).numpy()
    data = truth + sigma * np.random.default_rng(seed + 100).normal(size=truth.shape)
    return FieldLikelihood(fm, data, noise_sigma=sigma, infer=infer, mask=mask), w


def _amplitudes():
    """a_k of the linear model at z = 0 (rfft layout), from the numpy ICs code: delta_k = a_k w_k."""
    w = white_noise(N, seed=99).astype(np.float64)
    delta = linear_field(w, EisensteinHuPower(QUIJOTE_FIDUCIAL), BOX, dtype=np.float64).density
    return (np.fft.rfftn(delta) / np.fft.rfftn(w)).real


def _wiener(data, sigma):
    """Posterior mean (real space) and per-mode variance (rfft layout) of the white noise."""
    a = _amplitudes() * float(growth_factor(Z, QUIJOTE_FIDUCIAL.omega_m))
    mean = np.fft.irfftn(a * np.fft.rfftn(data) / (a**2 + sigma**2), s=(N,) * 3, axes=(0, 1, 2))
    return mean, sigma**2 / (a**2 + sigma**2)


# -- the posterior -------------------------------------------------------------------------------------------
def test_log_posterior_equals_scipy_sums_with_mask_noise_map_and_priors():
    fm = ForwardModel(N, BOX, Z, dynamics="za", output="density")
    rng = np.random.default_rng(3)
    data = rng.normal(size=(N,) * 3)
    sigma_map = rng.uniform(0.2, 0.6, size=(N,) * 3)
    mask = rng.uniform(size=(N,) * 3) < 0.7
    lik = FieldLikelihood(fm, data, noise_sigma=sigma_map, mask=mask, priors=Priors(omega_m=(0.2, 0.4)))
    w = rng.normal(size=(N,) * 3)
    om, s8 = 0.31, 0.83
    got = float(lik.log_prob(torch.from_numpy(w), omega_m=om, sigma8=s8))
    delta = fm(torch.from_numpy(w), omega_m=om, sigma8=s8).numpy()
    ref = (scipy.stats.norm.logpdf(data[mask], delta[mask], sigma_map[mask]).sum()
           + scipy.stats.norm.logpdf(w).sum() + scipy.stats.uniform.logpdf(om, 0.2, 0.2)
           + scipy.stats.uniform.logpdf(s8, 0.6, 0.4))
    assert got == pytest.approx(ref, rel=1e-12)
    assert float(lik.log_prob(torch.from_numpy(w), omega_m=0.45, sigma8=s8)) == -np.inf  # outside the box


@pytest.mark.parametrize("dynamics", ["linear", "za"])
def test_log_posterior_gradient_equals_finite_differences(dynamics):
    fm = ForwardModel(N, BOX, Z, dynamics=dynamics, output="density")
    rng = np.random.default_rng(4)
    lik = FieldLikelihood(fm, rng.normal(size=(N,) * 3), noise_sigma=0.5)
    w = torch.from_numpy(rng.normal(size=(N,) * 3)).requires_grad_(True)
    om = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    s8 = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    grads = torch.autograd.grad(lik.log_prob(w, omega_m=om, sigma8=s8), (w, om, s8))
    v = rng.normal(size=(N,) * 3)
    dv = rng.normal(size=2)
    ad = float((grads[0] * torch.from_numpy(v)).sum()) + float(grads[1]) * dv[0] + float(grads[2]) * dv[1]
    h = 1e-6

    def f(t):
        with torch.no_grad():
            return float(lik.log_prob(w.detach() + t * torch.from_numpy(v), omega_m=0.3 + t * dv[0],
                                      sigma8=0.8 + t * dv[1]))

    # central difference: truncation ~h^2, round-off ~1e-16 |log p| / h ~ 1e-7 relative of the directional slope
    assert ad == pytest.approx((f(h) - f(-h)) / (2 * h), rel=1e-5)


def test_numpyro_potential_equals_the_torch_posterior_plus_the_interval_jacobian():
    jax = pytest.importorskip("jax")
    from numpyro.infer.util import potential_energy

    lik, _ = _linear_problem(infer=("omega_m", "sigma8"), mask=np.random.default_rng(5).uniform(size=(N,) * 3) < 0.8)
    rng = np.random.default_rng(6)
    w = rng.normal(size=(N,) * 3)
    u = {"omega_m": 0.7, "sigma8": -0.4}  # unconstrained (logit) coordinates
    theta, log_jac = {}, 0.0
    for name, x in u.items():
        lo, hi = lik.priors.bounds(name)
        s = 1.0 / (1.0 + np.exp(-x))
        theta[name] = lo + (hi - lo) * s
        log_jac += np.log(hi - lo) + np.log(s) + np.log1p(-s)
    with jax.enable_x64(True):
        pe = float(potential_energy(numpyro_model(lik), (), {}, {"noise": jax.numpy.asarray(w),
                                                                  **{k: jax.numpy.asarray(v) for k, v in u.items()}}))
    ref = -(float(lik.log_prob(torch.from_numpy(w), **theta)) + log_jac)
    assert pe == pytest.approx(ref, rel=1e-10)


def test_fourier_scale_is_the_wiener_posterior_std_per_mode():
    """The preconditioner's s_k^2 against the linear posterior's per-mode variance sigma^2 / (a_k^2 + sigma^2),
    a_k from the numpy ICs code (float64 round-off: 1e-10); A and A^-1 invert each other (1e-12)."""
    sigma = 0.3
    lik, _ = _linear_problem(sigma=sigma)
    _, var = _wiener(lik.data, sigma)
    scale = fourier_scale(lik)
    np.testing.assert_allclose(scale**2, var, rtol=1e-10)
    u = np.random.default_rng(3).normal(size=(2, N, N, N))
    np.testing.assert_allclose(from_noise(to_noise(u, scale), scale), u, rtol=0, atol=1e-12)
    # a mask and a noise map enter as the observed fraction times the mean inverse variance
    mask = np.random.default_rng(4).uniform(size=(N,) * 3) < 0.5
    masked = FieldLikelihood(lik.model, lik.data, noise_sigma=np.full((N,) * 3, 2 * sigma), mask=mask)
    a2 = sigma**2 * (1.0 / var - 1.0)
    np.testing.assert_allclose(fourier_scale(masked) ** 2, 1.0 / (1.0 + mask.mean() * a2 / (2 * sigma) ** 2),
                               rtol=1e-10)


def test_hessian_scale_is_the_probe_weighted_wiener_precision_per_shell():
    """On the linear model -log p is quadratic with precision 1 + a_k^2 / sigma^2 per mode (a_k from the numpy
    ICs code): the central difference of gradients is exact up to round-off, so each shell's measured
    curvature is that precision averaged with the probes' |v_k|^2 as weights (the same seeded vectors),
    1e-8 relative (round-off of gradient differences at step 1e-3)."""
    sigma = 0.3
    lik, w = _linear_problem(sigma=sigma)
    _, var = _wiener(lik.data, sigma)
    scale = hessian_scale(lik, w, probes=2, seed=4)
    shells = shell_index(N)
    weight = np.ones(shells.shape)
    weight[..., 1:N // 2] = 2.0
    rng = np.random.default_rng(4)
    vk2 = sum(np.abs(np.fft.rfftn(rng.normal(size=(N,) * 3))) ** 2 for _ in range(2))
    for k in np.unique(shells):
        sel = shells == k
        expected = (weight[sel] * vk2[sel] / var[sel]).sum() / (weight[sel] * vk2[sel]).sum()
        np.testing.assert_allclose(1.0 / scale[sel] ** 2, max(expected, 1.0), rtol=1e-8, err_msg=f"shell {k}")


def test_preconditioned_potential_is_the_posterior_of_w_equal_a_u():
    """numpyro's potential in the preconditioned coordinates u, at two points, against the torch log
    posterior at w = A u: the same differences (the Jacobian log|det A| is a constant), 1e-10 relative."""
    jax = pytest.importorskip("jax")
    from numpyro.infer.util import potential_energy

    lik, _ = _linear_problem(infer=("sigma8",))
    scale = fourier_scale(lik)
    rng = np.random.default_rng(8)
    us = [rng.normal(size=(N,) * 3) for _ in range(2)]
    # sigma8 at the unconstrained (logit) coordinate 0.3 at both points: the same interval Jacobian
    lo, hi = lik.priors.bounds("sigma8")
    theta = lo + (hi - lo) / (1.0 + np.exp(-0.3))
    with jax.enable_x64(True):
        model = numpyro_model(lik, NoiseCoordinates(lik.model, scale, {"sigma8": theta}, centre=False))
        pe = [float(potential_energy(model, (), {}, {"u": jax.numpy.asarray(u), "sigma8": jax.numpy.asarray(0.3)}))
              for u in us]
    ref = [-float(lik.log_prob(torch.from_numpy(to_noise(u, scale)), sigma8=theta)) for u in us]
    assert pe[0] - pe[1] == pytest.approx(ref[0] - ref[1], rel=1e-10)


# -- partially centred coordinates (joint inference) ---------------------------------------------------------
def _logit(x, lo, hi):
    s = (x - lo) / (hi - lo)
    return float(np.log(s / (1 - s)))


def _interval_log_jacobian(theta, lik):
    total = 0.0
    for name, x in theta.items():
        lo, hi = lik.priors.bounds(name)
        s = (x - lo) / (hi - lo)
        total += np.log(hi - lo) + np.log(s) + np.log1p(-s)
    return total


def _dense_log_det(coords, theta):
    """log |det dw/du| from the dense (N^3, N^3) matrix of the map, column by column (numpy slogdet)."""
    eye = np.eye(N**3)
    jac = np.stack([coords.to_noise(e.reshape((N,) * 3), theta).ravel() for e in eye], axis=1)
    sign, value = np.linalg.slogdet(jac)
    assert sign > 0
    return value


def test_centred_coordinates_are_the_preconditioner_at_the_reference_with_the_dense_jacobian():
    """The partially centred map ``w = m(theta) u``: equal to the plain preconditioner at theta_ref (bit for
    bit), centring fractions ``1 - A_k^2`` on the linear field's modes and 0 at k = 0 and on the Nyquist
    planes, and its Fourier-sum log-determinant against numpy's slogdet of the dense 512 x 512 Jacobian
    (float64 LU of a well-conditioned matrix: 1e-9 absolute on values of order 10-100)."""
    lik, _ = _linear_problem(infer=("omega_m", "sigma8"))
    scale = fourier_scale(lik)
    ref = {"omega_m": 0.3, "sigma8": 0.8}
    coords = NoiseCoordinates(lik.model, scale, ref)
    u = np.random.default_rng(11).normal(size=(N,) * 3)
    np.testing.assert_array_equal(coords.to_noise(u, ref), to_noise(u, scale))
    f = np.fft.fftfreq(N) * N
    nyquist = (np.abs(f[:, None, None]) == N // 2) | (np.abs(f[None, :, None]) == N // 2) | \
        (np.arange(N // 2 + 1)[None, None, :] == N // 2)
    assert np.all(coords.centring[nyquist] == 0) and coords.centring[0, 0, 0] == 0
    inner = ~nyquist
    inner[0, 0, 0] = False
    np.testing.assert_allclose(coords.centring[inner], 1 - scale[inner] ** 2, rtol=0, atol=1e-15)
    base = _dense_log_det(coords, ref)
    for theta in ({"omega_m": 0.22, "sigma8": 0.93}, {"omega_m": 0.45, "sigma8": 0.64}):
        got = float(coords.log_det(coords.log_ratio(*(theta[k] for k in coords.names))))
        assert got == pytest.approx(_dense_log_det(coords, theta) - base, abs=1e-9)
        np.testing.assert_allclose(coords.from_noise(coords.to_noise(u, theta), theta), u, rtol=0, atol=1e-12)
    assert NoiseCoordinates(lik.model, scale, ref, centre=False).centring is None
    assert NoiseCoordinates(lik.model, scale, {}).centring is None  # fixed cosmology: nothing to centre on


def test_centred_potential_is_the_posterior_of_w_plus_the_jacobian():
    """numpyro's potential in (u, theta) for one u at three theta against the torch log posterior at
    w = m(theta) u plus the dense log-determinant and the logit Jacobian: equal up to one constant
    (log |det m(theta_ref)|), 1e-10 relative."""
    jax = pytest.importorskip("jax")
    from numpyro.infer.util import potential_energy

    lik, _ = _linear_problem(infer=("omega_m", "sigma8"))
    coords = NoiseCoordinates(lik.model, fourier_scale(lik), {"omega_m": 0.3, "sigma8": 0.8})
    u = np.random.default_rng(12).normal(size=(N,) * 3)
    with jax.enable_x64(True):
        model = numpyro_model(lik, coords)
    offsets = []
    for theta in ({"omega_m": 0.3, "sigma8": 0.8}, {"omega_m": 0.25, "sigma8": 0.9}, {"omega_m": 0.4, "sigma8": 0.7}):
        with jax.enable_x64(True):
            unconstrained = {k: jax.numpy.asarray(_logit(v, *lik.priors.bounds(k))) for k, v in theta.items()}
            pe = float(potential_energy(model, (), {}, {"u": jax.numpy.asarray(u), **unconstrained}))
        w = coords.to_noise(u, theta)
        ref = -(float(lik.log_prob(torch.from_numpy(w), **theta)) + _dense_log_det(coords, theta)
                + _interval_log_jacobian(theta, lik))
        offsets.append(pe - ref)
    assert offsets[1] == pytest.approx(offsets[0], abs=1e-10 * abs(pe))
    assert offsets[2] == pytest.approx(offsets[0], abs=1e-10 * abs(pe))


def test_centred_potential_gradient_equals_finite_differences():
    """jax.grad of numpyro's potential in (u, logit theta), through the torch bridge of the centring's
    log-ratio and of the forward model, against a central difference along a random direction (step 1e-5:
    truncation ~1e-10, round-off ~1e-16 |U| / h; 1e-6 relative)."""
    jax = pytest.importorskip("jax")
    from numpyro.infer.util import potential_energy

    lik, _ = _linear_problem(infer=("omega_m", "sigma8"))
    coords = NoiseCoordinates(lik.model, fourier_scale(lik), {"omega_m": 0.3, "sigma8": 0.8})
    rng = np.random.default_rng(13)
    with jax.enable_x64(True):
        model = numpyro_model(lik, coords)
        jnp = jax.numpy
        point = {"u": jnp.asarray(rng.normal(size=(N,) * 3)), "omega_m": jnp.asarray(0.4), "sigma8": jnp.asarray(-0.5)}
        direction = {"u": jnp.asarray(rng.normal(size=(N,) * 3)), "omega_m": jnp.asarray(1.0),
                     "sigma8": jnp.asarray(-0.7)}

        def along(t):
            return float(potential_energy(model, (), {}, {k: point[k] + t * direction[k] for k in point}))

        grad = jax.grad(lambda p: potential_energy(model, (), {}, p))(point)
        slope = sum(float(jnp.sum(grad[k] * direction[k])) for k in point)
        h = 1e-5
        assert slope == pytest.approx((along(h) - along(-h)) / (2 * h), rel=1e-6)


def _exact_parameter_posterior(lik, sigma):
    """Marginal posterior of (Omega_m, sigma8) of the linear model on an 81 x 81 grid over the prior boxes.

    The field integrates out in closed form: the data are Gaussian with a covariance diagonal in Fourier
    space, ``lambda_k = D(z, Om)^2 a_k(Om, s8)^2 + sigma^2`` per mode of the complex FFT, so
    ``log p(d | theta) = -1/2 sum_k (|d_k|^2 / (N^3 lambda_k) + log lambda_k)``; ``a_k`` from the numpy ICs
    code (:func:`emu_backend.ics.linear_field` with :class:`EisensteinHuPower`), proportional to sigma8.
    Returns the grids and the marginal means and stds."""
    oms = np.linspace(*lik.priors.bounds("omega_m"), 81)
    s8s = np.linspace(*lik.priors.bounds("sigma8"), 81)
    d2 = np.abs(np.fft.rfftn(lik.data)) ** 2
    weight = np.ones(d2.shape)
    weight[..., 1:N // 2] = 2.0
    w = white_noise(N, seed=99).astype(np.float64)
    logl = np.empty((oms.size, s8s.size))
    for i, om in enumerate(oms):
        cosmo = QUIJOTE_FIDUCIAL.clone(omega_m=float(om))
        delta = linear_field(w, EisensteinHuPower(cosmo), BOX, dtype=np.float64).density
        a = (np.fft.rfftn(delta) / np.fft.rfftn(w)).real * float(growth_factor(Z, om)) / QUIJOTE_FIDUCIAL.sigma8
        for j, s8 in enumerate(s8s):
            lam = (s8 * a) ** 2 + sigma**2
            logl[i, j] = -0.5 * np.sum(weight * (d2 / (N**3 * lam) + np.log(lam)))
    post = np.exp(logl - logl.max())
    post /= post.sum()
    out = {}
    for name, values, marginal in (("omega_m", oms, post.sum(1)), ("sigma8", s8s, post.sum(0))):
        mean = np.sum(values * marginal)
        out[name] = (mean, np.sqrt(np.sum((values - mean) ** 2 * marginal)))
    return out


def test_leapfrog_energy_error_is_second_order_with_the_default_tsc_painting():
    """numpyro's own velocity Verlet on the Zel'dovich posterior (particles painted by the default window,
    TSC), trajectories of length 1 from the true noise at step sizes 0.1, 0.05, 0.025: the integrator's
    energy error is O(step^2) for a potential whose gradient is Lipschitz (Hairer, Lubich & Wanner,
    Geometric Numerical Integration, ch. IX), so each halving divides the mean |Delta H| by 4; accepted
    in [3.5, 4.5] (benchmarks/smoothness.py measured 4.00-4.02 on the same kind of problem, 2.0-2.8 with CIC, whose
    gradient jumps at mesh planes)."""
    jax = pytest.importorskip("jax")
    from numpyro.infer.hmc_util import euclidean_kinetic_energy, velocity_verlet
    from numpyro.infer.util import initialize_model

    fm = ForwardModel(N, BOX, Z, dynamics="za")
    assert fm.window == "tsc"
    w = white_noise(N, seed=5).astype(np.float64)
    with torch.no_grad():
        delta = fm(torch.from_numpy(w)).numpy()
    lik = FieldLikelihood(fm, delta + 0.5 * np.random.default_rng(6).normal(size=delta.shape), noise_sigma=0.5,
                          infer=())
    steps = (0.1, 0.05, 0.025)
    errors = np.zeros((2, len(steps)))
    with jax.enable_x64(True):
        jnp = jax.numpy
        coords = NoiseCoordinates(fm, hessian_scale(lik, w), {})
        potential = initialize_model(jax.random.PRNGKey(0), numpyro_model(lik, coords)).potential_fn
        init, update = velocity_verlet(potential, euclidean_kinetic_energy)
        inverse_mass = jnp.ones(N**3)

        def energy(state):
            return float(state.potential_energy + euclidean_kinetic_energy(inverse_mass, state.r["u"].ravel()))

        for i in range(2):
            momentum = {"u": jnp.asarray(np.random.default_rng(20 + i).normal(size=(N,) * 3))}
            for j, eps in enumerate(steps):
                state = init({"u": jnp.asarray(coords.from_noise(w, {}))}, momentum)
                h0 = energy(state)
                for _ in range(round(1 / eps)):
                    state = update(eps, inverse_mass, state)
                errors[i, j] = abs(energy(state) - h0)
    mean = errors.mean(axis=0)
    ratios = mean[:-1] / mean[1:]
    assert np.all((ratios > 3.5) & (ratios < 4.5)), (mean, ratios)


@pytest.mark.parametrize("centre", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_joint_nuts_posterior_is_the_exact_marginal_of_omega_m_and_sigma8(centre):
    """The joint chain (field, Omega_m, sigma8) of the linear model against the closed-form marginal
    posterior of the two parameters (the field integrated out per Fourier mode, on a grid): means within
    4 posterior stds / sqrt(ESS) (numpyro's bulk ESS), stds within 25% (the relative error of a std from
    ESS >= 60 draws is ~9%)."""
    sigma = 0.3
    lik, _ = _linear_problem(sigma=sigma, seed=21, infer=("omega_m", "sigma8"))
    exact = _exact_parameter_posterior(lik, sigma)
    post = sample_posterior(lik, SamplerConfig(num_warmup=100, num_samples=200, num_chains=1, max_tree_depth=5,
                                               seed=2, centre=centre))
    for name, (mean, std) in exact.items():
        draws = post.samples[name].ravel()
        ess = post.diagnostics[name]["n_eff"]
        assert ess >= 60, (name, ess)
        assert abs(draws.mean() - mean) < 4 * std / np.sqrt(ess), (name, draws.mean(), mean, std, ess)
        assert draws.std() == pytest.approx(std, rel=0.25), (name, draws.std(), std)


def test_bad_inputs_are_refused_with_the_value_named():
    fm = ForwardModel(N, BOX, Z, dynamics="linear")
    data = np.zeros((N,) * 3)
    with pytest.raises(InputError, match="mesh shape"):
        FieldLikelihood(fm, np.zeros((4,) * 3), noise_sigma=1.0)
    with pytest.raises(InputError, match="noise_sigma"):
        FieldLikelihood(fm, data, noise_sigma=0.0)
    with pytest.raises(InputError, match="mask selects no voxel"):
        FieldLikelihood(fm, data, noise_sigma=1.0, mask=np.zeros((N,) * 3, bool))
    with pytest.raises(InputError, match="infer"):
        FieldLikelihood(fm, data, noise_sigma=1.0, infer=("h",))
    with pytest.raises(InputError, match="prior sigma8 high"):
        Priors(sigma8=(0.9, 0.8))
    with pytest.raises(InputError, match="one redshift"):
        FieldLikelihood(ForwardModel(N, BOX, [0.0, 1.0], dynamics="za"), data, noise_sigma=1.0)
    from emu_backend.inference import Emulator, ZdepConvention
    from emu_backend.nn import StyledVNet
    emu = Emulator(ZdepConvention(StyledVNet(2, width=2)), dtype="float64")
    with pytest.raises(DomainError, match="trained range"):
        FieldLikelihood(ForwardModel(N, N * 1000 / 512, Z, emulator=emu), data, noise_sigma=1.0,
                        priors=Priors(omega_m=(0.05, 0.5)))
    with pytest.raises(InputError, match="init_theta sigma8"):
        find_map(FieldLikelihood(fm, data, noise_sigma=1.0, infer=("sigma8",)), init_theta={"sigma8": 2.0})
    with pytest.raises(InputError, match="num_samples"):
        SamplerConfig(num_samples=0)
    with pytest.raises(InputError, match="precondition.*'mass'"):
        SamplerConfig(precondition="mass")
    with pytest.raises(InputError, match="centre"):
        SamplerConfig(centre="yes")
    with pytest.raises(InputError, match=r"rfft shape \(8, 8, 5\)"):
        NoiseCoordinates(fm, np.ones((8, 8, 8)), {})
    with pytest.raises(InputError, match=r"\(0, 1\].*1.5"):
        NoiseCoordinates(fm, np.full((8, 8, 5), 1.5), {})
    with pytest.raises(InputError, match="reference must map"):
        NoiseCoordinates(fm, np.ones((8, 8, 5)), {"h": 0.7})
    with pytest.raises(InputError, match="reference sigma8"):
        NoiseCoordinates(fm, np.ones((8, 8, 5)), {"sigma8": -0.8})


# -- MAP and NUTS against the Wiener filter ----------------------------------------------------------------
def test_map_at_fixed_cosmology_is_the_wiener_filter():
    sigma = 0.3
    lik, _ = _linear_problem(sigma=sigma)
    result = find_map(lik)
    assert result.converged and result.iterations < 100
    mean, _ = _wiener(lik.data, sigma)
    # a quadratic objective: L-BFGS reaches the exact optimum up to its stopping rule (1e-9 relative change)
    np.testing.assert_allclose(result.noise, mean, rtol=0, atol=1e-5 * np.abs(mean).max())


def test_joint_map_runs_sigma8_to_the_prior_edge():
    """The known bias of a joint mode over the field and its amplitude (docs/field_level.md): a larger
    sigma8 with a smaller noise field always raises the joint density, so the MAP's sigma8 sits at the
    upper prior bound; the sampler's marginal posterior is the estimate of sigma8."""
    lik, _ = _linear_problem(infer=("sigma8",))
    result = find_map(lik, max_iterations=50)
    assert result.theta["sigma8"] == pytest.approx(lik.priors.sigma8[1], abs=1e-3)


@pytest.mark.parametrize("precondition", ["hessian", "linear", "none"])
def test_nuts_posterior_is_the_wiener_posterior(precondition):
    sigma = 0.3
    lik, _ = _linear_problem(sigma=sigma, seed=7)
    mean, var = _wiener(lik.data, sigma)
    post = sample_posterior(lik, SamplerConfig(num_warmup=80, num_samples=100, num_chains=1, max_tree_depth=5,
                                               seed=3, precondition=precondition))
    draws = post.samples["noise"][0]
    # mean: correlation with the Wiener mean (its error is ~ sqrt(var / ESS) per mode)
    assert np.corrcoef(draws.mean(0).ravel(), mean.ravel())[0, 1] > 0.97
    # variance per Fourier mode (rfft amplitude^2 / N^3 of the residual), averaged in bins of the analytic value;
    # ~100 draws over >= 50 modes per bin: a few per cent of sampling error; 10% allowed
    resid = np.fft.rfftn(draws - mean, axes=(1, 2, 3))
    measured = (np.abs(resid) ** 2).mean(0) / N**3
    weight = np.ones_like(var)
    weight[..., 1:-1] = 2.0  # rfft: the interior planes stand for two modes each
    edges = np.quantile(var, [0.0, 0.33, 0.66, 1.0])
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (var >= lo) & (var <= hi)
        ratio = (measured[sel] * weight[sel]).sum() / (var[sel] * weight[sel]).sum()
        assert ratio == pytest.approx(1.0, abs=0.1), (lo, hi)
    assert post.diagnostics["noise"]["n_eff_median"] > 50


# -- resume -------------------------------------------------------------------------------------------------
SMALL = SamplerConfig(num_warmup=4, num_samples=6, num_chains=2, max_tree_depth=3, save_every=2, seed=5)


def _assert_same(a, b):
    for group in ("samples", "stats"):
        ga, gb = getattr(a, group), getattr(b, group)
        assert sorted(ga) == sorted(gb)
        for k in ga:
            np.testing.assert_array_equal(ga[k], gb[k], err_msg=f"{group}[{k}]")


def _killed_and_resumed(lik, folder, monkeypatch, saves: int):
    """SMALL's run into ``folder`` killed right after its ``saves``-th durable save, then resumed."""
    real_save, calls = sampling_module._save_state, {"n": 0}

    def crash_after_save(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == saves:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(sampling_module, "_save_state", crash_after_save)
    with pytest.raises(KeyboardInterrupt):
        sample_posterior(lik, SMALL, out_dir=folder)
    monkeypatch.setattr(sampling_module, "_save_state", real_save)
    return sample_posterior(lik, SMALL, out_dir=folder)


def test_killed_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    lik, _ = _linear_problem(infer=("sigma8",))
    whole = sample_posterior(lik, SMALL, out_dir=tmp_path / "whole")
    assert whole.samples["noise"].shape == (2, 6, N, N, N) and whole.samples["sigma8"].shape == (2, 6)
    unsaved = sample_posterior(lik, SMALL)
    _assert_same(whole, unsaved)

    resumed = _killed_and_resumed(lik, tmp_path / "killed", monkeypatch, 7)  # chain 1, step 4
    _assert_same(whole, resumed)


def test_chain_timings_are_kept_apart_from_the_draws_and_survive_a_resume(tmp_path, monkeypatch):
    """Posterior.timing: per-draw seconds and the warm-up's seconds and gradients, saved with the chain state;
    a resumed run reports the warm-up gradients of the uninterrupted run (the same steps, counted once)."""
    lik, _ = _linear_problem(infer=("sigma8",))
    t0 = time.perf_counter()
    whole = sample_posterior(lik, SMALL, out_dir=tmp_path / "whole")
    wall = time.perf_counter() - t0
    t = whole.timing
    assert t["draw_seconds"].shape == (2, 6) and t["warmup_seconds"].shape == t["warmup_gradients"].shape == (2,)
    assert np.all(t["draw_seconds"] > 0) and np.all(t["warmup_seconds"] > 0)
    assert t["draw_seconds"].sum() + t["warmup_seconds"].sum() <= wall
    # NUTS takes 1 to 2^depth - 1 gradients a step
    assert np.all((t["warmup_gradients"] >= 4) & (t["warmup_gradients"] <= 4 * (2**3 - 1)))
    unsaved = sample_posterior(lik, SMALL)  # the same steps without a folder: the same gradient counts
    np.testing.assert_array_equal(unsaved.timing["warmup_gradients"], t["warmup_gradients"])

    resumed = _killed_and_resumed(lik, tmp_path / "killed", monkeypatch, 1)  # chain 0's first save (step 2)
    np.testing.assert_array_equal(resumed.timing["warmup_gradients"], t["warmup_gradients"])
    assert resumed.timing["draw_seconds"].shape == (2, 6) and np.all(resumed.timing["draw_seconds"] > 0)

    # a chain folder from before the timings were recorded: its state holds no accumulators -> NaN, not an error
    state = tmp_path / "whole" / "chain_0" / "state.npz"
    with np.load(state) as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("warmup_")}
    with open(state, "wb") as fh:
        np.savez(fh, **arrays)
    old = sample_posterior(lik, SMALL, out_dir=tmp_path / "whole")
    assert np.isnan(old.timing["warmup_seconds"][0]) and old.timing["warmup_seconds"][1] > 0
    _assert_same(whole, old)


def test_resume_refuses_other_data_and_tampered_draws(tmp_path):
    lik, _ = _linear_problem(infer=("sigma8",))
    sample_posterior(lik, SMALL, out_dir=tmp_path)
    other, _ = _linear_problem(infer=("sigma8",), seed=2)
    with pytest.raises(InputError, match="another posterior"):
        sample_posterior(other, SMALL, out_dir=tmp_path)
    part = tmp_path / "chain_1" / "part_00000.npz"
    raw = bytearray(part.read_bytes())
    raw[-40] ^= 1
    part.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="does not match the digest"):
        sample_posterior(lik, SMALL, out_dir=tmp_path)
    with output_lock(tmp_path / "busy", folder=True, command="another sampler"):  # a live writer holds the folder
        with pytest.raises(OutputLockedError, match="another sampler"):
            sample_posterior(lik, SMALL, out_dir=tmp_path / "busy")


def test_default_omega_m_prior_is_the_emulators_trained_range():
    """The shipped weights were trained on 0.1086 <= Omega_m <= 0.4996: the default prior box is that range
    (a wider default would be refused by the emulator's domain check)."""
    fm = ForwardModel(N, N * 1000 / 512, Z, output="density")  # the shipped emulator
    lik = FieldLikelihood(fm, np.zeros((N,) * 3), noise_sigma=1.0)
    assert lik.priors.omega_m == tuple(fm.emulator.model.domain.omega_m)
    assert lik.priors.omega_m != Priors().omega_m and lik.priors.sigma8 == Priors().sigma8


def test_too_few_draws_for_diagnostics_give_none_rather_than_an_error():
    lik, _ = _linear_problem()
    post = sample_posterior(lik, SamplerConfig(num_warmup=2, num_samples=3, num_chains=1, max_tree_depth=2))
    assert post.samples["noise"].shape == (1, 3, N, N, N) and post.diagnostics == {}


# -- calibration (CI size) ------------------------------------------------------------------------------------
def test_omega_m_and_sigma8_posteriors_cover_the_truth_over_repeated_seeds():
    """Calibration in CI size: for data drawn from the prior predictive of the linear model (Omega_m and
    sigma8 from their priors, the white noise and the observation noise from theirs), the central 90%
    interval of each parameter's NUTS posterior (both inferred jointly with the field) covers the truth.

    With 8 repeats the count per parameter is Binomial(8, 0.9) for a calibrated posterior; asking >= 6 fails
    a calibrated sampler with probability 3.8% per parameter (the seeds are fixed, so the outcome is too), and
    a posterior too narrow by 2x (coverage ~55%) passes with probability ~0.2. The larger calibration, with
    the emulator as the model, is benchmarks/calibration.py; a 10-repeat version of this one with longer
    chains is in the slow tier (tests/test_fieldlevel_closed_loop.py).

    The chains run in the preconditioned coordinates without centring (``centre=False``): the posterior is
    the same, and the centring's own linear-amplitude gradient would double the cost of every linear-model
    gradient (~5 min instead of ~2 in CI); the centred sampler is checked against the exact marginal
    posterior above, and calibrated in the slow tier."""
    covered = coverage(ForwardModel(N, BOX, Z, dynamics="linear"), 8, 0.3, num_warmup=30, num_samples=50,
                       max_tree_depth=4, centre=False)
    assert min(covered.values()) >= 6, covered
