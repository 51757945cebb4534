"""Tests of the FFT bispectrum estimator (emu_backend.validation.bispectrum): brute force, statistics, presets."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from emu_backend.validation.bispectrum import (
    bispectrum,
    equilateral_triangles,
    isosceles_triangles,
    squeezed_triangles,
    triangle_bins,
)
from emu_backend.validation.power import power_spectrum

from emu_backend.errors import InputError

BOX = 10.0
KF = 2 * np.pi / BOX


def _brute_force(field, box, triangles, width):
    """Independent estimator: sum over all triplets of grid modes of the full complex FFT.

    For each (k1, k2) in shells 1 and 2, k3 = -(k1 + k2) reduced onto the grid (the DFT identifies vectors
    modulo N k_f) and kept if |k3| is in shell 3. Returns B = V^2/N^9 sum(d d d) / T, the ordered triplet
    count T, and the count T_true of triplets with k1 + k2 + k3 = 0 exactly (no wrap).
    """
    n = field.shape[0]
    kf = 2 * np.pi / box
    dk = np.fft.fftn(field).ravel()
    i = np.fft.fftfreq(n, 1.0 / n).astype(np.int64)
    vec = np.stack(np.meshgrid(i, i, i, indexing="ij"), axis=-1).reshape(-1, 3)
    kmag = kf * np.sqrt(np.sum(vec**2, axis=1))

    def flat(v):
        v = v % n
        return (v[..., 0] * n + v[..., 1]) * n + v[..., 2]

    out_b, out_t, out_true = [], [], []
    for k1, k2, k3 in triangles:
        s1, s2, s3 = (
            np.flatnonzero((kmag > 0) & (kmag >= c - width / 2) & (kmag < c + width / 2)) for c in (k1, k2, k3)
        )
        in3 = np.zeros(n**3, dtype=bool)
        in3[s3] = True
        v3 = -(vec[s1][:, None, :] + vec[s2][None, :, :])
        j3 = flat(v3)
        keep = in3[j3]
        prod = dk[s1][:, None] * dk[s2][None, :] * dk[j3]
        t = int(keep.sum())
        v3_norm = kf * np.sqrt(np.sum(v3**2, axis=-1))
        true = (v3_norm >= k3 - width / 2) & (v3_norm < k3 + width / 2)
        out_b.append(box**6 / n**9 * prod[keep].sum().real / t if t else np.nan)
        out_t.append(t)
        out_true.append(int(true.sum()))
    return np.array(out_b), np.array(out_t), np.array(out_true)


@pytest.mark.parametrize("n", [8, 9])  # even N: Nyquist planes and the DCT count path; odd N: the FFT path
def test_matches_brute_force_on_tiny_grid(n):
    rng = np.random.default_rng(n)
    field = rng.standard_normal((n, n, n)) + 0.3 * rng.standard_normal((n, n, n)) ** 2
    width = KF
    tri = triangle_bins(KF * (n // 2), KF)
    tri = np.vstack([tri, [[KF, KF, 4 * KF], [2 * KF, 4 * KF, 3 * KF]]])  # one bin that cannot close, one unsorted
    res = bispectrum(field, BOX, tri, k_width=width)
    b_ref, t_ref, t_true = _brute_force(field, BOX, tri, width)
    # counts are integers of the same set of triplets: exact
    np.testing.assert_array_equal(res.n_triangles, t_ref)
    assert res.n_triangles[-2] == 0 and np.isnan(res.B[-2]) and np.isnan(res.Q[-2])
    closed = t_ref > 0
    assert np.all(np.isfinite(res.B[closed]))
    # same sums of the same products, only summed in another order (FFTs, chunks): float round-off, 1e-10
    # relative to the typical summand |d1 d2 d3| V^2/N^9 ~ P^{3/2} V^{1/2}
    scale = np.sqrt(res.P1 * res.P2 * res.P3 * BOX**3)
    np.testing.assert_array_less(np.abs(res.B[closed] - b_ref[closed]), 1e-10 * scale[closed])
    # aliased triplets (k1 + k2 + k3 a non-zero multiple of N k_f) only where the upper edges reach 2 k_Nyquist
    no_alias = np.sum(tri, axis=1) + 1.5 * width < n * KF
    assert np.any(no_alias) and np.any(~no_alias & (t_true != t_ref))
    np.testing.assert_array_equal(t_true[no_alias], t_ref[no_alias])
    # the shell power is the power spectrum of the same field in the same shell (same Parseval sum: 1e-12)
    for j, p in enumerate((res.P1, res.P2, res.P3)):
        for row in range(len(tri)):
            k = tri[row, j]
            ps = power_spectrum(field, BOX, k_edges=[k - width / 2, k + width / 2])
            assert p[row] == pytest.approx(ps.power[0], rel=1e-12)


def test_translation_permutation_and_chunking_invariance(caplog):
    n = 16
    rng = np.random.default_rng(3)
    g = rng.standard_normal((n, n, n))
    field = g + 0.4 * g**2
    tri = triangle_bins(6 * KF, KF)
    with caplog.at_level(logging.DEBUG, logger="emu_backend.validation.bispectrum"):
        ref = bispectrum(field, BOX, tri)
    computed = re.search(r"(\d+) shells, (\d+) shell fields computed in (\d+) groups", caplog.text)
    assert computed.group(1) == computed.group(2) == "6" and computed.group(3) == "1"  # each shell once
    scale = np.sqrt(ref.P1 * ref.P2 * ref.P3 * BOX**3)
    # a translation multiplies d_k1 d_k2 d_k3 by exp(-i (k1 + k2 + k3).a) = 1: round-off only (1e-10)
    moved = bispectrum(np.roll(field, (3, -5, 7), axis=(0, 1, 2)), BOX, tri)
    np.testing.assert_array_less(np.abs(moved.B - ref.B), 1e-10 * scale)
    # B is symmetric in its three arguments
    perm = bispectrum(field, BOX, tri[:, [2, 0, 1]])
    np.testing.assert_array_equal(perm.n_triangles, ref.n_triangles)
    np.testing.assert_array_less(np.abs(perm.B - ref.B), 1e-10 * scale)
    # a cache of three shells forces groups and recomputation: the same sums (1e-10)
    small = bispectrum(field, BOX, tri, cache_gib=3.5 * n**3 * 8 / 2**30)
    np.testing.assert_array_equal(small.n_triangles, ref.n_triangles)
    np.testing.assert_array_less(np.abs(small.B - ref.B), 1e-10 * scale)
    # float32 fields: same counts, B within float32 round-off (1e-4 of the summand scale)
    single = bispectrum(field.astype(np.float32), BOX, tri, dtype=np.float32)
    np.testing.assert_array_equal(single.n_triangles, ref.n_triangles)
    np.testing.assert_array_less(np.abs(single.B - ref.B), 1e-4 * scale)


def _gaussian_sigma(res, triangles, kf):
    """Gaussian standard deviation of the estimator, ``sqrt(s V P1 P2 P3 / T)``.

    With T ordered triplets, each product d1 d2 d3 is correlated only with its conjugate triplet's
    permutations that stay in the shells: s = 6 (equilateral), 2 (isosceles), 1 (scalene bins).
    """
    i = np.round(triangles / kf).astype(int)
    equal_12, equal_23 = i[:, 0] == i[:, 1], i[:, 1] == i[:, 2]
    s = np.where(equal_12 & equal_23, 6, np.where(equal_12 | equal_23, 2, 1))
    return np.sqrt(s * res.box_size**3 * res.P1 * res.P2 * res.P3 / res.n_triangles)


def test_gaussian_field_has_zero_bispectrum():
    n, box, n_seeds = 32, 100.0, 10
    kf = 2 * np.pi / box
    tri = triangle_bins(12 * kf, 2 * kf, k_min=2 * kf)
    z = []
    for seed in range(n_seeds):
        res = bispectrum(np.random.default_rng(100 + seed).standard_normal((n, n, n)), box, tri, k_width=2 * kf)
        z.append(res.B / _gaussian_sigma(res, tri, 2 * kf))
    z = np.array(z)  # (seeds, bins), ~ N(0, 1) and uncorrelated between bins for a Gaussian field
    dof = z.size
    # the scatter matches the Gaussian variance: mean z^2 = 1 within 5 sigma of chi^2_dof / dof
    assert abs(np.mean(z**2) - 1) < 5 * np.sqrt(2 / dof)
    # B is consistent with zero: per bin, the seed average in units of its standard error; chi^2 over bins
    z_bin = z.mean(axis=0) * np.sqrt(n_seeds)
    assert abs(np.sum(z_bin**2) - len(tri)) < 5 * np.sqrt(2 * len(tri))
    assert abs(z.mean()) < 5 / np.sqrt(dof)


@pytest.mark.parametrize("f", [0.1, 0.5])
def test_local_non_gaussian_cells_reduced_bispectrum(f):
    # delta = g + f (g^2 - 1) with white g (unit variance per cell): the cells are i.i.d., so exactly
    # P = var V/N^3 and B = m3 (V/N^3)^2 for every bin, var = 1 + 2 f^2, m3 = E[delta^3] = 6 f + 8 f^3, and
    # Q = m3 / (3 var^2) -> 2 f (the tree-level local-type value) for small f (f = 0.1: 0.195 vs 0.2).
    n, box, n_seeds = 64, 200.0, 8
    kf = 2 * np.pi / box
    tri = triangle_bins(30 * kf, 3 * kf, k_min=15 * kf)  # 56 bins; high k: many triplets, small scatter
    var, m3 = 1 + 2 * f**2, 6 * f + 8 * f**3
    cell = box**3 / n**3
    q_seed, b_seed, p_seed = [], [], []
    for seed in range(n_seeds):
        g = np.random.default_rng(200 + seed).standard_normal((n, n, n))
        res = bispectrum(g + f * (g**2 - 1), box, tri, k_width=3 * kf)
        q_seed.append(np.mean(res.Q))
        b_seed.append(np.mean(res.B) / (m3 * cell**2))
        p_seed.append(np.mean(res.P1) / (var * cell))
    # seed-to-seed scatter gives the standard error; 5 standard errors (t with 7 dof: p ~ 2e-3)
    for values, expected in ((q_seed, m3 / (3 * var**2)), (b_seed, 1.0), (p_seed, 1.0)):
        se = np.std(values, ddof=1) / np.sqrt(n_seeds)
        assert abs(np.mean(values) - expected) < 5 * se, (np.mean(values), expected, se)
    # the test has power: 5 standard errors are below 10% of Q (f = 0.1: 8%; f = 0.5: 2%, far from 2 f = 1)
    assert 5 * np.std(q_seed, ddof=1) / np.sqrt(n_seeds) < 0.1 * m3 / (3 * var**2)


def test_presets_give_valid_triangles():
    tri = triangle_bins(0.9, 0.1)
    m = 9
    expected = [(a, b, c) for a in range(1, m + 1) for b in range(a, m + 1) for c in range(b, min(a + b, m) + 1)]
    np.testing.assert_allclose(tri, 0.1 * np.array(expected), rtol=1e-12)
    assert len(tri) == 115
    equilateral = np.repeat([[0.2], [0.3], [0.4], [0.5]], 3, axis=1)
    np.testing.assert_allclose(equilateral_triangles(0.2, 0.5, 0.1), equilateral)
    np.testing.assert_allclose(squeezed_triangles(0.05, [0.3, 0.5]), [[0.3, 0.3, 0.05], [0.5, 0.5, 0.05]])
    angles = isosceles_triangles(0.4, angles=[2 * np.pi / 3, 0.0])  # equilateral, folded
    np.testing.assert_allclose(angles, [[0.4, 0.4, 0.4], [0.4, 0.4, 0.8]])
    np.testing.assert_allclose(isosceles_triangles(0.4, ratios=[0.5, 1.5]), [[0.4, 0.4, 0.2], [0.4, 0.4, 0.6]])
    # every preset bin closes on a mesh: a non-zero triangle count
    n, box = 32, 100.0
    kf = 2 * np.pi / box
    field = np.random.default_rng(5).standard_normal((n, n, n))
    for preset in (
        triangle_bins(10 * kf, 2 * kf),
        equilateral_triangles(2 * kf, 12 * kf, kf),
        squeezed_triangles(kf, [6 * kf, 10 * kf]),
        isosceles_triangles(8 * kf, angles=np.linspace(0, 0.9 * np.pi, 6)),
    ):
        res = bispectrum(field, box, preset)
        assert np.all(res.n_triangles > 0) and np.all(np.isfinite(res.B)) and np.all(np.isfinite(res.Q))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(field=np.zeros((4, 4, 5))), "cubic"),
        (dict(field=np.zeros((4, 4, 4), dtype=complex)), "real"),
        (dict(field=np.full((4, 4, 4), np.nan)), "non-finite"),
        (dict(box_size=0.0), "box_size"),
        (dict(triangles=[[1.0, 1.0]]), r"shape \(M, 3\)"),
        (dict(triangles=[[1.0, 1.0, 10.0]]), "k_Nyquist"),
        (dict(triangles=[[1.0, 0.0, 1.0]]), "outside"),
        (dict(k_width=-0.1), "k_width"),
        (dict(dtype=np.int32), "dtype"),
        (dict(cache_gib=1e-9), "cache_gib"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(field=np.ones((8, 8, 8)), box_size=BOX, triangles=[[KF, KF, KF]])
    args.update(kwargs)
    field, box, tri = args.pop("field"), args.pop("box_size"), args.pop("triangles")
    with pytest.raises(InputError, match=match):
        bispectrum(field, box, tri, **args)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: triangle_bins(0.1, 0.2), "k_max"),
        (lambda: triangle_bins(1.0, 0.0), "dk"),
        (lambda: equilateral_triangles(0.5, 0.1, 0.1), "k_max"),
        (lambda: squeezed_triangles(0.5, [0.3]), "k_short"),
        (lambda: isosceles_triangles(0.3), "exactly one"),
        (lambda: isosceles_triangles(0.3, ratios=[2.5]), "ratios"),
        (lambda: isosceles_triangles(0.3, angles=[np.pi]), "angles"),
    ],
)
def test_bad_preset_input_raises(call, match):
    with pytest.raises(InputError, match=match):
        call()
