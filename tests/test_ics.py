"""Tests of white noise and the linear field (emu_backend.ics.noise, emu_backend.ics.linear)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

from emu_backend.cosmology import QUIJOTE_FIDUCIAL, EisensteinHuPower, TabulatedPower
from emu_backend.errors import InputError
from emu_backend.ics import (
    InitialConditions,
    default_box_size,
    displacement_from_density,
    divergence,
    fix_amplitude,
    linear_density,
    linear_field,
    white_noise,
    za_displacement,
    zero_central_planes,
)


@pytest.fixture(scope="module")
def eh_power():
    return EisensteinHuPower(QUIJOTE_FIDUCIAL)


def _off_nyquist(n):
    """rfftn-grid mask: True off every Nyquist plane (independent of the package's helper)."""
    i = np.abs(np.fft.fftfreq(n, 1.0 / n)) != n // 2
    j = np.fft.rfftfreq(n, 1.0 / n) != n // 2
    return i[:, None, None] & i[None, :, None] & j[None, None, :]


# ----------------------------------------------------------------------------- golden match
def test_golden_pk_to_dis_reference_convention(golden):
    g = golden / "pk_to_dis_n32"
    power = TabulatedPower.from_file(g / "pk.txt")
    expected = np.load(g / "dis_in.npy")
    got = za_displacement(np.load(g / "noise.npy"), power, convention="reference")
    assert got.dtype == np.float32 and got.shape == (3, 32, 32, 32)
    # README: float32 implementations match to <= 1e-5 (observed 2e-6 Mpc/h, float32 rounding of std 2.9)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # the default box is the reference's 1000 n / 512 = 62.5 Mpc/h; passing it explicitly is identical
    explicit = za_displacement(np.load(g / "noise.npy"), power, 62.5, convention="reference")
    np.testing.assert_array_equal(explicit, got)


def test_golden_plane_zeroing(golden):
    g = golden / "pk_to_dis_n32"
    raw = np.load(g / "noise_raw.npy")
    # zeroing is a pure copy-and-set: exact equality with the reference's noise
    np.testing.assert_array_equal(zero_central_planes(raw), np.load(g / "noise.npy"))
    assert not np.array_equal(raw, np.load(g / "noise.npy"))  # the option is not a no-op
    power = TabulatedPower.from_file(g / "pk.txt")
    got = za_displacement(zero_central_planes(raw), power, convention="reference")
    # same float32 tolerance as above
    np.testing.assert_allclose(got, np.load(g / "dis_in.npy"), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- conventions
def test_conventions_agree_off_nyquist(eh_power):
    n = 32
    noise = white_noise(n, seed=3)
    ref = za_displacement(noise, eh_power, convention="reference", dtype=np.float64)
    four = za_displacement(noise, eh_power, convention="fourier", dtype=np.float64)
    mask = _off_nyquist(n)
    for c in range(3):
        rk, fk = scipy.fft.rfftn(ref[c]), scipy.fft.rfftn(four[c])
        # float32 wavenumbers of the reference: ~1e-7 relative in k, amplified <~10x by P's slope
        np.testing.assert_allclose(rk[mask], fk[mask], rtol=0, atol=1e-6 * np.abs(fk).max())
        # the fourier convention has nothing on the Nyquist planes (1e-12: FFT rounding)
        assert np.abs(fk[~mask]).max() < 1e-12 * np.abs(fk).max()
    dref = linear_density(noise, eh_power, convention="reference", dtype=np.float64)
    dfour = linear_density(noise, eh_power, convention="fourier", dtype=np.float64)
    np.testing.assert_allclose(
        scipy.fft.rfftn(dref)[mask], scipy.fft.rfftn(dfour)[mask], rtol=0, atol=1e-6 * np.abs(dfour).max() * n**3
    )


def test_div_psi_is_minus_delta(eh_power):
    field = linear_field(white_noise(32, seed=5), eh_power, dtype=np.float64)
    div = divergence(field.displacement, field.box_size)
    # spectral derivative of the same modes: exact up to FFT rounding (1e-12 of the field's rms)
    np.testing.assert_allclose(div, -field.density, rtol=0, atol=1e-12 * field.density.std())


def test_displacement_of_plane_wave_is_analytic():
    # delta = A cos(k.x)  ->  Psi = -A k / |k|^2 sin(k.x), so that div Psi = -delta (analytic)
    n, box, amp = 16, 100.0, 0.3
    kf = 2.0 * np.pi / box
    kvec = kf * np.array([2.0, -3.0, 1.0])
    x = np.stack(np.meshgrid(*(np.arange(n) * box / n,) * 3, indexing="ij"))
    phase = np.einsum("c,cijk->ijk", kvec, x)
    delta = amp * np.cos(phase)
    expected = -amp * kvec[:, None, None, None] / (kvec @ kvec) * np.sin(phase)
    psi = displacement_from_density(delta, box)
    # a single grid mode is represented exactly: FFT rounding only
    np.testing.assert_allclose(psi, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(divergence(psi, box), -delta, rtol=0, atol=1e-12 * amp)


def test_power_of_linear_density_matches_input(eh_power):
    from emu_backend.validation.power import power_spectrum

    n = 64
    box = default_box_size(n)
    kf = 2.0 * np.pi / box
    edges = (np.arange(0, n // 2) + 0.5) * kf  # below the Nyquist planes (zeroed in the fourier convention)
    # independent expectation: mode-average of P_in over the full FFT grid in each bin
    ki = np.fft.fftfreq(n, 1.0 / n)
    kmag = kf * np.sqrt(ki[:, None, None] ** 2 + ki[None, :, None] ** 2 + ki[None, None, :] ** 2).ravel()
    sel = (kmag >= edges[0]) & (kmag < edges[-1])
    b = np.digitize(kmag[sel], edges) - 1
    expected = np.bincount(b, weights=eh_power(kmag[sel])) / np.bincount(b)
    chi2, dof = 0.0, 0
    for seed in range(3):
        delta = linear_density(white_noise(n, seed=100 + seed), eh_power, dtype=np.float64)
        ps = power_spectrum(delta, box, k_edges=edges)
        # Gaussian field: var(P_bin) = 2 <P>^2 / n_modes (k and -k are one independent complex mode)
        chi2 += np.sum((ps.power - expected) ** 2 / (2.0 * expected**2 / ps.n_modes))
        dof += ps.power.size
    # chi^2/dof has sd sqrt(2/dof) = 0.15 for dof = 93; accept a 4 sigma band
    assert abs(chi2 / dof - 1.0) < 4.0 * np.sqrt(2.0 / dof), chi2 / dof


def test_user_supplied_fields_roundtrip(eh_power):
    field = linear_field(white_noise(16, seed=9), eh_power, dtype=np.float64)
    from_dis = InitialConditions.from_linear_displacement(field.displacement, field.box_size, dtype=np.float64)
    from_den = InitialConditions.from_linear_density(field.density, field.box_size, dtype=np.float64)
    # fourier-convention fields carry no Nyquist modes, so both routes are exact up to FFT rounding
    scale = np.abs(field.displacement).max()
    np.testing.assert_array_equal(from_dis.displacement, field.displacement)  # passed through
    np.testing.assert_allclose(from_dis.density, field.density, atol=1e-12 * np.abs(field.density).max())
    np.testing.assert_array_equal(from_den.density, field.density)  # passed through
    np.testing.assert_allclose(from_den.displacement, field.displacement, atol=1e-12 * scale)
    np.testing.assert_allclose(
        displacement_from_density(field.density, field.box_size), field.displacement, atol=1e-12 * scale
    )
    assert field.n == 16 and field.cell_size == pytest.approx(31.25 / 16)


def test_displacement_scales_with_sqrt_power():
    k = np.logspace(-2, 1, 50)
    p1 = TabulatedPower(k, 1e3 * k**-1.5)
    p4 = TabulatedPower(k, 4e3 * k**-1.5)
    noise = white_noise(16, seed=2)
    # linear in the amplitude sqrt(P): factor 2 to float32 rounding
    np.testing.assert_allclose(
        za_displacement(noise, p4), 2.0 * za_displacement(noise, p1), rtol=1e-5, atol=1e-6
    )


# ----------------------------------------------------------------------------- noise
def test_noise_reproducible_and_seed_dependent():
    a = white_noise(16, seed=42)
    b = white_noise(16, seed=42)
    c = white_noise(16, seed=43)
    assert a.dtype == np.float32 and a.shape == (16, 16, 16)
    np.testing.assert_array_equal(a, b)
    assert np.mean(a == c) < 0.01
    # regression pin of numpy's PCG64 + float32 standard_normal stream (stable across platforms)
    np.testing.assert_array_equal(
        white_noise(4, seed=12345).ravel()[:5],
        np.array([-1.2160426, -0.36933464, 1.8661257, -0.22194043, -0.46914175], dtype=np.float32),
    )
    # unit variance: sd of the sample variance of 4096 normals is sqrt(2/4096) = 0.022; 4 sigma
    assert abs(a.var() - 1.0) < 0.09


def test_paired_noise_sums_to_zero():
    for fixed in (False, True):
        a = white_noise(16, seed=7, fixed_amplitude=fixed)
        b = white_noise(16, seed=7, fixed_amplitude=fixed, paired=True)
        # the pair is an exact sign flip
        np.testing.assert_array_equal(a + b, 0.0)


def test_fixed_amplitude_noise():
    n = 16
    raw = white_noise(n, seed=11)
    fixed = white_noise(n, seed=11, fixed_amplitude=True)
    rk = scipy.fft.rfftn(raw.astype(np.float64))
    fk = scipy.fft.rfftn(fixed.astype(np.float64))
    amp = np.abs(fk).ravel()
    # |noise_k| = n^1.5 on every k != 0 mode; 1e-5 = float32 storage of the real-space field
    np.testing.assert_allclose(amp[1:], n**1.5, rtol=1e-5)
    assert amp[0] < 1e-3  # the k = 0 mode is removed (float32 rounding leaves ~1e-4)
    # phases kept: fixed_k / |fixed_k| = raw_k / |raw_k| to the same float32 precision
    np.testing.assert_allclose((fk / np.abs(fk)).ravel()[1:], (rk / np.abs(rk)).ravel()[1:], atol=1e-5)
    np.testing.assert_array_equal(fix_amplitude(raw), fixed)


def test_zero_planes_option():
    z = white_noise(8, seed=1, zero_planes=True)
    raw = white_noise(8, seed=1)
    assert np.all(z[4] == 0) and np.all(z[:, 4] == 0) and np.all(z[:, :, 4] == 0)
    keep = np.ones((8, 8, 8), bool)
    keep[4], keep[:, 4], keep[:, :, 4] = False, False, False
    np.testing.assert_array_equal(z[keep], raw[keep])


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("n, seed", [(1, 0), (8.0, 0), (8, -1), (8, 1.5), (True, 0)])
def test_white_noise_bad_input(n, seed):
    with pytest.raises(InputError):
        white_noise(n, seed)


def test_linear_field_bad_input(eh_power):
    noise = white_noise(8, seed=0)
    with pytest.raises(InputError, match="shape"):
        linear_field(noise[:, :, :4], eh_power)
    with pytest.raises(InputError, match="shape"):
        linear_field(noise[0], eh_power)
    bad = noise.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        linear_field(bad, eh_power)
    with pytest.raises(InputError, match="n >= 2"):
        linear_field(np.zeros((1, 1, 1)), eh_power)
    for box in (0.0, -5.0, np.inf, "100"):
        with pytest.raises(InputError, match="box_size"):
            linear_field(noise, eh_power, box)
    with pytest.raises(InputError, match="convention"):
        linear_field(noise, eh_power, convention="pylians")
    with pytest.raises(InputError, match="dtype"):
        linear_field(noise, eh_power, dtype=np.int32)
    with pytest.raises(InputError, match="callable"):
        linear_field(noise, "eh")
    # a table that does not cover the grid wavenumbers is refused with the needed range named
    short = TabulatedPower([0.2, 1.0], [1e3, 1e2])
    for convention in ("fourier", "reference"):
        with pytest.raises(InputError, match="grid wavenumbers"):
            linear_field(noise, short, 16.0, convention=convention)
    with pytest.raises(InputError, match="shape"):
        InitialConditions.from_linear_displacement(np.zeros((2, 8, 8, 8)), 10.0)
    with pytest.raises(InputError, match="shape"):
        InitialConditions(np.zeros((3, 4, 4, 4)), np.zeros((8, 8, 8)), 10.0)
