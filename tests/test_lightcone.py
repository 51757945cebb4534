"""Lightcones (emu_backend.lightcone): distances, crossings, replication, shell counts, files, resume, CLI."""

from __future__ import annotations

import itertools
import math

import h5py
import numpy as np
import pytest

from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.cosmology.distance import C_KM_S, HUBBLE_DISTANCE_MPC_H, DistanceTable, comoving_distance
from emu_backend.datatypes.snapshot import Snapshot
from emu_backend.errors import DomainError, InputError
from emu_backend.lightcone.build import LightconeSpec, build_lightcone
from emu_backend.lightcone.crossing import solve_crossing, trajectory
from emu_backend.lightcone.geometry import Cone, radec, replicas
from emu_backend.lightcone.store import read_shell

hp = pytest.importorskip("healpy", reason="lightcone maps need healpy (pip install '.[lightcone]')")

OM = QUIJOTE_FIDUCIAL.omega_m


# -- distances --------------------------------------------------------------------------------------------
def test_comoving_distance_einstein_de_sitter_closed_form():
    z = np.array([0.1, 0.5, 1.0, 3.0])
    exact = 2 * HUBBLE_DISTANCE_MPC_H * (1 - 1 / np.sqrt(1 + z))  # Omega_m = 1: chi = 2 (c/H0)(1 - (1+z)^-1/2)
    np.testing.assert_allclose(comoving_distance(z, 1.0), exact, rtol=1e-10)  # quadrature to 1e-12


def test_comoving_distance_matches_astropy():
    cosmology = pytest.importorskip("astropy.cosmology", reason="astropy is the independent reference")
    ref = cosmology.FlatLambdaCDM(H0=100.0, Om0=OM, Tcmb0=0.0)  # no radiation, like ours; Mpc at h = 1 is Mpc/h
    z = np.array([0.01, 0.3, 1.0, 2.5])
    np.testing.assert_allclose(comoving_distance(z, OM), ref.comoving_distance(z).value, rtol=1e-8)
    table = DistanceTable(OM, 3.0)  # the spline table and its inverse, against the same reference
    np.testing.assert_allclose(table.distance(z), ref.comoving_distance(z).value, rtol=1e-8)
    np.testing.assert_allclose(table.redshift(ref.comoving_distance(z).value), z, rtol=1e-8)


# -- geometry ---------------------------------------------------------------------------------------------
def test_radec_matches_healpy():
    x = np.random.default_rng(0).normal(size=(200, 3)) * 100
    ra, dec = radec(x)
    lon, lat = hp.vec2ang(x, lonlat=True)  # independent library's (longitude, latitude) of the same vectors
    np.testing.assert_allclose(dec, lat, atol=1e-10)
    np.testing.assert_allclose(np.angle(np.exp(1j * np.radians(ra - lon))), 0, atol=1e-10)


def test_cone_sky_fraction_counts_healpix_pixels():
    nside = 128
    vec = np.stack(hp.pix2vec(nside, np.arange(hp.nside2npix(nside))), axis=1)
    cone = Cone(30.0, 20.0, 25.0)
    # pixel centres in a cap: its area fraction up to a boundary ring of pixels (~ perimeter x pixel / area)
    assert np.mean(cone.contains(vec)) == pytest.approx(cone.sky_fraction, rel=0.02)


# -- crossings --------------------------------------------------------------------------------------------
def _line_root(x0, u, chi0):
    """Analytic crossing of x = x0 + u t with |x| = chi0 + t: the root of (u.u - 1) t^2 + 2 (x0.u - chi0) t +
    (x0.x0 - chi0^2) = 0 with t >= 0."""
    a = np.sum(u * u, 1) - 1.0
    b = 2 * (np.sum(x0 * u, 1) - chi0)
    c = np.sum(x0 * x0, 1) - chi0**2
    return chi0 + (-b - np.sqrt(b * b - 4 * a * c)) / (2 * a)


