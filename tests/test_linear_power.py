"""Tests of the linear P(k) providers and sigma_r (emu_backend.cosmology.linear_power)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from emu_backend.cosmology import (
    PLANCK18,
    QUIJOTE_FIDUCIAL,
    Cosmology,
    EisensteinHuPower,
    LinearPower,
    TabulatedPower,
    sigma_r,
    tophat_window,
)
from emu_backend.errors import FileFormatError, InputError


# ----------------------------------------------------------------------------- TabulatedPower
@pytest.fixture
def table():
    k = np.logspace(-3, 1, 41)
    p = 2e4 * k / (1.0 + (k / 0.02) ** 2.5)
    return k, p


def test_table_points_reproduced_exactly(table):
    k, p = table
    tab = TabulatedPower(k, p)
    # exact by construction: P_j * exp(slope * 0) at a table point
    np.testing.assert_array_equal(tab(k), p)


def test_table_log_log_midpoint_is_geometric_mean(table):
    k, p = table
    tab = TabulatedPower(k, p)
    kmid = np.sqrt(k[:-1] * k[1:])
    # log-log linear interpolation: the log-midpoint gets the geometric mean; 1e-12 = exp/log rounding
    np.testing.assert_allclose(tab(kmid), np.sqrt(p[:-1] * p[1:]), rtol=1e-12)


def test_table_refuses_k_outside(table):
    k, p = table
    tab = TabulatedPower(k, p)
    with pytest.raises(InputError, match="outside the P\\(k\\) table"):
        tab(np.array([0.5 * k[0]]))
    with pytest.raises(InputError, match="outside the P\\(k\\) table"):
        tab(np.array([1.01 * k[-1]]))
    with pytest.raises(InputError):
        tab(np.array([0.0]))


def test_table_power_law_extrapolation_when_enabled():
    k = np.array([0.1, 0.2, 0.4, 0.8])
    tab = TabulatedPower(k, 3.0 * k**-2.0, extrapolate=True)
    kq = np.array([1e-3, 10.0])
    # an exact power law continues exactly; 1e-12 = exp/log rounding
    np.testing.assert_allclose(tab(kq), 3.0 * kq**-2.0, rtol=1e-12)
    assert tab.k_range == (0.0, float("inf"))


def test_table_from_file_roundtrip(tmp_path, table):
    k, p = table
    path = tmp_path / "pk.txt"
    np.savetxt(path, np.column_stack([k, p]), header="k P")
    tab = TabulatedPower.from_file(path)
    # %.18e text round-trips float64 exactly
    np.testing.assert_array_equal(tab(k), p)
    assert isinstance(tab, LinearPower) and tab.cosmology is None


@pytest.mark.parametrize(
    "k, p",
    [
        ([0.1, 0.1, 0.2], [1.0, 1.0, 1.0]),  # not increasing
        ([0.2, 0.1], [1.0, 1.0]),
        ([-0.1, 0.1], [1.0, 1.0]),  # k <= 0
        ([0.1, 0.2], [1.0, -1.0]),  # P <= 0
        ([0.1, 0.2], [1.0, np.nan]),  # not finite
        ([0.1], [1.0]),  # too short
        ([0.1, 0.2], [1.0, 1.0, 1.0]),  # length mismatch
    ],
)
def test_table_bad_input(k, p):
    with pytest.raises(InputError):
        TabulatedPower(k, p)


def test_table_bad_file(tmp_path):
    with pytest.raises(FileFormatError):
        TabulatedPower.from_file(tmp_path / "missing.txt")
    bad = tmp_path / "three.txt"
    bad.write_text("0.1 1 2\n0.2 1 2\n")
    with pytest.raises(FileFormatError):
        TabulatedPower.from_file(bad)


# ----------------------------------------------------------------------------- sigma_r
def _sigma_quad(power, r):
    """Independent sigma(R): adaptive quad in k, split at the zeros of the top-hat window."""

    def f(k):
        return k**2 * power(np.array([k]))[0] * tophat_window(k * r) ** 2

    # split near the zeros of W ((j + 1/2) pi) and stop after 200 oscillations: the tail beyond
    # x = kR ~ 630 adds < 1e-8 relative (W^2 ~ 4.5 / x^4 while k^3 P falls)
    nodes = np.concatenate([[1e-6, 1e-4, 1e-2], (np.arange(1, 201) + 0.5) * np.pi / r])
    total = sum(
        integrate.quad(f, a, b, epsabs=1e-14, epsrel=1e-11, limit=200)[0] for a, b in zip(nodes[:-1], nodes[1:])
    )
    return np.sqrt(total / (2.0 * np.pi**2))


@pytest.mark.parametrize("cosmo", [QUIJOTE_FIDUCIAL, PLANCK18])
@pytest.mark.parametrize("wiggles", [True, False])
def test_eh_sigma8_normalisation(cosmo, wiggles):
    power = EisensteinHuPower(cosmo, wiggles=wiggles)
    # the brief's target: normalisation reproduced to 1e-4 (Simpson in ln k vs adaptive quad in k agree to ~1e-10)
    assert sigma_r(power, 8.0) == pytest.approx(cosmo.sigma8, rel=1e-4)
    assert _sigma_quad(power, 8.0) == pytest.approx(cosmo.sigma8, rel=1e-4)


def test_sigma_r_power_law_scaling():
    # P = k^n gives sigma(R) proportional to R^(-(n+3)/2) exactly (analytic)
    n = -1.5
    k = np.logspace(-8, 8, 17)
    tab = TabulatedPower(k, k**n)
    ratio = sigma_r(tab, 16.0) / sigma_r(tab, 4.0)
    # 1e-6: truncation of the integral at k = 1e-6 and 1e4 h/Mpc (k^1.5 and k^-2.5 tails)
    assert ratio == pytest.approx(4.0 ** (-(n + 3) / 2), rel=1e-6)


def test_sigma_r_bad_input():
    power = EisensteinHuPower(QUIJOTE_FIDUCIAL, wiggles=False)
    for bad in (0.0, -8.0, np.inf):
        with pytest.raises(InputError):
            sigma_r(power, bad)
    with pytest.raises(InputError):
        sigma_r("not a power", 8.0)


def test_tophat_window_series_matches_closed_form():
    x = np.array([1e-3, 9.9e-3, 1.01e-2, 0.5])
    closed = 3.0 * (np.sin(x) - x * np.cos(x)) / x**3
    # at x ~ 1e-2 the closed form itself loses ~1e-9 to cancellation; the series is exact to x^6/15120
    np.testing.assert_allclose(tophat_window(x), closed, rtol=1e-8)


# ----------------------------------------------------------------------------- Eisenstein & Hu
def test_eh_transfer_to_one_at_low_k():
    for wiggles in (True, False):
        t = EisensteinHuPower(QUIJOTE_FIDUCIAL, wiggles=wiggles).transfer(np.array([1e-6, 1e-5]))
        # T = 1 - O(k^2/k_eq^2 ln k): 1e-4 at k = 1e-5 h/Mpc
        np.testing.assert_allclose(t, 1.0, atol=1e-4)


def test_eh_wiggle_and_no_wiggle_agree_off_bao():
    cosmo = QUIJOTE_FIDUCIAL
    wig = EisensteinHuPower(cosmo, wiggles=True)
    smooth = EisensteinHuPower(cosmo, wiggles=False)
    k_low = np.logspace(-4, -2, 9)
    k_high = np.logspace(np.log10(0.5), 1, 9)
    # EH98 sec. 4.2: the no-wiggle form tracks the full transfer to a few % outside the BAO range
    np.testing.assert_allclose(wig.transfer(k_low), smooth.transfer(k_low), rtol=0.01)
    np.testing.assert_allclose(wig.transfer(k_high), smooth.transfer(k_high), rtol=0.03)
    # and the BAO range really has wiggles: the ratio oscillates by more than 3% around 0.05-0.3 h/Mpc
    k_bao = np.linspace(0.05, 0.3, 200)
    ratio = wig(k_bao) / smooth(k_bao)
    assert ratio.max() - ratio.min() > 0.03


def test_eh_spectrum_shape_independent_checks():
    power = EisensteinHuPower(QUIJOTE_FIDUCIAL, wiggles=False)
    # primordial tilt at very low k: P ~ k^n_s T^2 with T -> 1; 1e-3 from T's residual k dependence
    k = np.array([1e-6, 2e-6])
    slope = np.log(power(k[1:]) / power(k[:1]))[0] / np.log(2.0)
    assert slope == pytest.approx(QUIJOTE_FIDUCIAL.n_s, abs=1e-3)
    # turnover near k_eq: 0.0746 Om h^2 / h ~ 0.015 h/Mpc (EH98 eq. 3); the peak of P lies within 0.007-0.03
    kk = np.logspace(-3, 0, 400)
    k_peak = kk[np.argmax(power(kk))]
    assert 0.007 < k_peak < 0.03


def test_eh_refuses_a_s_cosmology():
    cosmo = Cosmology(omega_m=0.3, sigma8=None, A_s=2.1e-9)
    with pytest.raises(InputError, match="CLASS"):
        EisensteinHuPower(cosmo)
    with pytest.raises(InputError):
        EisensteinHuPower("quijote")


def test_eh_refuses_bad_k():
    power = EisensteinHuPower(QUIJOTE_FIDUCIAL)
    with pytest.raises(InputError):
        power(np.array([0.1, -1.0]))
    with pytest.raises(InputError):
        power(np.array([np.nan]))
