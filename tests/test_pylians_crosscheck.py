"""Cross-checks of the validation estimators against Pylians (Pk_library, MAS_library, redshift_space_library).

Pylians conventions (pylians3.readthedocs.io and its source), and how each comparison matches them:

* ``MAS_library.MA`` paints float32 positions into a float32 mesh with mesh point ``i`` at ``i * L / N`` (the
  same convention as ours); its result is the painted count, so ``delta = count / mean - 1``.
* ``Pk_library.Pk`` / ``XPk`` multiply each mode by the inverse window ``prod_i (x_i / sin x_i)^p``,
  ``x_i = pi n_i / N`` (our deconvolution), bin ``|k|`` in ``[i, i + 1) k_F`` (bin 0, the DC mode, dropped),
  and count each conjugate pair ``(k, -k)`` once; we count both, so with edges ``k_F (1, 2, ...)`` our
  ``n_modes`` is twice theirs and the means agree, except in bins holding self-conjugate (Nyquist) modes, which
  both count once: compared below ``k_Nyquist`` only. Their FFTs are single precision.
* ``Pk_library.Bk`` uses shells ``[k - k_F, k + k_F)`` (width 2 k_F) and ``k3 = |k1 + k2|`` from the angle
  ``theta`` between ``k1`` and ``k2``; shell centres at half-integer multiples of ``k_F`` keep every shell edge off
  the discrete ``|k|`` values, so both estimators use the same modes.
"""

from __future__ import annotations

import numpy as np
import pytest
from emu_backend.validation import (
    bispectrum,
    cross_correlation,
    density_mesh,
    momentum_mesh,
    multipoles,
    power_spectrum,
    redshift_space_positions,
)

from emu_backend.cosmology.growth import growth_rate

PKL = pytest.importorskip("Pk_library", reason="Pylians (extra 'validation') is not installed")
MASL = pytest.importorskip("MAS_library", reason="Pylians (extra 'validation') is not installed")

N, BOX, A, OMEGA_M = 32, 200.0, 1.0, 0.3


def _particles(seed=0, n=N, box=BOX):
    """Zel'dovich particles of a Gaussian field (P ~ k^-1.5 up to k_Nyq), with linear velocities [km/s]."""
    rng = np.random.default_rng(seed)
    kf = 2 * np.pi / box
    kx, kz = np.fft.fftfreq(n, 1.0 / n) * kf, np.fft.rfftfreq(n, 1.0 / n) * kf
    K = np.stack(np.meshgrid(kx, kx, kz, indexing="ij"))
    k2 = (K**2).sum(0)
    pk = np.where(k2 > 0, (np.sqrt(k2) / kf + 1e-12) ** -1.5, 0.0)
    pk[np.abs(K).max(0) >= 0.999 * np.pi * n / box] = 0.0
    dk = np.fft.rfftn(rng.standard_normal((n, n, n))) * np.sqrt(pk)
    psik = 1j * K * np.divide(dk, k2, out=np.zeros_like(dk), where=k2 > 0)
    psi = np.stack([np.fft.irfftn(psik[c], s=(n, n, n), axes=(0, 1, 2)) for c in range(3)])
    psi *= 0.3 * (box / n) / psi.std()  # rms displacement 0.3 cells: mildly non-linear
    q = (np.arange(n) + 0.25) * box / n
    pos = (np.stack(np.meshgrid(q, q, q, indexing="ij")) + psi).reshape(3, -1).T
    f = float(growth_rate(1.0 / A - 1.0, OMEGA_M))
    vel = A * 100.0 * np.sqrt(OMEGA_M / A**3 + 1 - OMEGA_M) * f * psi.reshape(3, -1).T
    pos32 = np.mod(pos, box).astype(np.float32)
    pos32[pos32 >= np.float32(box)] = 0.0
    return np.ascontiguousarray(pos32), np.ascontiguousarray(vel, dtype=np.float32)


def _pylians_delta(pos32, mas="CIC", n=N, box=BOX):
    number = np.zeros((n, n, n), dtype=np.float32)
    MASL.MA(pos32, number, box, MAS=mas, verbose=False)
    return number / np.mean(number, dtype=np.float64) - 1.0


