"""Density/momentum meshes (emu_backend.validation.mesh) and vector power spectra, against analytic cases."""

from __future__ import annotations

import numpy as np
import pytest
from emu_backend.validation import (
    cross_correlation,
    default_k_edges,
    density_mesh,
    momentum_mesh,
    power_spectrum,
    transfer_function,
    vector_cross_correlation,
    vector_power,
)

from emu_backend.errors import InputError


def _lattice(n, box, offset=0.0):
    """Particle lattice ``(i + offset) box / n``, shape (3, n, n, n) [Mpc/h]."""
    q = (np.arange(n) + offset) * box / n
    return np.stack(np.meshgrid(q, q, q, indexing="ij"))


def _points(field3):
    return field3.reshape(3, -1).T


def _za(n, box, amp, seed, slope=-1.0, offset=0.25):
    """Lattice + Zel'dovich displacement of a Gaussian field with P(k) = amp (k/k_f)^slope, modes up to the
    particle Nyquist frequency (cube). Returns lattice (3,n,n,n), displacement (3,n,n,n), linear delta (n,n,n)."""
    rng = np.random.default_rng(seed)
    kf = 2 * np.pi / box
    kx, kz = np.fft.fftfreq(n, 1.0 / n) * kf, np.fft.rfftfreq(n, 1.0 / n) * kf
    K = np.stack(np.meshgrid(kx, kx, kz, indexing="ij"))
    k2 = (K**2).sum(0)
    k = np.sqrt(k2)
    pk = np.zeros_like(k)
    keep = (k > 0) & (np.abs(K).max(0) < 0.999 * np.pi * n / box)  # no Nyquist planes: psi stays real
    pk[keep] = amp * (k[keep] / kf) ** slope
    dk = np.fft.rfftn(rng.standard_normal((n, n, n))) * np.sqrt(pk * n**3 / box**3)
    psik = 1j * K * np.divide(dk, k2, out=np.zeros_like(dk), where=k2 > 0)  # delta = -div psi
    psi = np.stack([np.fft.irfftn(psik[c], s=(n, n, n), axes=(0, 1, 2)) for c in range(3)])
    return _lattice(n, box, offset), psi, np.fft.irfftn(dk, s=(n, n, n), axes=(0, 1, 2))


# -- lattice: zero displacement ----------------------------------------------------------------
@pytest.mark.parametrize("window", ["ngp", "cic", "tsc"])
@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("deconvolve", [False, True])
@pytest.mark.parametrize("n_part", [8, 16])
def test_lattice_gives_zero_overdensity_exactly(window, interlace, deconvolve, n_part):
    # a lattice on the mesh points (and, for 16^3 on an 8^3 mesh, also on the half-cell points) paints a
    # uniform mesh with weights that are exact binary fractions, so delta is 0 with no round-off at all
    pos = _points(_lattice(n_part, 10.0))
    delta = density_mesh(pos, 10.0, 8, window=window, interlace=interlace, deconvolve=deconvolve)
    assert delta.shape == (8, 8, 8) and delta.dtype == np.float64
    assert np.all(delta == 0.0)


# -- single plane wave ---------------------------------------------------------------------
@pytest.mark.parametrize("window, interlace", [("cic", False), ("cic", True), ("tsc", False)])
def test_plane_wave_power_at_one_k(window, interlace):
    n, n_part, box, eps = 16, 48, 100.0, 1e-3
    kvec = 2 * np.pi / box * np.array([2.0, 1.0, 0.0])
    k0 = np.linalg.norm(kvec)
    q = _lattice(n_part, box, 0.25)  # 3 particles per cell per axis, off the mesh points (no CIC kinks)
    psi = (eps / k0**2) * kvec[:, None, None, None] * np.sin(np.einsum("c,cijk->ijk", kvec, q) + 0.3)
    delta = density_mesh(_points(q + psi), box, n, window=window, interlace=interlace)
    ps = power_spectrum(delta, box)
    summed = np.nan_to_num(ps.power) * ps.n_modes / box**3  # Parseval: sums to mean(delta^2) per bin
    target = np.searchsorted(ps.k_edges, k0, side="right") - 1
    # delta = -div psi = -eps cos(k.q + 0.3) to first order: mean(delta^2) = eps^2 / 2 in the bin of k0.
    # 1%: images of the particle lattice (at k0 + 2 k_Nyq,particles m) alias onto k0 with relative weight
    # ~ p (k0 / 2 k_Nyq,p)^2 ~ 1e-3 (measured 0.06-0.4%); the second harmonic is eps^2/4 = 2.5e-7 relative
    assert summed[target] == pytest.approx(eps**2 / 2, rel=1e-2)
    # every other bin holds only the second-order harmonic and lattice residue (< 1e-5 of the wave)
    assert np.abs(np.delete(summed, target)).max() < 1e-5 * eps**2 / 2


