"""Redshift-space shift and P(k) multipoles (emu_backend.validation.rsd): units, Kaiser limit, isotropy."""

from __future__ import annotations

import numpy as np
import pytest
from emu_backend.validation import field_multipoles, multipoles, redshift_space_positions
from scipy.special import eval_legendre

from emu_backend.cosmology.growth import growth_rate
from emu_backend.errors import InputError

A, OMEGA_M = 1.0, 0.3


def _hubble(a, omega_m):
    """H(a) [h km/s/Mpc] of flat LCDM, written out independently of the package."""
    return 100.0 * np.sqrt(omega_m / a**3 + 1.0 - omega_m)


def _za_field(n, box, seed, k_cut, fixed=False, psi_rms_cells=0.05):
    """Lattice (offset 1/4 cell: no CIC kink at a mesh point) + Zel'dovich displacement of a field with flat
    P(k) for 0 < k < k_cut. ``fixed``: |delta_k| fixed to sqrt(P) (random phases only, no cosmic variance).

    Returns positions (N, 3), displacement (N, 3), K (3, n, n, n//2+1), P(k) on the rfft grid (relative units).
    """
    rng = np.random.default_rng(seed)
    kf = 2 * np.pi / box
    kx, kz = np.fft.fftfreq(n, 1.0 / n) * kf, np.fft.rfftfreq(n, 1.0 / n) * kf
    K = np.stack(np.meshgrid(kx, kx, kz, indexing="ij"))
    k2 = (K**2).sum(0)
    pk = ((k2 > 0) & (k2 < k_cut**2)).astype(float)
    wk = np.fft.rfftn(rng.standard_normal((n, n, n)))
    if fixed:
        wk *= np.sqrt(n**3) / np.abs(wk)
    dk = wk * np.sqrt(pk)
    psik = 1j * K * np.divide(dk, k2, out=np.zeros_like(dk), where=k2 > 0)  # delta = -div psi
    psi = np.stack([np.fft.irfftn(psik[c], s=(n, n, n), axes=(0, 1, 2)) for c in range(3)])
    psi *= psi_rms_cells * (box / n) / psi.std()  # linear regime: rms displacement 0.05 cells
    q = (np.arange(n) + 0.25) * box / n
    lattice = np.stack(np.meshgrid(q, q, q, indexing="ij"))
    return (lattice + psi).reshape(3, -1).T, psi.reshape(3, -1).T, K, pk


def _grid_expectation(K, pk, k_hi, f, ells):
    """Gaussian-field expectation and variance of the multipole ratios R_l = P_l / P_0 summed over all modes
    with 0 < |k| < k_hi, for the Kaiser spectrum P(k) (1 + f mu^2)^2 on the grid's discrete modes."""
    kk = np.sqrt((K**2).sum(0))
    mu = np.divide(K[2], kk, out=np.zeros_like(kk), where=kk > 0)
    w_half = np.full(K.shape[-1], 2.0)  # rfft half-space weights: k and -k
    w_half[[0, -1]] = 1.0
    sel = (kk > 0) & (kk < k_hi)
    w = np.broadcast_to(w_half, kk.shape)[sel]
    p_mu = (pk * (1 + f * mu**2) ** 2)[sel]
    n_modes, p0 = w.sum(), (w * p_mu).sum() / w.sum()
    out = {}
    for ell in ells:
        leg = (2 * ell + 1) * eval_legendre(ell, mu[sel])
        ratio = (w * p_mu * leg).sum() / n_modes / p0
        # |delta_k|^2 of each (k, -k) pair is exponential with mean and sd P(mu): Var(sum over modes) =
        # 4 sum_pairs = 2 sum_modes; linearised ratio error from (leg - R) weights
        sigma = np.sqrt(2.0 * (w * (p_mu * (leg - ratio)) ** 2).sum()) / n_modes / p0
        out[ell] = (ratio, sigma)
    return out