@pytest.mark.parametrize("interpolation", ["hermite", "linear"])
def test_straight_line_crosses_at_the_analytic_time(interpolation):
    rng = np.random.default_rng(1)
    chi0, h = 500.0, 40.0
    n = 1000
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1)[:, None]
    v = rng.normal(size=(n, 3)) * 3000.0  # km/s, far beyond typical, to make the motion matter
    u = -v / C_KM_S  # dx/dchi
    x0 = direction * (chi0 + rng.uniform(0.5, h - 0.5, (n, 1)))
    x1 = x0 + u * h
    keep = (np.linalg.norm(x0, axis=1) >= chi0) & (np.linalg.norm(x1, axis=1) < chi0 + h)
    c = solve_crossing(x0[keep], v[keep], x1[keep], v[keep], chi0, chi0 + h, interpolation)
    # both interpolations are exact for a straight line; Newton's tolerance is 1e-7 Mpc/h
    np.testing.assert_allclose(c.chi, _line_root(x0[keep], u[keep], chi0), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(c.position, axis=1), c.chi, atol=1e-6)
    np.testing.assert_allclose(c.velocity, v[keep], atol=1e-6)


def test_hermite_reproduces_a_cubic_trajectory():
    rng = np.random.default_rng(2)
    coef = rng.normal(size=(4, 5, 3))  # x(chi) = sum_k coef_k (chi - chi0)^k, a cubic: Hermite is exact
    h = 7.0
    pos = lambda t: sum(coef[k] * t**k for k in range(4))  # noqa: E731
    vel = lambda t: -C_KM_S * sum(k * coef[k] * t ** (k - 1) for k in range(1, 4))  # noqa: E731 - v = -c dx/dchi
    s = rng.uniform(0, 1, 5)
    x, v = trajectory(s, pos(0.0), vel(0.0), pos(h), vel(h), h, "hermite")
    np.testing.assert_allclose(x, pos(s[:, None] * h), atol=1e-10)
    np.testing.assert_allclose(v, vel(s[:, None] * h), rtol=1e-9, atol=1e-6)


# -- whole builds with constructed snapshots ---------------------------------------------------------------
N, BOX = 8, 20.0


def _lattice():
    q = np.stack(np.unravel_index(np.arange(N**3), (N, N, N)), axis=1) * (BOX / N)
    return q + 0.5 * BOX / N


def _moving_snapshots(velocity):
    """Particles drifting at constant peculiar velocity: x(chi) = q - (v/c)(chi - chi_ref), exactly a line."""
    q, table = _lattice(), DistanceTable(OM, 2.0)
    chi_ref = 0.0

    def at(z):
        x = q - velocity / C_KM_S * (float(table.distance(z)) - chi_ref)
        return Snapshot(x, np.broadcast_to(velocity, x.shape), np.arange(N**3), 1 / (1 + z), BOX, N, QUIJOTE_FIDUCIAL)
    return at, q


def test_build_crossings_match_the_analytic_time_and_no_duplicates(tmp_path):
    rng = np.random.default_rng(3)
    velocity = rng.normal(size=(N**3, 3)) * 1500.0
    at, q = _moving_snapshots(velocity)
    spec = LightconeSpec(observer=(3.0, 4.0, 5.0), z_min=0.0, z_max=0.02, n_shells=3, nside=8)
    shells = build_lightcone(at, spec, tmp_path, digest="t")
    seen = set()
    u = -velocity / C_KM_S
    for s in shells:
        d = read_shell(s.path)
        x0 = q[d["id"]] + d["replica"] * BOX - np.array(spec.observer)
        # float32 snapshots: positions rounded to ~4e-6 Mpc/h at 20 Mpc/h, so the line is known to ~1e-5
        np.testing.assert_allclose(d["chi"], _line_root(x0, u[d["id"]], 0.0), atol=2e-4)
        assert np.all((d["chi"] >= d["attrs"]["chi_lo"]) & (d["chi"] < d["attrs"]["chi_hi"]))
        # redshift of the crossing distance by direct quadrature; observed redshift from the stored velocity
        np.testing.assert_allclose(comoving_distance(d["z_cos"], OM), d["chi"], rtol=1e-7, atol=1e-6)
        v_los = np.sum(velocity[d["id"]] * d["position"], 1) / np.linalg.norm(d["position"], axis=1)
        # the Hermite velocity -c dx/dchi sees the float32 snapshot positions (4e-6 Mpc/h) times c / Delta chi
        # (~1e4 / Mpc): ~0.04 km/s, i.e. 1.3e-7 in z_obs; 1e-6 allows 0.3 km/s
        np.testing.assert_allclose(d["z_obs"], (1 + d["z_cos"]) * (1 + v_los / C_KM_S) - 1, atol=1e-6)
        keys = set(zip(d["id"].tolist(), map(tuple, d["replica"].tolist())))
        assert len(keys) == len(d["id"]) and not keys & seen  # no duplicate within or across shells
        seen |= keys
    # no gaps: every (particle, replica) whose line crosses in the range is found (brute force over replicas)
    table = DistanceTable(OM, 1.0)
    chi_max = float(table.distance(0.02))
    expected = set()
    span = int(math.ceil(chi_max / BOX)) + 2
    for r in itertools.product(range(-span, span + 1), repeat=3):
        x0 = q + np.array(r) * BOX - np.array(spec.observer)
        root = _line_root(x0, u, 0.0)
        for i in np.flatnonzero((root >= 0) & (root < chi_max)):
            expected.add((int(i), r))
    assert seen == expected