# -- Gaussian field: interlacing reduces aliasing ------------------------------------------------
@pytest.mark.parametrize("window, max_interlaced, min_gain", [("cic", 0.1, 4.0), ("tsc", 0.05, 3.0)])
def test_interlacing_reduces_aliasing_of_gaussian_field(window, max_interlaced, min_gain):
    n_part, n, box = 64, 32, 200.0
    q, psi, delta_lin = _za(n_part, box, amp=1.0, seed=3)
    pos = _points(q + psi)  # rms psi = 0.0075 cells: linear, delta = delta_lin to O(1e-3)
    edges = default_k_edges(n, box)
    ref = power_spectrum(delta_lin, box, edges)  # the realised input power: no cosmic variance in the ratio
    k_nyq = np.pi * n / box
    errors = {}
    for interlace in (False, True):
        ps = power_spectrum(density_mesh(pos, box, n, window=window, interlace=interlace), box, edges)
        sel = ps.k < k_nyq
        errors[interlace] = np.abs(ps.power[sel] / ref.power[sel] - 1.0).max()
    # power between the mesh and particle Nyquist frequencies aliases into k < k_Nyq,mesh: measured max
    # error over k < k_Nyq 40% (CIC) / 14% (TSC) without interlacing, 7.1% / 3.7% with it (seed 3);
    # interlacing cancels the odd images, so it must cut the error by the stated factor
    assert errors[True] < max_interlaced
    assert errors[False] > min_gain * errors[True]


# -- momentum ------------------------------------------------------------------------------
@pytest.mark.parametrize("interlace", [False, True])
def test_momentum_of_uniform_velocity_is_velocity_times_density(interlace):
    rng = np.random.default_rng(5)
    box, n = 50.0, 16
    pos = rng.uniform(0, box, (5000, 3))
    v0 = np.array([120.0, -30.0, 7.5])
    mom = momentum_mesh(pos, np.tile(v0, (5000, 1)), box, n, window="tsc", interlace=interlace)
    delta = density_mesh(pos, box, n, window="tsc", interlace=interlace)
    assert mom.shape == (3, n, n, n)
    # linear in the painted weight: (1 + delta) v0 exactly, up to float64 FFT round-off (1e-12 of |v0|)
    np.testing.assert_allclose(mom, v0[:, None, None, None] * (1.0 + delta)[None], rtol=0, atol=1e-10)


def test_momentum_mean_is_mean_velocity():
    rng = np.random.default_rng(6)
    pos, vel = rng.uniform(0, 30.0, (3000, 3)), rng.normal(0, 300.0, (3000, 3))
    mom = momentum_mesh(pos, vel, 30.0, 8, interlace=True)
    # W(k=0) = 1 and the interlacing phase is 1 at k = 0: momentum is conserved (float64 round-off)
    np.testing.assert_allclose(mom.mean(axis=(1, 2, 3)), vel.mean(axis=0), rtol=0, atol=1e-10)


# -- vector spectra ------------------------------------------------------------------------------
def test_vector_power_of_gradient_field_matches_full_fft_histogram():
    n, box = 16, 40.0
    rng = np.random.default_rng(7)
    phi = rng.standard_normal((n, n, n))
    kf = 2 * np.pi / box
    k1 = np.fft.fftfreq(n, 1.0 / n) * kf
    K = np.stack(np.meshgrid(k1, k1, k1, indexing="ij"))
    phik = np.fft.fftn(phi)
    K_grad = np.where(np.abs(K) >= np.pi * n / box * 0.999, 0.0, K)  # no Nyquist component: a real gradient
    grad = np.stack([np.fft.ifftn(1j * K_grad[c] * phik).real for c in range(3)])
    # independent reference: full complex FFT over all N^3 modes, per-mode sum k_c^2 |phi_k|^2, histogram
    per_mode = (K_grad**2).sum(0) * np.abs(phik) ** 2 * box**3 / n**6
    kmag = np.sqrt((K**2).sum(0))
    edges = default_k_edges(n, box)
    keep = kmag > 0
    cnt, _ = np.histogram(kmag[keep], edges)
    tot, _ = np.histogram(kmag[keep], edges, weights=per_mode[keep])
    ps = vector_power(grad, box, edges)
    np.testing.assert_array_equal(ps.n_modes, cnt)
    ok = cnt > 0
    # same sums in a different order (full vs half-space FFT): float64 round-off (the corner bin holds only
    # Nyquist modes, zero in the reference: round-off of 1e-12 of the largest power allowed there)
    ref = tot[ok] / cnt[ok]
    np.testing.assert_allclose(ps.power[ok], ref, rtol=1e-10, atol=1e-12 * ref.max())


