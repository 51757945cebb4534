"""Tests of the FFT power-spectrum estimator (emu_backend.validation.power) against analytic cases."""

from __future__ import annotations

import numpy as np
import pytest
from emu_backend.validation.power import cross_correlation, default_k_edges, power_spectrum

from emu_backend.errors import InputError

N, BOX = 16, 50.0


def _positions(n, box):
    q = np.arange(n) * (box / n)
    return np.stack(np.meshgrid(q, q, q, indexing="ij"))


@pytest.mark.parametrize(
    "m",
    [
        (1, 0, 0),  # on the k_z = 0 plane: both k and -k are stored in the rfft half-space
        (2, -3, 0),
        (1, 2, 3),  # generic: only k is stored, it must count twice
        (0, 0, 5),
        (3, 1, N // 2),  # on the k_z Nyquist plane: k and -k are both stored
    ],
)
def test_plane_wave_power_in_one_bin(m):
    amp = 1.7
    kvec = 2 * np.pi / BOX * np.array(m, dtype=float)
    field = amp * np.cos(np.einsum("c,cijk->ijk", kvec, _positions(N, BOX)) + 0.4)
    ps = power_spectrum(field, BOX)
    target = np.searchsorted(ps.k_edges, np.linalg.norm(kvec), side="right") - 1
    total = np.nan_to_num(ps.power) * ps.n_modes  # summed power of the modes per bin
    # every other bin is empty of power up to FFT rounding (1e-12 of the wave's power)
    others = np.delete(total, target)
    assert np.abs(others).max() < 1e-12 * amp**2 * BOX**3
    # Parseval: sum over modes P_k / V = mean(f^2) = amp^2 / 2 (1e-12: rounding)
    assert total[target] / BOX**3 == pytest.approx(amp**2 / 2, rel=1e-12)
    assert total[target] / BOX**3 == pytest.approx(np.mean(field**2), rel=1e-12)


def test_nyquist_plane_wave_parseval():
    # a pure Nyquist wave (-1)^k is its own conjugate: one mode with all the variance amp^2
    amp = 0.8
    field = amp * (-1.0) ** np.arange(N)[None, None, :] * np.ones((N, N, N))
    ps = power_spectrum(field, BOX)
    total = np.nansum(ps.power * ps.n_modes)
    # exact: |F| = amp N^3 at one mode weighted once; 1e-12 rounding
    assert total / BOX**3 == pytest.approx(amp**2, rel=1e-12)


def test_mode_counts_and_values_match_full_fft():
    # independent estimator: full complex FFT, every mode of the grid, numpy histogram
    rng = np.random.default_rng(4)
    field = rng.standard_normal((N, N, N))
    field2 = field + 0.5 * rng.standard_normal((N, N, N))
    edges = default_k_edges(N, BOX)
    ki = np.fft.fftfreq(N, 1.0 / N) * 2 * np.pi / BOX
    kmag = np.sqrt(ki[:, None, None] ** 2 + ki[None, :, None] ** 2 + ki[None, None, :] ** 2).ravel()
    fk, gk = np.fft.fftn(field).ravel(), np.fft.fftn(field2).ravel()
    sel = kmag > 0
    counts, _ = np.histogram(kmag[sel], edges)
    p_auto = np.histogram(kmag[sel], edges, weights=np.abs(fk[sel]) ** 2)[0] / counts * BOX**3 / N**6
    p_cross = np.histogram(kmag[sel], edges, weights=(fk * gk.conj()).real[sel])[0] / counts * BOX**3 / N**6
    k_mean = np.histogram(kmag[sel], edges, weights=kmag[sel])[0] / counts

    ps = power_spectrum(field, BOX)
    np.testing.assert_array_equal(ps.n_modes, counts)  # integer counts: exact
    assert ps.n_modes.sum() == N**3 - 1  # default bins cover every mode but k = 0
    # same sums in a different order: 1e-12
    np.testing.assert_allclose(ps.power, p_auto, rtol=1e-12)
    np.testing.assert_allclose(ps.k, k_mean, rtol=1e-12)
    np.testing.assert_allclose(power_spectrum(field, BOX, field2=field2).power, p_cross, rtol=1e-12)


def test_white_noise_is_flat():
    n, box, sigma = 32, 80.0, 2.5
    field = np.random.default_rng(7).normal(0.0, sigma, (n, n, n))
    ps = power_spectrum(field, box)
    expected = sigma**2 * box**3 / n**3
    ok = ps.n_modes > 0
    # per bin: var(P) ~ 2 P^2 / n_modes; chi^2/dof within 4 sigma of 1 (sd sqrt(2/dof))
    chi2 = np.sum((ps.power[ok] - expected) ** 2 / (2 * expected**2 / ps.n_modes[ok]))
    dof = int(ok.sum())
    assert abs(chi2 / dof - 1) < 4 * np.sqrt(2 / dof), chi2 / dof
    # all modes together: relative error sqrt(2 / (N^3 - 1)) = 0.0078; 4 sigma
    mean_p = np.sum(ps.power[ok] * ps.n_modes[ok]) / ps.n_modes.sum()
    assert mean_p == pytest.approx(expected, rel=4 * np.sqrt(2 / n**3))


def test_cross_correlation_limits():
    rng = np.random.default_rng(8)
    a = rng.standard_normal((N, N, N))
    b = rng.standard_normal((N, N, N))
    # r is exactly +-1 for proportional fields (rounding 1e-12)
    np.testing.assert_allclose(cross_correlation(a, 3.0 * a, BOX).r, 1.0, atol=1e-12)
    np.testing.assert_allclose(cross_correlation(a, -a, BOX).r, -1.0, atol=1e-12)
    cc = cross_correlation(a, b, BOX)
    # independent fields: r ~ N(0, 1/(n_modes/2)) per bin; 5 sigma bound across ~14 bins
    ok = cc.n_modes > 2
    assert np.all(np.abs(cc.r[ok]) < 5 / np.sqrt(cc.n_modes[ok] / 2))
    # r of a + b with a: 1/sqrt(2) in expectation, sd ~ 1/sqrt(n_modes); weight by modes
    r = cross_correlation(a, a + b, BOX)
    mean_r = np.sum(r.r[ok] * r.n_modes[ok]) / r.n_modes[ok].sum()
    assert mean_r == pytest.approx(1 / np.sqrt(2), abs=0.03)


def test_custom_edges_and_empty_bins():
    field = np.random.default_rng(1).standard_normal((N, N, N))
    kf = 2 * np.pi / BOX
    edges = np.array([0.1, 0.2, 0.3, 2.0]) * kf  # the first bins contain no grid mode
    ps = power_spectrum(field, BOX, k_edges=edges)
    assert ps.n_modes.tolist()[:2] == [0, 0]
    assert np.all(np.isnan(ps.power[:2])) and np.all(np.isnan(ps.k[:2]))
    assert ps.n_modes[2] == 6 + 12 + 8  # |m|^2 = 1, 2, 3 shells below 2 k_f: 6 + 12 + 8 modes


def test_power_spectrum_bad_input():
    field = np.zeros((8, 8, 8))
    with pytest.raises(InputError, match="shape"):
        power_spectrum(np.zeros((8, 8, 4)), BOX)
    with pytest.raises(InputError, match="box_size"):
        power_spectrum(field, 0.0)
    bad = field.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(InputError, match="non-finite"):
        power_spectrum(bad, BOX)
    with pytest.raises(InputError, match="k_edges"):
        power_spectrum(field, BOX, k_edges=[0.3, 0.1])
    with pytest.raises(InputError, match="field2"):
        power_spectrum(field, BOX, field2=np.zeros((4, 4, 4)))
    with pytest.raises(InputError, match="real"):
        power_spectrum(field.astype(complex), BOX)