def _summed_ratio(mp, ell, k_hi):
    sel = mp.k < k_hi
    w = mp.n_modes[sel]
    return (mp.pole(ell)[sel] * w).sum() / (mp.pole(0)[sel] * w).sum()


# -- the position shift --------------------------------------------------------------------
def test_shift_is_velocity_over_aH_in_mpc_h_and_wraps():
    a, om, box = 0.5, 0.3, 100.0
    pos = np.array([[10.0, 20.0, 99.5], [10.0, 20.0, 0.2]])
    vel = np.array([[50.0, -70.0, 300.0], [0.0, 0.0, -300.0]])
    shift = 300.0 / (a * _hubble(a, om))  # km/s / (h km/s/Mpc) = Mpc/h: 1.9069... at z = 1
    for los in (0, 1, 2):
        s = redshift_space_positions(pos, vel, a, om, box, los=los)
        expect = pos.copy()
        expect[:, los] = np.mod(pos[:, los] + vel[:, los] / (a * _hubble(a, om)), box)
        np.testing.assert_allclose(s, expect, rtol=0, atol=1e-12)  # float64 round-off
    s = redshift_space_positions(pos, vel, a, om, box)
    assert s[0, 2] == pytest.approx(99.5 + shift - box, abs=1e-12)  # wrapped through L
    assert s[1, 2] == pytest.approx(0.2 - shift + box, abs=1e-12)  # wrapped through 0
    assert np.all((s >= 0) & (s < box))


# -- Kaiser limit --------------------------------------------------------------------------
def test_kaiser_ratios_within_cosmic_variance():
    n, box = 48, 1000.0
    k_hi = 0.6 * np.pi * n / box  # "low k": the field's power stops at 0.6 k_Nyq
    f = float(growth_rate(1.0 / A - 1.0, OMEGA_M))
    pos, psi, K, pk = _za_field(n, box, seed=2, k_cut=k_hi)
    vel = A * _hubble(A, OMEGA_M) * f * psi  # linear velocity: v = a H f psi [km/s]
    mp = multipoles(pos, vel, box, n, a=A, omega_m=OMEGA_M)
    expected = _grid_expectation(K, pk, k_hi, f, (2, 4))
    kaiser0 = 1 + 2 * f / 3 + f**2 / 5
    kaiser = {2: (4 * f / 3 + 4 * f**2 / 7) / kaiser0, 4: (8 * f**2 / 35) / kaiser0}
    for ell in (2, 4):
        grid_ratio, sigma = expected[ell]
        # 4 sigma of the Gaussian cosmic variance of the summed ratio (sigma = 0.032 for l = 2, 0.046 for
        # l = 4 here), plus the offset of the discrete-mode average from the continuum Kaiser value (0.002,
        # 0.015: the grid's shells are not isotropic)
        tol = 4 * sigma + abs(grid_ratio - kaiser[ell])
        measured = _summed_ratio(mp, ell, k_hi)
        assert abs(measured - kaiser[ell]) < tol, (ell, measured, kaiser[ell], tol)


def test_kaiser_ratios_fixed_amplitude_match_grid_average():
    # fixed-amplitude modes remove cosmic variance: the ratios are the Kaiser factor averaged over the grid's
    # modes, up to the painting's residual anisotropic aliasing and O(psi^2) terms
    n, box = 48, 1000.0
    k_hi = 0.4 * np.pi * n / box
    f = float(growth_rate(1.0 / A - 1.0, OMEGA_M))
    pos, psi, K, pk = _za_field(n, box, seed=3, k_cut=k_hi, fixed=True)
    mp = multipoles(pos, A * _hubble(A, OMEGA_M) * f * psi, box, n, a=A, omega_m=OMEGA_M)
    expected = _grid_expectation(K, pk, k_hi, f, (2, 4))
    # measured offsets 0.0015 (l = 2) and 0.015 (l = 4): interlaced CIC of a lattice at k < 0.4 k_Nyq
    for ell, tol in ((2, 0.01), (4, 0.03)):
        assert abs(_summed_ratio(mp, ell, k_hi) - expected[ell][0]) < tol


