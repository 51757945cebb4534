"""Tests of the halotools adapter (emu_backend.adapters.halotools) against real halotools.

The box is a JaxPM run (the CI reference N-body) of 32^3 particles at the emulators' resolution
(62.5 Mpc/h) to z = 0, whose FoF halos (emu_backend.validation.halos) go to halotools. References:
our own arrays (the columns must round-trip exactly), halotools' documented formulas (Zheng+07
central occupation, the virial overdensity), and a brute-force numpy pair count for the
correlation function. ~40 s on 2 CPU cores, most of it the JaxPM run.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("halotools", reason="halotools not installed: pip install 'emu_backend[halotools]'")

from emu_backend.cosmology import QUIJOTE_FIDUCIAL as COSMO  # noqa: E402
from emu_backend.errors import InputError  # noqa: E402
from emu_backend.ics import InitialConditions
from emu_backend.simulator import simulate  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "adapters" / "halotools.md"
N, SEED = 32, 5


@pytest.fixture(scope="module")
def snap():
    pytest.importorskip("jaxpm", reason="the test box is a JaxPM run: pip install 'emu_backend[jaxpm]'")
    ics = InitialConditions.from_noise(N, None, COSMO, seed=SEED)
    return simulate(ics, COSMO, z=[0.0], backend="jaxpm", mesh_factor=1, rtol=1e-3, atol=1e-3)[0]


@pytest.fixture(scope="module")
def catalog(snap):
    from emu_backend.validation.halos import find_halos_in_snapshot

    cat = find_halos_in_snapshot(snap, b=0.2, min_particles=20)
    assert cat.n_halos >= 10  # a 62.5 Mpc/h box at z = 0 has tens of >= 1.3e13 Msun/h halos
    return cat


@pytest.fixture(scope="module")
def halocat(catalog):
    from emu_backend.adapters.halotools import to_halotools

    return to_halotools(catalog, COSMO)


def test_columns_round_trip_exactly(catalog, halocat, snap):
    from emu_backend.adapters.halotools import from_halotools

    t = halocat.halo_table
    n_h = catalog.n_halos
    np.testing.assert_array_equal(t["halo_id"], np.arange(n_h))
    np.testing.assert_array_equal(t["halo_hostid"], t["halo_id"])
    np.testing.assert_array_equal(t["halo_upid"], -1)
    np.testing.assert_array_equal(t["halo_mvir"], catalog.mass)
    np.testing.assert_array_equal(t["halo_npart"], catalog.n_particles)
    for c, axis in enumerate("xyz"):
        np.testing.assert_array_equal(t[f"halo_{axis}"], catalog.position[:, c])
        np.testing.assert_array_equal(t[f"halo_v{axis}"], catalog.velocity[:, c])
    np.testing.assert_array_equal(halocat.Lbox, [snap.box_size] * 3)
    assert halocat.particle_mass == snap.particle_mass and halocat.redshift == pytest.approx(0.0, abs=1e-12)
    back = from_halotools(halocat)
    for key in ("mass", "position", "velocity", "n_particles"):
        np.testing.assert_array_equal(getattr(back, key), getattr(catalog, key))
    assert (back.box_size, back.particle_mass, back.linking_length, back.min_particles) == (
        catalog.box_size, catalog.particle_mass, catalog.linking_length, catalog.min_particles)


def test_virial_radius_encloses_the_mass_at_the_virial_overdensity(halocat):
    # M = 4/3 pi r^3 Delta_vir(z) rho_m(z) [comoving Msun/h, Mpc/h]: Bryan & Norman (1998)
    # Delta_c = 18 pi^2 + 82 x - 39 x^2 (x = Omega_m(z) - 1) relative to rho_crit, flat, no radiation
    from emu_backend.cosmology.params import RHO_CRIT_MSUN_H_MPC_H3

    t = halocat.halo_table
    om = COSMO.omega_m  # at z = 0
    x = om - 1.0
    delta_c = 18 * np.pi**2 + 82 * x - 39 * x**2
    mass = 4.0 / 3.0 * np.pi * np.asarray(t["halo_rvir"]) ** 3 * delta_c * RHO_CRIT_MSUN_H_MPC_H3
    # halotools' own critical density and G differ from ours in the 4th digit
    np.testing.assert_allclose(mass, t["halo_mvir"], rtol=2e-3)
    assert np.all(np.asarray(t["halo_nfw_conc"]) > 1) and np.all(np.asarray(t["halo_nfw_conc"]) < 30)


def test_zheng07_populates_our_halos(catalog, halocat):
    from halotools.empirical_models import PrebuiltHodModelFactory
    from scipy.special import erf

    model = PrebuiltHodModelFactory("zheng07", threshold=-20, redshift=0.0)
    # halotools populates only halos of > Num_ptcl_requirement particles (default 300): keep all ours
    model.populate_mock(halocat, seed=1, Num_ptcl_requirement=catalog.min_particles - 1)
    g = model.mock.galaxy_table
    central = np.asarray(g["gal_type"]) == "centrals"
    assert central.sum() > 0 and (~central).sum() >= 0
    # every galaxy sits in one of our halos, centrals at its centre of mass
    assert set(np.asarray(g["halo_id"])) <= set(range(catalog.n_halos))
    hid = np.asarray(g["halo_id"][central])
    np.testing.assert_allclose(np.stack([g["x"][central], g["y"][central], g["z"][central]], 1),
                               catalog.position[hid], atol=1e-6)
    # Zheng+07: <N_cen> = (1 + erf((log M - log Mmin) / sigma)) / 2 (halotools' parameters); the
    # number of centrals is a sum of Bernoulli draws: within 5 sigma of its mean
    p = model.param_dict
    mean = 0.5 * (1 + erf((np.log10(catalog.mass) - p["logMmin"]) / p["sigma_logM"]))
    sigma = np.sqrt(np.sum(mean * (1 - mean))) + 1e-12
    assert abs(central.sum() - mean.sum()) <= 5 * sigma + 0.5


def test_tpcf_on_our_catalog_equals_brute_force(catalog, halocat):
    # halotools' tpcf (natural estimator, analytic randoms in the periodic box) on the halotools
    # table equals the same statistic on our arrays, and a brute-force numpy pair count (float64;
    # halotools normalises the analytic RR by N^2 / V, not N (N - 1) / V)
    from halotools.mock_observables import tpcf

    t = halocat.halo_table
    box = catalog.box_size
    rbins = np.array([1.0, 2.0, 4.0, 8.0, 12.0])
    pts_table = np.stack([t["halo_x"], t["halo_y"], t["halo_z"]], axis=1)
    xi_table = tpcf(pts_table, rbins, period=box)
    xi_ours = tpcf(catalog.position, rbins, period=box)
    np.testing.assert_array_equal(xi_table, xi_ours)
    d = catalog.position[:, None, :] - catalog.position[None, :, :]
    d -= box * np.round(d / box)
    r = np.sqrt((d**2).sum(-1))[~np.eye(catalog.n_halos, dtype=bool)]
    dd = np.histogram(r, bins=rbins)[0]  # ordered pairs
    n = catalog.n_halos
    rr = n * n / box**3 * 4.0 / 3.0 * np.pi * np.diff(rbins**3)
    np.testing.assert_allclose(xi_ours, dd / rr - 1.0, rtol=1e-10, atol=1e-12)


def test_snapshot_convenience_with_particles(snap, catalog):
    from emu_backend.adapters.halotools import halo_catalog_from_snapshot

    halocat = halo_catalog_from_snapshot(snap, n_ptcl=12000, seed=3)
    np.testing.assert_array_equal(halocat.halo_table["halo_mvir"], catalog.mass)
    p = halocat.ptcl_table
    assert len(p) == 12000 and np.all(np.diff(np.asarray(p["ptcl_ids"])) > 0)
    ids = np.asarray(p["ptcl_ids"])
    np.testing.assert_array_equal(np.stack([p["x"], p["y"], p["z"]], 1), snap.positions[ids])
    np.testing.assert_array_equal(np.stack([p["vx"], p["vy"], p["vz"]], 1), snap.velocities[ids])


def test_bad_inputs(snap, catalog):
    from emu_backend.adapters.halotools import particle_catalog, to_halotools

    from emu_backend.datatypes.halos import HaloCatalog

    with pytest.raises(InputError, match="HaloCatalog"):
        to_halotools({"mass": [1.0]}, COSMO)
    empty = HaloCatalog(mass=np.zeros(0), position=np.zeros((0, 3)), velocity=np.zeros((0, 3)),
                        n_particles=np.zeros(0, np.int64), box_size=10.0, particle_mass=1e10, linking_length=0.2)
    with pytest.raises(InputError, match="empty"):
        to_halotools(empty, COSMO, redshift=0.0)
    with pytest.raises(InputError, match="redshift"):
        to_halotools(HaloCatalog(**{**_fields(catalog), "a": None}), COSMO)
    with pytest.raises(InputError, match="concentration"):
        to_halotools(catalog, COSMO, concentration=np.ones(3))
    with pytest.raises(InputError, match="n_particles"):
        particle_catalog(snap, 100)


def _fields(cat):
    return {k: getattr(cat, k) for k in ("mass", "position", "velocity", "n_particles", "box_size",
                                         "particle_mass", "linking_length", "min_particles")}


def test_doc_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, f"no python block in {DOC}"
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {})