def _pylians_edges(n=N, box=BOX):
    """Pylians' bins [i, i+1) k_F, i = 1 ... N/2 - 1: every bin below k_Nyquist (no self-conjugate mode).

    Pylians bins the exact integer part of |k| / k_F, so a mode with |k| = i k_F exactly (e.g. (6, 0, 0)) is in
    bin i; our edges are compared with a floating-point |k|, so they are lowered by 1e-9 k_F (no mode lies
    closer than 1/(2 i) k_F below an integer i) to put such modes on the same side.
    """
    return 2 * np.pi / box * (np.arange(1, n // 2 + 1, dtype=np.float64) - 1e-9)


@pytest.mark.parametrize("mas, window", [("CIC", "cic"), ("TSC", "tsc"), ("NGP", "ngp")])
def test_density_mesh_matches_MAS_library(mas, window):
    pos32, _ = _particles()
    ours = density_mesh(pos32.astype(np.float64), BOX, N, window=window, interlace=False, deconvolve=False)
    theirs = _pylians_delta(pos32, mas)
    # same positions and mesh convention; Pylians accumulates float32 weights and counts (O(1) per cell with
    # ~ 1e-7 relative error per deposit; measured max 5.7e-6): 2e-5 absolute on delta
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5)


def test_momentum_mesh_matches_weighted_MAS_library():
    pos32, vel32 = _particles(seed=6)
    ours = momentum_mesh(pos32.astype(np.float64), vel32.astype(np.float64), BOX, N, deconvolve=False)
    nbar = pos32.shape[0] / N**3
    for c in range(3):
        number = np.zeros((N, N, N), dtype=np.float32)
        MASL.MA(pos32, number, BOX, MAS="CIC", W=np.ascontiguousarray(vel32[:, c]), verbose=False)
        # velocity-weighted CIC in float32: sums of O(100) km/s weights at 1e-7 relative each, cells up to
        # ~700 km/s (measured max 1e-3 km/s): 2e-3 km/s
        np.testing.assert_allclose(ours[c], number / nbar, rtol=0, atol=2e-3)


def test_power_spectrum_matches_Pk():
    pos32, _ = _particles(seed=1)
    edges = _pylians_edges()
    ours = power_spectrum(density_mesh(pos32.astype(np.float64), BOX, N, window="cic"), BOX, edges)
    res = PKL.Pk(_pylians_delta(pos32).astype(np.float32), BOX, 0, "CIC", 1, False)
    nb = edges.size - 1
    np.testing.assert_array_equal(ours.n_modes, 2 * res.Nmodes3D[:nb])  # (k, -k) counted once by Pylians
    np.testing.assert_allclose(ours.k, res.k3D[:nb], rtol=1e-6)  # float32 k sums in Pylians
    # single-precision FFT and mesh in Pylians (measured 4e-7): 1e-5 relative per bin
    np.testing.assert_allclose(ours.power, res.Pk[:nb, 0], rtol=1e-5)


def test_cross_correlation_matches_XPk():
    pos32, vel32 = _particles(seed=2)
    s32 = redshift_space_positions(pos32, vel32, A, OMEGA_M, BOX).astype(np.float32)
    edges = _pylians_edges()
    d_a = density_mesh(pos32.astype(np.float64), BOX, N)
    d_b = density_mesh(s32.astype(np.float64), BOX, N)
    ours = cross_correlation(d_a, d_b, BOX, edges)
    res = PKL.XPk([_pylians_delta(pos32).astype(np.float32), _pylians_delta(s32).astype(np.float32)], BOX, 0,
                  MAS=["CIC", "CIC"], threads=1)
    nb = edges.size - 1
    # single precision in Pylians: 1e-5 relative on spectra; r is a ratio of them: 1e-5 absolute
    np.testing.assert_allclose(ours.p_ab.power, res.XPk[:nb, 0, 0], rtol=1e-5)
    np.testing.assert_allclose(ours.p_aa.power, res.Pk[:nb, 0, 0], rtol=1e-5)
    np.testing.assert_allclose(ours.p_bb.power, res.Pk[:nb, 0, 1], rtol=1e-5)
    r_pyl = res.XPk[:nb, 0, 0] / np.sqrt(res.Pk[:nb, 0, 0] * res.Pk[:nb, 0, 1])
    np.testing.assert_allclose(ours.r, r_pyl, rtol=0, atol=1e-5)


def test_redshift_space_shift_matches_redshift_space_library():
    RSL = pytest.importorskip("redshift_space_library", reason="Pylians (extra 'validation') is not installed")
    pos32, vel32 = _particles(seed=3)
    a = 0.5
    z = 1.0 / a - 1.0
    hubble = 100.0 * np.sqrt(OMEGA_M * (1 + z) ** 3 + 1 - OMEGA_M)  # km/s/(Mpc/h), as Pylians expects
    theirs = pos32.copy()
    RSL.pos_redshift_space(theirs, vel32, BOX, hubble, z, 2)
    ours = redshift_space_positions(pos32, vel32, a, OMEGA_M, BOX, los=2)
    # float32 arithmetic in Pylians on O(100) Mpc/h coordinates: 1e-4 Mpc/h; periodic distance
    diff = ours - theirs
    diff -= BOX * np.round(diff / BOX)
    assert np.abs(diff).max() < 1e-4


def test_multipoles_match_Pk_axis():
    pos32, vel32 = _particles(seed=4)
    s32 = redshift_space_positions(pos32, vel32, A, OMEGA_M, BOX, los=2).astype(np.float32)
    edges = _pylians_edges()
    ours = multipoles(pos32, vel32, BOX, N, a=A, omega_m=OMEGA_M, los=2, window="cic", interlace=False,
                      k_edges=edges)
    res = PKL.Pk(_pylians_delta(s32).astype(np.float32), BOX, 2, "CIC", 1, False)
    nb = edges.size - 1
    # single precision in Pylians: 1e-5 relative on the monopole; the quadrupole and hexadecapole cross zero,
    # so their tolerance is 1e-5 of the monopole of the bin (measured 2.6e-7, 8e-7, 1.8e-6)
    np.testing.assert_allclose(ours.pole(0), res.Pk[:nb, 0], rtol=1e-5)
    for row, ell in ((1, 2), (2, 4)):
        rel = np.abs(ours.pole(ell) - res.Pk[:nb, row]) / np.abs(res.Pk[:nb, 0])
        assert rel.max() < 1e-5, (ell, rel.max())


def test_bispectrum_matches_Bk():
    rng = np.random.default_rng(5)
    g = rng.standard_normal((N, N, N))
    field = (g + 0.5 * (g**2 - 1)).astype(np.float32)  # non-Gaussian: B well away from zero
    kf = 2 * np.pi / BOX
    k1, k2 = 4.5 * kf, 6.5 * kf  # half-integer centres: no mode on a shell edge
    theta = np.array([0.3, 1.0, 1.7, 2.4, 2.9])
    res = PKL.Bk(field, BOX, k1, k2, theta, "None", 1)
    k3 = res.k[2:]
    ours = bispectrum(field.astype(np.float64), BOX, np.stack([np.full(5, k1), np.full(5, k2), k3], -1),
                      k_width=2 * kf)
    # same modes, same normalisation (V^2 / N^9 sum d d d / triangles); Pylians is single precision
    # throughout its FFTs and products (measured 2.5e-7): 1e-5 relative
    assert np.all(ours.n_triangles > 0)
    np.testing.assert_allclose(ours.B, res.B, rtol=1e-5)
    np.testing.assert_allclose(ours.Q, res.Q, rtol=1e-5)
    np.testing.assert_allclose(ours.P1, res.Pk[0], rtol=1e-5)
    np.testing.assert_allclose(ours.P2, res.Pk[1], rtol=1e-5)
    np.testing.assert_allclose(ours.P3, res.Pk[2:], rtol=1e-5)