def test_vector_power_is_sum_of_component_spectra_and_cross_is_symmetric():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((2, 3, 12, 12, 12))
    box = 30.0
    comp = sum(power_spectrum(a[c], box, field2=b[c]).power for c in range(3))
    # the trace of the cross-spectral tensor, binned identically: round-off only
    np.testing.assert_allclose(vector_power(a, box, field2=b).power, comp, rtol=1e-12)
    np.testing.assert_allclose(vector_power(a, box, field2=b).power, vector_power(b, box, field2=a).power, rtol=1e-12)


def test_vector_cross_correlation_limits():
    rng = np.random.default_rng(9)
    a = rng.standard_normal((3, 12, 12, 12))
    noise = rng.standard_normal((3, 12, 12, 12))
    box = 30.0
    # r = +1 / -1 for proportional fields (Cauchy-Schwarz equality), to round-off (the last bin is empty: NaN)
    r_plus, r_minus = vector_cross_correlation(a, 2.5 * a, box).r, vector_cross_correlation(a, -a, box).r
    full = np.isfinite(r_plus)
    assert full.sum() == full.size - 1
    np.testing.assert_allclose(r_plus[full], 1.0, rtol=1e-12)
    np.testing.assert_allclose(r_minus[full], -1.0, rtol=1e-12)
    # b = a + noise of equal power: E[r] = 1/sqrt(2); mode noise of r ~ 1/sqrt(n_modes) per bin -> 6 sigma
    cc = vector_cross_correlation(a, a + noise, box)
    big = cc.n_modes > 200
    assert np.all(np.abs(cc.r[big] - 1 / np.sqrt(2)) < 6 / np.sqrt(cc.n_modes[big]))
    # consistency with the scalar estimator when only one component is non-zero (round-off)
    one = np.zeros_like(a)
    one[1] = a[1]
    two = np.zeros_like(a)
    two[1] = noise[1] + a[1]
    r_vec, r_scalar = vector_cross_correlation(one, two, box).r, cross_correlation(a[1], two[1], box).r
    np.testing.assert_allclose(r_vec, r_scalar, rtol=1e-12)


def test_transfer_function():
    g = np.random.default_rng(10).standard_normal((8, 8, 8))
    t = transfer_function(power_spectrum(3.0 * g, 8.0), power_spectrum(g, 8.0))
    ok = np.isfinite(t)
    assert ok.sum() > 3
    np.testing.assert_allclose(t[ok], 3.0, rtol=1e-12)  # sqrt(9 P / P): exact up to round-off
    with pytest.raises(InputError, match="k_edges"):
        transfer_function(power_spectrum(g, 8.0), power_spectrum(g, 8.0, k_edges=[0.5, 1.0, 2.0]))


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(positions=np.zeros((10, 2))), "shape"),
        (dict(positions=np.full((10, 3), np.nan)), "finite"),
        (dict(positions=np.zeros((0, 3))), "at least one"),
        (dict(box_size=-1.0), "box_size"),
        (dict(n_mesh=1), "n_mesh"),
        (dict(n_mesh=8.0), "n_mesh"),
        (dict(window="pcs"), "window"),
        (dict(positions="abc"), "positions"),
    ],
)
def test_density_mesh_bad_input(kwargs, match):
    args = dict(positions=np.zeros((10, 3)), box_size=10.0, n_mesh=8)
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        density_mesh(**args)


def test_momentum_and_vector_bad_input():
    with pytest.raises(InputError, match="velocities shape"):
        momentum_mesh(np.zeros((10, 3)), np.zeros((9, 3)), 10.0, 8)
    with pytest.raises(InputError, match=r"\(3, N, N, N\)"):
        vector_power(np.zeros((8, 8, 8)), 10.0)
    with pytest.raises(InputError, match="field2 shape"):
        vector_power(np.zeros((3, 8, 8, 8)), 10.0, field2=np.zeros((3, 4, 4, 4)))