def test_zero_velocity_gives_isotropic_multipoles_within_mode_noise():
    n, box = 32, 500.0
    k_cut = 0.6 * np.pi * n / box
    pos, _, K, pk = _za_field(n, box, seed=4, k_cut=k_cut)
    mp = multipoles(pos, np.zeros_like(pos), box, n, a=A, omega_m=OMEGA_M, ells=(0, 2, 4))
    # per-bin expectation and Gaussian noise of P_l from the bin's own discrete modes (f = 0):
    # E[P_2] = 0 on every cubic-symmetric shell, E[P_4] = 9 <L_4(mu)> P_0 (the grid's l = 4 anisotropy)
    kk = np.sqrt((K**2).sum(0))
    mu = np.divide(K[2], kk, out=np.zeros_like(kk), where=kk > 0)
    w_half = np.full(K.shape[-1], 2.0)
    w_half[[0, -1]] = 1.0
    w = np.broadcast_to(w_half, kk.shape)
    checked = 0
    for i in np.flatnonzero(mp.k < 0.9 * k_cut):
        sel = (kk >= mp.k_edges[i]) & (kk < mp.k_edges[i + 1])
        n_modes = w[sel].sum()
        p_in = mp.pole(0)[i]  # the realised monopole stands for P(k) of the bin
        for ell in (2, 4):
            leg = (2 * ell + 1) * eval_legendre(ell, mu[sel])
            mean = p_in * (w[sel] * leg).sum() / n_modes
            sigma = p_in * np.sqrt(2.0 * (w[sel] * leg**2).sum()) / n_modes
            # 5 sigma of the mode-count noise of the bin
            assert abs(mp.pole(ell)[i] - mean) < 5 * sigma, (ell, i, mp.pole(ell)[i], mean, sigma)
            if ell == 2:
                assert abs(mean) < 1e-12 * p_in  # <L_2> = 0 exactly on a cubic-symmetric shell
        checked += 1
    assert checked >= 8


def test_field_multipoles_monopole_is_power_spectrum_and_los_axes_agree():
    from emu_backend.validation import power_spectrum

    g = np.random.default_rng(5).standard_normal((16, 16, 16))
    mp = field_multipoles(g, 40.0, los=2, ells=(0, 2))
    ps = power_spectrum(g, 40.0)
    np.testing.assert_allclose(mp.pole(0), ps.power, rtol=1e-12)  # L_0 = 1: same estimator, round-off
    np.testing.assert_array_equal(mp.n_modes, ps.n_modes)
    # transposing the field so that axis 0 becomes axis 2 must give the same quadrupole along los=0
    mp0 = field_multipoles(np.transpose(g, (2, 1, 0)), 40.0, los=0, ells=(0, 2))
    ok = np.isfinite(mp.pole(2))
    np.testing.assert_allclose(mp0.pole(2)[ok], mp.pole(2)[ok], rtol=1e-9, atol=1e-12 * np.nanmax(np.abs(mp.pole(0))))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(los=3), "los"),
        (dict(a=0.0), "scale factor"),
        (dict(omega_m=1.5), "omega_m"),
        (dict(ells=(0, -2)), "ells"),
        (dict(ells=(2, 2)), "repeat"),
        (dict(velocities=np.zeros((5, 3))), "velocities shape"),
        (dict(k_edges=[0.3, 0.1]), "k_edges"),
    ],
)
def test_multipoles_bad_input(kwargs, match):
    rng = np.random.default_rng(0)
    args = dict(
        positions=rng.uniform(0, 10, (100, 3)), velocities=np.zeros((100, 3)), box_size=10.0, n_mesh=8, a=1.0,
        omega_m=0.3,
    )
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        multipoles(**args)
