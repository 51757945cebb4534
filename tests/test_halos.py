"""FoF halos (halotools pair search), mass function and halo bias (emu_backend.validation.halos)."""

from __future__ import annotations

import numpy as np
import pytest
from emu_backend.validation import find_halos, halo_bias, mass_function
from emu_backend.validation.halos import find_halos_in_snapshot

from emu_backend.datatypes import HaloCatalog
from emu_backend.errors import InputError

BOX = 100.0


def _ball(rng, n, radius):
    """n points uniform in a ball of the given radius, shape (n, 3)."""
    v = rng.standard_normal((n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v * radius * rng.uniform(0, 1, (n, 1)) ** (1 / 3)


def _clump_configuration(seed=0):
    """Compact clumps (diameter 0.6 l: every pair linked) far from each other and from a uniform background
    (no background particle within 3 l of a clump). Returns positions (unwrapped), velocities, true labels
    (-1 background) and the unwrapped clump members for the expected centres."""
    rng = np.random.default_rng(seed)
    sizes = [120, 80, 50, 35, 21]
    centres = np.array([[50.0, 50.0, 50.0], [20.0, 75.0, 30.0], [80.0, 20.0, 70.0], [25.0, 25.0, 80.0],
                        [99.9, 60.0, 0.05]])  # the last straddles the x = L and z = 0 faces
    n_bg = 3000
    n_tot = n_bg + sum(sizes)
    link = 0.2 * BOX / n_tot ** (1 / 3)
    clumps = [c + _ball(rng, s, 0.3 * link) for c, s in zip(centres, sizes)]
    bg = rng.uniform(0, BOX, (4 * n_bg, 3))
    d = bg[:, None, :] - centres[None]
    d -= BOX * np.round(d / BOX)
    bg = bg[np.all(np.linalg.norm(d, axis=2) > 0.3 * link + 3 * link, axis=1)][:n_bg]
    assert bg.shape[0] == n_bg
    pos = np.concatenate(clumps + [bg])
    labels = np.concatenate([np.full(s, i) for i, s in enumerate(sizes)] + [np.full(n_bg, -1)])
    vel_clump = rng.normal(0, 300.0, (len(sizes), 3))
    vel = rng.normal(0, 50.0, pos.shape)
    vel[labels >= 0] += vel_clump[labels[labels >= 0]]
    perm = rng.permutation(pos.shape[0])  # members are not contiguous in the input
    return pos[perm], vel[perm], labels[perm], clumps, link


# -- FoF on a configuration of known membership ---------------------------------------------------
def test_fof_recovers_exactly_the_clumps_with_periodic_centres_and_velocities():
    pytest.importorskip("halotools", reason="halotools (extra 'halotools') is needed for the FoF pair search")
    pos, vel, labels, clumps, link = _clump_configuration()
    cat = find_halos(pos, vel, BOX, particle_mass=2e11, b=0.2, min_particles=20, a=0.8)
    assert cat.n_halos == 5  # background particles are isolated: no group reaches 20 members
    sizes = [c.shape[0] for c in clumps]
    np.testing.assert_array_equal(cat.n_particles, sorted(sizes, reverse=True))
    np.testing.assert_allclose(cat.mass, cat.n_particles * 2e11, rtol=1e-15)
    assert cat.a == 0.8 and cat.z == pytest.approx(0.25)
    for true_label, members in enumerate(clumps):
        in_clump = labels == true_label
        halo = cat.particle_halo[in_clump][0]
        # exact membership: every clump particle in one halo and nothing else in it
        np.testing.assert_array_equal(np.flatnonzero(cat.particle_halo == halo), np.flatnonzero(in_clump))
        # centre of mass of the unwrapped members, wrapped into the box (float64 round-off)
        expected = np.mod(members.mean(axis=0), BOX)
        np.testing.assert_allclose(cat.position[halo], expected, rtol=0, atol=1e-10)
        np.testing.assert_allclose(cat.velocity[halo], vel[in_clump].mean(axis=0), rtol=1e-12)
    assert np.all((cat.position >= 0) & (cat.position < BOX))
    assert np.all(cat.particle_halo[labels < 0] == -1)
    # the straddling clump really straddles: its members wrap to both ends of the box
    wrapped = np.mod(clumps[4], BOX)
    assert wrapped[:, 0].max() > BOX - 1 and wrapped[:, 0].min() < 1


def test_fof_links_by_3d_distance_not_halotools_cylinder():
    halotools = pytest.importorskip("halotools", reason="halotools (extra 'halotools') is needed")
    from halotools.mock_observables import FoFGroups

    rng = np.random.default_rng(1)
    n_bg = 4000
    n_tot = n_bg + 50
    link = 0.2 * BOX / n_tot ** (1 / 3)
    c1 = np.array([40.0, 40.0, 40.0])
    c2 = c1 + np.array([0.85, 0.0, 0.85]) * link  # projected and l.o.s. offsets < l, 3-D offset 1.2 l
    a = c1 + _ball(rng, 25, 0.05 * link)
    b = c2 + _ball(rng, 25, 0.05 * link)
    bg = rng.uniform(0, BOX, (3 * n_bg, 3))
    bg = bg[np.linalg.norm(bg - c1, axis=1) > 5 * link][:n_bg]
    pos = np.concatenate([a, b, bg])
    # halotools' own groups link within the cylinder, so they merge the two clumps (documented behaviour)
    ids = FoFGroups(pos, 0.2, 0.2, period=BOX).group_ids
    assert len(set(ids[:50])) == 1, halotools.__version__
    # spherical FoF: every 3-D separation between the clumps is >= 1.1 l > l: two halos of 25
    cat = find_halos(pos, np.zeros_like(pos), BOX, particle_mass=1.0)
    np.testing.assert_array_equal(cat.n_particles, [25, 25])
    assert set(cat.particle_halo[:25]) != set(cat.particle_halo[25:50])


def test_min_particles_threshold_is_inclusive():
    pytest.importorskip("halotools", reason="halotools (extra 'halotools') is needed")
    pos, vel, labels, clumps, _ = _clump_configuration(seed=2)
    cat = find_halos(pos, vel, BOX, 1.0, min_particles=21)
    assert 21 in cat.n_particles  # the 21-member clump is kept at min_particles = 21 ...
    cat = find_halos(pos, vel, BOX, 1.0, min_particles=22)
    assert cat.n_halos == 4  # ... and dropped at 22


def test_find_halos_in_snapshot_uses_particle_mass_and_a():
    pytest.importorskip("halotools", reason="halotools (extra 'halotools') is needed")
    from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    from emu_backend.datatypes.snapshot import Snapshot

    n, box = 16, 64.0
    rng = np.random.default_rng(3)
    q = np.arange(n) * box / n
    lattice = np.stack(np.meshgrid(q, q, q, indexing="ij"))  # spacing 4 Mpc/h > l = 0.8 Mpc/h: no links
    dis = np.zeros((3, n, n, n))
    target = np.array([30.0, 30.0, 30.0])
    flat = dis.reshape(3, -1)
    ball = _ball(rng, 40, 0.2)
    flat[:, :40] = (target + ball - lattice.reshape(3, -1)[:, :40].T).T  # move 40 particles into one clump
    snap = Snapshot.from_displacement(dis, np.zeros_like(dis), a=0.5, box_size=box, cosmology=QUIJOTE_FIDUCIAL)
    cat = find_halos_in_snapshot(snap)
    np.testing.assert_array_equal(cat.n_particles, [40])
    assert cat.mass[0] == pytest.approx(40 * snap.particle_mass, rel=1e-12)
    assert cat.a == 0.5 and cat.box_size == box
    # snapshot positions are float32: centre of mass to float32 precision at 30 Mpc/h (~2e-6 Mpc/h)
    np.testing.assert_allclose(cat.position[0], target + ball.mean(axis=0), rtol=0, atol=1e-5)


# -- mass function ---------------------------------------------------------------------------
def _catalog(masses, box=BOX, m_p=1e11):
    n = np.rint(np.asarray(masses) / m_p).astype(np.int64)
    return HaloCatalog(mass=n * m_p, position=np.zeros((n.size, 3)), velocity=np.zeros((n.size, 3)),
                       n_particles=n, box_size=box, particle_mass=m_p, linking_length=0.2)


def test_mass_function_counts_equal_direct_histogram():
    rng = np.random.default_rng(4)
    masses = 10 ** rng.uniform(12.3, 15.0, 2000)
    cat = _catalog(masses)
    edges = np.logspace(12.5, 14.5, 9)
    mf = mass_function(cat, edges)
    direct = np.array([np.sum((cat.mass >= lo) & (cat.mass < hi)) for lo, hi in zip(edges[:-1], edges[1:])])
    np.testing.assert_array_equal(mf.counts, direct)  # integer counts: exact
    dlnm = np.log(edges[1:] / edges[:-1])
    np.testing.assert_allclose(mf.dn_dlnm, direct / (BOX**3 * dlnm), rtol=1e-14)
    np.testing.assert_allclose(mf.dn_dlnm_err, np.sqrt(direct) / (BOX**3 * dlnm), rtol=1e-14)
    np.testing.assert_allclose(mf.mass, np.sqrt(edges[1:] * edges[:-1]), rtol=1e-14)
    # default edges start at min_particles * particle_mass and cover the heaviest halo
    mf_default = mass_function(cat)
    assert mf_default.mass_edges[0] == pytest.approx(20 * 1e11)
    assert mf_default.mass_edges[-1] > cat.mass.max()
    assert mf_default.counts.sum() == np.sum(cat.mass >= 20 * 1e11)


def test_mass_function_poisson_errors_match_realisation_scatter():
    # 300 Poisson realisations of a known mass function: the scatter of dn/dlnM across realisations must
    # equal the Poisson error sqrt(<N>)/(V dlnM); with 300 draws the sample sd is known to ~ 1/sqrt(600) = 4%,
    # so 15% is > 3 sigma
    rng = np.random.default_rng(5)
    edges = np.logspace(13.0, 14.0, 6)
    expected_counts = np.array([400.0, 200.0, 100.0, 50.0, 25.0])
    draws, errs = [], []
    for _ in range(300):
        counts = rng.poisson(expected_counts)
        masses = np.concatenate([10 ** rng.uniform(np.log10(lo), np.log10(hi), c)
                                 for lo, hi, c in zip(edges[:-1], edges[1:], counts)])
        mf = mass_function(_catalog(masses, m_p=1e9), edges)
        draws.append(mf.dn_dlnm)
        errs.append(mf.dn_dlnm_err)
    np.testing.assert_allclose(np.std(draws, axis=0, ddof=1), np.mean(errs, axis=0), rtol=0.15)


# -- halo bias -------------------------------------------------------------------------------
def _linear_matter_and_tracers(b_true, seed=6):
    """ZA matter particles (48^3 lattice, 600 Mpc/h, band-limited Gaussian field) and Poisson tracers with
    rate nbar (1 + b delta_L) on a 144^3 grid of cells (uniform within each cell)."""
    rng = np.random.default_rng(seed)
    n, box, fine = 48, 600.0, 144
    kf = 2 * np.pi / box
    kx, kz = np.fft.fftfreq(n, 1.0 / n) * kf, np.fft.rfftfreq(n, 1.0 / n) * kf
    K = np.stack(np.meshgrid(kx, kx, kz, indexing="ij"))
    k2 = (K**2).sum(0)
    pk = np.where((k2 > 0) & (k2 < 0.15**2), 200.0 * (np.sqrt(k2) / 0.1 + 1e-12) ** -1.0, 0.0)  # (Mpc/h)^3
    dk = np.fft.rfftn(rng.standard_normal((n, n, n))) * np.sqrt(pk * n**3 / box**3)
    psik = 1j * K * np.divide(dk, k2, out=np.zeros_like(dk), where=k2 > 0)
    psi = np.stack([np.fft.irfftn(psik[c], s=(n, n, n), axes=(0, 1, 2)) for c in range(3)])
    q = (np.arange(n) + 0.25) * box / n
    matter = (np.stack(np.meshgrid(q, q, q, indexing="ij")) + psi).reshape(3, -1).T
    # delta_L on the fine grid: zero-padded Fourier interpolation (exact for the band-limited field)
    big = np.zeros((fine, fine, fine // 2 + 1), dtype=complex)
    h = n // 2
    idx = np.r_[0:h, fine - h : fine]
    big[np.ix_(idx, idx, np.arange(h + 1))] = dk * (fine / n) ** 3
    delta_fine = np.fft.irfftn(big, s=(fine,) * 3, axes=(0, 1, 2))
    # cell (i, j, k) is centred on the fine mesh point (i, j, k) * H, where delta_fine is sampled (+ offset)
    nbar_cell = 0.4
    counts = rng.poisson(nbar_cell * np.clip(1.0 + b_true * delta_fine, 0.0, None)).ravel()
    cell = box / fine
    centres = np.stack(np.meshgrid(*(np.arange(fine) * cell,) * 3, indexing="ij")).reshape(3, -1).T
    tracers = np.repeat(centres, counts, axis=0) + rng.uniform(-0.5, 0.5, (counts.sum(), 3)) * cell
    # the matter lattice is offset by 1/4 of its spacing from the grid on which delta_L was drawn, so the
    # matter field is delta_L(x - offset): shift the tracers identically
    tracers += 0.25 * box / n
    return matter, np.mod(tracers, box), box, float(np.std(delta_fine))


def test_halo_bias_of_linear_tracer_is_recovered():
    b_true = 2.0
    matter, tracers, box, sigma = _linear_matter_and_tracers(b_true)
    assert b_true * sigma < 0.35  # clipping 1 + b delta at 0 is a > 2.8 sigma event: negligible
    cat = HaloCatalog(mass=np.ones(len(tracers)), position=tracers, velocity=np.zeros_like(tracers),
                      n_particles=np.ones(len(tracers), dtype=np.int64), box_size=box, particle_mass=1.0,
                      linking_length=0.2)
    hb = halo_bias(cat, matter, box, 48, k_max=0.1)
    sel = hb.k < 0.1
    n_pairs = hb.n_modes[sel].sum() / 2
    # statistical error of P_hm / P_mm: tracer shot noise over matter power, averaged over the independent
    # modes (sigma_b = 0.018); 5 sigma plus 0.5% for the suppression by the uniform-in-cell placement (top-hat of
    # 4.2 Mpc/h: 1 - (k H)^2 / 24 = 0.993 at k = 0.1). Interlacing (the default) matters: without it the
    # lattice's aliased images raise P_mm by ~2% and b_linear came out 1.90 (seed 6), 5 sigma low
    sigma_b = np.sqrt(hb.shot_noise / np.average(hb.p_mm[sel], weights=hb.n_modes[sel]) / n_pairs)
    assert abs(hb.b_linear - b_true) < 5 * sigma_b + 0.005 * b_true, (hb.b_linear, sigma_b)
    assert hb.shot_noise == pytest.approx(box**3 / len(tracers))
    # the shot-noise-subtracted auto power gives b^2 P_mm; its noise is (b^2 P + 1/n) / P per independent pair;
    # 5 sigma plus 1% for the squared top-hat suppression
    ratio = np.sum(hb.p_hh[sel] * hb.n_modes[sel]) / np.sum(hb.p_mm[sel] * hb.n_modes[sel])
    p_mean = np.average(hb.p_mm[sel], weights=hb.n_modes[sel])
    sigma_auto = (b_true**2 * p_mean + hb.shot_noise) / p_mean / np.sqrt(n_pairs)
    assert abs(ratio - b_true**2) < 5 * sigma_auto + 0.01 * b_true**2, (ratio, sigma_auto)


def test_halo_bias_bad_input():
    cat = _catalog([1e13, 2e13])
    with pytest.raises(InputError, match="box_size"):
        halo_bias(cat, np.zeros((10, 3)), 2 * BOX, 8)
    empty = _catalog(np.zeros(0))
    with pytest.raises(InputError, match="no halo"):
        halo_bias(empty, np.zeros((10, 3)), BOX, 8)
    with pytest.raises(InputError, match="k_max"):
        halo_bias(cat, np.zeros((10, 3)), BOX, 8, k_max=0.01)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(b=1.5), "linking length"),
        (dict(b=0.0), "linking length"),
        (dict(min_particles=1), "min_particles"),
        (dict(particle_mass=-1.0), "particle_mass"),
        (dict(velocities=np.zeros((3, 3))), "velocities shape"),
        (dict(positions=np.full((10, 3), np.inf)), "finite"),
    ],
)
def test_find_halos_bad_input(kwargs, match):
    args = dict(positions=np.zeros((10, 3)), velocities=np.zeros((10, 3)), box_size=BOX, particle_mass=1.0)
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        find_halos(**args)


def test_validation_import_does_not_import_halotools():
    import subprocess
    import sys

    code = "import sys, emu_backend.validation; assert 'halotools' not in sys.modules, 'halotools imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)  # lazy import: only find_halos needs it


def test_catalog_and_mass_edges_bad_input():
    with pytest.raises(InputError, match="position"):
        HaloCatalog(mass=np.ones(3), position=np.zeros((2, 3)), velocity=np.zeros((3, 3)), n_particles=np.ones(3),
                    box_size=BOX, particle_mass=1.0, linking_length=0.2)
    with pytest.raises(InputError, match="box_size"):
        _catalog([1e13], box=-1.0)
    for edges in ([1e13], [2e13, 1e13], [0.0, 1e13], "abc"):
        with pytest.raises(InputError, match="mass_edges"):
            mass_function(_catalog([1e13]), edges)