def test_static_lattice_counts_are_lattice_points_and_mean_density(tmp_path):
    q = _lattice()

    def at(z):
        return Snapshot(q, np.zeros_like(q), np.arange(N**3), 1 / (1 + z), BOX, N, QUIJOTE_FIDUCIAL)
    spec = LightconeSpec(observer=(0.0, 0.0, 0.0), z_min=0.005, z_max=0.03, n_shells=2, nside=16)
    shells = build_lightcone(at, spec, tmp_path, digest="s")
    table = DistanceTable(OM, 1.0)
    chi = table.distance(np.array([0.005, 0.03]))
    # brute force: lattice points q + r L in the annulus (an independent enumeration of the replicated box)
    span = int(chi[1] // BOX) + 2
    grid = np.array(list(itertools.product(range(-span, span + 1), repeat=3))) * BOX
    pts = (grid[:, None, :] + q[None]).reshape(-1, 3)
    dist = np.linalg.norm(pts, axis=1)
    total = sum(s.n_particles for s in shells)
    assert total == int(np.sum((dist >= chi[0]) & (dist < chi[1])))
    nbar = N**3 / BOX**3
    volume = 4 * math.pi / 3 * (chi[1] ** 3 - chi[0] ** 3)
    # a lattice fills the shell to its surface term: relative error ~ 3 (cell / shell thickness) at most
    assert total == pytest.approx(nbar * volume, rel=3 * (BOX / N) / (chi[1] - chi[0]))
    d = read_shell(shells[0].path)
    assert d["counts"].sum() == d["attrs"]["n_particles"]


def test_replicas_cover_the_shell():
    obs = np.array([1.0, 2.0, 3.0])
    reps = replicas(10.0, obs, 25.0, 30.0, 0.0)
    # every replica holding a point at distance in [25, 30] is listed: sample points of many replicas
    rng = np.random.default_rng(4)
    span = 5
    for r in itertools.product(range(-span, span + 1), repeat=3):
        pts = (np.array(r) + rng.uniform(size=(400, 3))) * 10.0 - obs
        d = np.linalg.norm(pts, axis=1)
        if np.any((d >= 25) & (d <= 30)):
            assert (reps == r).all(axis=1).any(), r


def test_cone_limits_the_particles(tmp_path):
    q = _lattice()
    at = lambda z: Snapshot(q, np.zeros_like(q), np.arange(N**3), 1 / (1 + z), BOX, N, QUIJOTE_FIDUCIAL)  # noqa: E731
    cone = Cone(40.0, -30.0, 20.0)
    spec = LightconeSpec(z_min=0.01, z_max=0.03, n_shells=1, nside=8, cone=cone)
    d = read_shell(build_lightcone(at, spec, tmp_path, digest="c")[0].path)
    ang = np.degrees(np.arccos(np.clip(d["position"] @ cone.axis / np.linalg.norm(d["position"], axis=1), -1, 1)))
    assert ang.max() <= 20.0 + 1e-6
    table = DistanceTable(OM, 1.0)
    chi = table.distance(np.array([0.01, 0.03]))
    expected = N**3 / BOX**3 * 4 * math.pi / 3 * (chi[1] ** 3 - chi[0] ** 3) * cone.sky_fraction
    assert len(d["id"]) == pytest.approx(expected, rel=0.05)  # lattice: surface terms of a 20 deg cone


def test_spec_refuses_bad_input():
    with pytest.raises(InputError, match="z_max"):
        LightconeSpec(z_min=0.5, z_max=0.2)
    with pytest.raises(InputError, match="nside"):
        LightconeSpec(nside=12)
    with pytest.raises(InputError, match="radius"):
        Cone(0, 0, 200)


# -- pipeline, resume, CLI -----------------------------------------------------------------------------------
def _config(out, **spec):
    from emu_backend.pipelines.lightcone import LightconeConfig

    base = dict(z_min=0.02, z_max=0.05, n_shells=2, nside=8, cone=Cone(0, 0, 15))
    return LightconeConfig(out, LightconeSpec(**{**base, **spec}), grid=8, backend="za", halofit=False)


def test_pipeline_resumes_and_refuses_another_config(tmp_path):
    from emu_backend.pipelines.lightcone import lightcone

    first = lightcone(_config(tmp_path))
    counts = [s.n_particles for s in first.shells]
    with h5py.File(first.maps) as f:
        kappa = f["kappa"][...]
    (tmp_path / "shell_001.h5").rename(tmp_path / ".shell_001.h5.x.part")  # killed while writing the last shell
    second = lightcone(_config(tmp_path))
    assert [s.reused for s in second.shells] == [True, False]
    assert [s.n_particles for s in second.shells] == counts
    assert not list(tmp_path.glob(".*.part"))
    with h5py.File(second.maps) as f:
        np.testing.assert_array_equal(f["kappa"][...], kappa)  # the rebuilt shell is the same, bit for bit
    with pytest.raises(InputError, match="another lightcone run"):
        lightcone(_config(tmp_path, z_max=0.06))
    assert (tmp_path / "report.png").is_file() and (tmp_path / "maps.h5").is_file()


def test_cli_lightcone(tmp_path, capsys):
    from emu_backend.cli.main import main

    out = tmp_path / "lc"
    rc = main(["lightcone", "--out", str(out), "--grid", "8", "--backend", "za", "--z-min", "0.02", "--z-max",
               "0.04", "--n-shells", "1", "--nside", "8", "--cone", "0", "0", "10", "--maps-only",
               "--no-halofit"])
    assert rc == 0 and (out / "shell_000.h5").is_file()
    assert main(["lightcone", "--out", str(tmp_path / "bad"), "--z-min", "1", "--z-max", "0.5"]) == 2
    assert "z_max" in capsys.readouterr().err


def test_pixel_window_is_never_downloaded(tmp_path, capsys, monkeypatch):
    """healpy fetches its pixel-window files from the network unless given a local ``datapath``; the
    package never downloads: without --pixel-window-dir healpy.pixwin is not called (the comparison stops
    at nside / 2), and a folder without the file is refused naming it before any work."""
    hp = pytest.importorskip("healpy", reason="the lightcone maps need healpy (extra 'lightcone')")
    import json

    from emu_backend.cli.main import main

    def no_download(*args, **kwargs):
        raise AssertionError(f"healpy.pixwin called with {args} {kwargs}")

    monkeypatch.setattr(hp, "pixwin", no_download)
    base = ["lightcone", "--grid", "8", "--backend", "za", "--z-min", "0.02", "--z-max", "0.04", "--n-shells", "1",
            "--nside", "8", "--cone", "0", "0", "10", "--maps-only", "--no-halofit"]
    assert main([*base, "--out", str(tmp_path / "lc")]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "lc" / "report.json").read_text())
    assert all(c.get("pixel_window") in (None, "none") for c in report["convergence"])
    empty = tmp_path / "no_windows"
    empty.mkdir()
    assert main([*base, "--out", str(tmp_path / "lc2"), "--pixel-window-dir", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "pixel_window_n0008.fits" in err and "no_windows" in err


def test_emulator_domain_refused_before_work(tmp_path):
    from emu_backend.pipelines.lightcone import LightconeConfig, lightcone

    config = LightconeConfig(tmp_path, LightconeSpec(z_max=3.5, nside=8), grid=8)
    with pytest.raises(DomainError, match="z = 3.5"):
        lightcone(config)
    assert not list(tmp_path.glob("shell_*.h5"))


# -- maps ------------------------------------------------------------------------------------------------
def test_poisson_particles_give_the_shot_noise_convergence_power():
    from emu_backend.lightcone.maps import MapAccumulator, angular_power, density_contrast, shot_noise_convergence

    rng = np.random.default_rng(5)
    table = DistanceTable(OM, 1.0)
    chi0, chi1, nbar, nside = 100.0, 200.0, 0.02, 32
    n = rng.poisson(nbar * 4 * math.pi / 3 * (chi1**3 - chi0**3))
    r = np.cbrt(rng.uniform(chi0**3, chi1**3, n))  # uniform in volume
    direction = rng.normal(size=(n, 3))
    x = direction / np.linalg.norm(direction, axis=1)[:, None] * r[:, None]
    acc = MapAccumulator(nside, nbar, chi0, chi1, [chi1], table, OM)
    acc.add(x[: n // 2], r[: n // 2])  # two chunks, as a shell is built
    acc.add(x[n // 2:], r[n // 2:])
    counts, kappa = acc.finish()
    # a Poisson sample of a uniform density is pure shot noise: flat C_ell = Limber of P = 1/nbar (derived
    # separately); its mean over ell 2..3 nside has a relative scatter ~ sqrt(2 / npix) ~ 1%
    cl = angular_power(kappa[0])[2:]
    assert np.mean(cl) == pytest.approx(shot_noise_convergence(chi1, chi0, nbar, table, OM), rel=0.05)
    assert abs(kappa.mean()) < 3 * math.sqrt(np.mean(cl) / hp.nside2npix(nside) * 4 * math.pi)  # mean removed
    delta = density_contrast(counts, nbar, chi0, chi1)
    assert abs(delta.mean()) < 4 / math.sqrt(n)  # counts / expected - 1: Poisson scatter of the total


@pytest.mark.slow
def test_convergence_power_matches_limber_of_the_snapshot_power(tmp_path):
    """2LPT snapshots (fast, the same machinery as the emulator's), a 20 deg cone off the box axes to z = 0.3."""
    from emu_backend.pipelines.lightcone import LightconeConfig, lightcone

    spec = LightconeSpec(z_min=0.02, z_max=0.3, n_shells=4, nside=256, cone=Cone(37.0, 23.0, 20.0), particles=False)
    result = lightcone(LightconeConfig(tmp_path, spec, grid=32, backend="2lpt", halofit=False))
    cmp = result.report["convergence"][0]
    assert cmp["n_bins"] >= 5
    # Gaussian cosmic variance of the binned C_ell (f_sky, bin width): chi2 per bin ~ 1; the bins of a cone are
    # correlated by the mask, so allow 3 per bin and no bin beyond 3.5 sigma
    assert cmp["chi2"] / cmp["n_bins"] < 3.0 and cmp["max_abs_pull"] < 3.5, cmp["bins"]
    for s in result.report["shells"]:  # shell counts: mean density x volume, Poisson-like scatter
        assert abs(s["n_particles"] - s["expected"]) < 5 * math.sqrt(s["expected"])


def test_linear_field_file_gives_the_same_lightcone_as_its_noise(tmp_path):
    from emu_backend.ics import InitialConditions
    from emu_backend.pipelines.lightcone import LightconeConfig, lightcone

    ics = InitialConditions.from_noise(8, None, QUIJOTE_FIDUCIAL, 42)
    np.save(tmp_path / "lin.npy", ics.displacement)
    spec = LightconeSpec(z_min=0.02, z_max=0.04, n_shells=1, nside=8, cone=Cone(37, 23, 15))
    a = lightcone(LightconeConfig(tmp_path / "a", spec, grid=8, seed=42, backend="za", halofit=False))
    b = lightcone(LightconeConfig(tmp_path / "b", spec, linear=tmp_path / "lin.npy", box_size=ics.box_size,
                                  backend="za", halofit=False))
    with h5py.File(a.maps) as fa, h5py.File(b.maps) as fb:
        np.testing.assert_array_equal(fa["kappa"][...], fb["kappa"][...])  # same displacement, same particles


def test_full_sky_to_high_redshift_refused_when_the_disk_is_too_small(tmp_path):
    from emu_backend.errors import ResourceError
    from emu_backend.pipelines.lightcone import LightconeConfig, lightcone

    # 0.134 particles per (Mpc/h)^3 to z = 3 over the full sky: ~1e11 particles, ~1e4 GB
    config = LightconeConfig(tmp_path, LightconeSpec(z_max=3.0, nside=8), grid=8, backend="za", halofit=False)
    with pytest.raises(ResourceError, match="maps-only"):
        lightcone(config)
