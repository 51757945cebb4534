"""Tests of 2LPT and particle positions/velocities (emu_backend.ics.lpt)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from emu_backend.cosmology import QUIJOTE_FIDUCIAL, EisensteinHuPower, growth_factor, growth_rate, hubble
from emu_backend.errors import InputError
from emu_backend.ics import (
    lagrangian_grid,
    linear_field,
    lpt_particles,
    second_order_displacement,
    second_order_growth_factor,
    second_order_growth_rate,
    second_order_source,
    white_noise,
)

N, BOX = 32, 200.0


@pytest.fixture(scope="module")
def grid():
    """Lagrangian coordinates x, y, z [Mpc/h], each (N, N, N), built independently of the package."""
    q = np.arange(N) * (BOX / N)
    return np.meshgrid(q, q, q, indexing="ij")


@pytest.fixture(scope="module")
def random_psi():
    return linear_field(white_noise(16, seed=21), EisensteinHuPower(QUIJOTE_FIDUCIAL), 100.0, dtype=np.float64)


def test_plane_wave_has_no_second_order(grid):
    x, _, _ = grid
    k1 = 3 * 2 * np.pi / BOX
    amp = 5.0  # phi1 = amp cos(k1 x), Psi1 = -grad phi1
    psi1 = np.stack([amp * k1 * np.sin(k1 * x), np.zeros_like(x), np.zeros_like(x)])
    # ZA is exact in 1-d: every term of the source has a y or z derivative, so it vanishes identically
    assert np.abs(second_order_source(psi1, BOX)).max() < 1e-14 * (amp * k1**2) ** 2
    assert np.abs(second_order_displacement(psi1, BOX)).max() < 1e-14 * amp * k1


def test_two_orthogonal_waves_match_analytic_source(grid):
    x, y, _ = grid
    kf = 2 * np.pi / BOX
    k1, k2 = 3 * kf, 5 * kf
    a, b = 4.0, 2.5  # phi1 = a cos(k1 x) + b cos(k2 y)
    psi1 = np.stack([a * k1 * np.sin(k1 * x), b * k2 * np.sin(k2 * y), np.zeros_like(x)])
    # phi_xx phi_yy = a b k1^2 k2^2 cos(k1 x) cos(k2 y); phi_xy = 0 and z-terms vanish
    expected = a * b * k1**2 * k2**2 * np.cos(k1 * x) * np.cos(k2 * y)
    scale = np.abs(expected).max()
    # band-limited (k1 + k2 < Nyquist, no aliasing): exact up to FFT rounding
    np.testing.assert_allclose(second_order_source(psi1, BOX), expected, rtol=0, atol=1e-12 * scale)
    # lap phi2 = S with both product modes at |k|^2 = k1^2 + k2^2: phi2 = -S / (k1^2 + k2^2), Psi2 = grad phi2
    c = -a * b * k1**2 * k2**2 / (k1**2 + k2**2)
    psi2_expected = np.stack(
        [-c * k1 * np.sin(k1 * x) * np.cos(k2 * y), -c * k2 * np.cos(k1 * x) * np.sin(k2 * y), np.zeros_like(x)]
    )
    np.testing.assert_allclose(
        second_order_displacement(psi1, BOX), psi2_expected, rtol=0, atol=1e-12 * np.abs(psi2_expected).max()
    )


def test_second_order_is_translation_equivariant_and_quadratic(random_psi):
    psi = random_psi.displacement
    base = second_order_displacement(psi, random_psi.box_size)
    shifted = second_order_displacement(np.roll(psi, (3, -5, 7), axis=(1, 2, 3)), random_psi.box_size)
    scale = np.abs(base).max()
    # a grid shift is a phase in Fourier space: exact up to FFT rounding
    np.testing.assert_allclose(shifted, np.roll(base, (3, -5, 7), axis=(1, 2, 3)), atol=1e-12 * scale)
    # quadratic in Psi1: doubling Psi1 multiplies Psi2 by 4 (FFT rounding)
    np.testing.assert_allclose(second_order_displacement(2 * psi, random_psi.box_size), 4 * base, atol=1e-11 * scale)


def _second_order_growth_ode(omega_m, z):
    """Integrate D1 and D2 ODEs (d/dlna form) from a = 1e-3 with EdS growing-mode initial conditions."""

    def rhs(lna, y):
        a = np.exp(lna)
        om_a = omega_m / a**3 / (omega_m / a**3 + 1 - omega_m)
        dlnh = -1.5 * om_a
        d1, d1p, d2, d2p = y
        return [d1p, -(2 + dlnh) * d1p + 1.5 * om_a * d1, d2p, -(2 + dlnh) * d2p + 1.5 * om_a * (d2 - d1**2)]

    a0 = 1e-3
    sol = solve_ivp(rhs, [np.log(a0), 0.0], [a0, a0, -3 / 7 * a0**2, -6 / 7 * a0**2], rtol=1e-10, atol=1e-14,
                    dense_output=True)
    d1_today = sol.sol(0.0)[0]
    d1, _, d2, d2p = sol.sol(-np.log1p(z))
    return d2 / d1_today**2, d2p / d2


@pytest.mark.parametrize("omega_m", [0.25, 0.3175, 0.5])
@pytest.mark.parametrize("z", [0.0, 1.0, 3.0])
def test_second_order_growth_against_ode(omega_m, z):
    d2_ode, f2_ode = _second_order_growth_ode(omega_m, z)
    # the Omega_m^(-1/143) fit is good to ~2e-4 for flat LCDM (Bouchet et al. 1995)
    assert second_order_growth_factor(z, omega_m) == pytest.approx(d2_ode, rel=5e-4)
    # f2 = 2 Omega_m(z)^(6/11) is good to < 0.5% here; allow 1%
    assert second_order_growth_rate(z, omega_m) == pytest.approx(f2_ode, rel=1e-2)


def test_za_velocities_and_positions(random_psi):
    psi, box = random_psi.displacement, random_psi.box_size
    z = 0.7
    om = QUIJOTE_FIDUCIAL.omega_m
    pos, vel = lpt_particles(psi, box, QUIJOTE_FIDUCIAL, z, order=1, dtype=np.float64)
    d, f, h = growth_factor(z, om), growth_rate(z, om), hubble(z, om)
    # v = a H f D Psi [km/s]; same float64 arithmetic in another order: 1e-12
    np.testing.assert_allclose(vel, h * f * d / (1 + z) * psi, rtol=1e-12, atol=0)
    q = np.stack(np.meshgrid(*(np.arange(16) * box / 16,) * 3, indexing="ij"))
    # positions are q + D Psi modulo L; compare the periodic difference (float64 rounding)
    diff = (pos - q - d * psi + box / 2) % box - box / 2
    assert np.abs(diff).max() < 1e-10
    np.testing.assert_array_equal(lagrangian_grid(16, box), q)


def test_2lpt_velocities_and_positions(random_psi):
    psi, box = random_psi.displacement, random_psi.box_size
    z, om = 0.0, QUIJOTE_FIDUCIAL.omega_m
    pos, vel = lpt_particles(psi, box, QUIJOTE_FIDUCIAL, z, order=2, dtype=np.float64)
    psi2 = second_order_displacement(psi, box)
    d2, f2 = second_order_growth_factor(z, om), second_order_growth_rate(z, om)
    expected = 100.0 * growth_rate(0.0, om) * psi + 100.0 * f2 * d2 * psi2
    # v = a H (f D Psi1 + f2 D2 Psi2) with a = 1, H = 100 h km/s/Mpc at z = 0; float64 rounding
    np.testing.assert_allclose(vel, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    q = lagrangian_grid(16, box)
    diff = (pos - q - psi - d2 * psi2 + box / 2) % box - box / 2
    assert np.abs(diff).max() < 1e-10


def test_positions_wrapped_into_box():
    n, box = 8, 10.0
    psi = np.zeros((3, n, n, n))
    psi[0] = 37.3  # far outside the box
    psi[1] = -12.0
    psi[2, 0, 0, 0] = -1e-9  # lands just below L, which rounds to L in float32
    for dtype in (np.float32, np.float64):
        pos, _ = lpt_particles(psi, box, QUIJOTE_FIDUCIAL, 0.0, order=1, dtype=dtype)
        assert pos.dtype == dtype
        assert pos.min() >= 0.0 and pos.max() < box
    # 0 + 37.3 mod 10 = 7.3 for particle (0, 0, 0) (float32 rounding)
    assert pos[0, 0, 0, 0] == pytest.approx(7.3, abs=1e-6)


def test_lpt_bad_input(random_psi):
    psi, box = random_psi.displacement, random_psi.box_size
    with pytest.raises(InputError, match="order"):
        lpt_particles(psi, box, QUIJOTE_FIDUCIAL, 0.0, order=3)
    with pytest.raises(InputError, match="redshift"):
        lpt_particles(psi, box, QUIJOTE_FIDUCIAL, -1.0)
    with pytest.raises(InputError, match="redshift"):
        lpt_particles(psi, box, QUIJOTE_FIDUCIAL, np.nan)
    with pytest.raises(InputError, match="Cosmology"):
        lpt_particles(psi, box, 0.3, 0.0)
    with pytest.raises(InputError, match="shape"):
        lpt_particles(psi[:2], box, QUIJOTE_FIDUCIAL, 0.0)
    with pytest.raises(InputError, match="box_size"):
        second_order_source(psi, -1.0)
    with pytest.raises(InputError, match=">= 2"):
        lagrangian_grid(1, 10.0)
