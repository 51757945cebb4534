"""Readers of Quijote files (emu_backend.io.quijote, gadget1, subfind) on a Quijote-format folder built by the tests.

The folder (tests/quijote_fixture.py) is written by independent test-only writers from a 32^3 JaxPM run
and 2LPT initial conditions at z = 127, in file units (kpc/h, u = v / sqrt(a), 1e10 Msun/h, 1-based IDs)
and a shuffled particle order. References: the in-memory arrays the files were written from (exact up
to the float32 storage), Pylians' readgadget/readfof where installed, and our 2LPT kernels for the
displacement recovery. About 30 s on 2 cores (one JaxPM run, shared with test_validate_cli.py).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("hdf5plugin", reason="hdf5plugin not installed: pip install 'emu_backend[quijote]'")
pytest.importorskip("jaxpm", reason="JaxPM not installed: pip install 'emu_backend[jaxpm]'")

from quijote_fixture import (  # noqa: E402
    OTHER_ROW,
    Z_ICS,
    build_quijote_dir,
    shared_quijote_dir,
    write_gadget1,
    write_gadget_hdf5,  # noqa: E402
)

from emu_backend.cosmology.growth import growth_factor  # noqa: E402
from emu_backend.errors import FileFormatError, InputError  # noqa: E402
from emu_backend.ics.lpt import second_order_displacement, second_order_growth_factor  # noqa: E402
from emu_backend.io.quijote import (  # noqa: E402
    QuijoteSimulation,
    latin_hypercube_cosmology,
    linear_displacement_from_ics,
    particles_to_snapshot,
    read_fof_groups,
    read_linear_power,
    read_particles,
)

N = 32


@pytest.fixture(scope="module")
def fx():
    return shared_quijote_dir(n=N)


@pytest.fixture(scope="module")
def sim(fx):
    return QuijoteSimulation.open(fx.root, fx.sim)


def _f32_atol(box_mpc_h: float) -> float:
    """Storage error bound of a position: half a float32 ulp at BoxSize in kpc/h, plus one in Mpc/h."""
    return (box_mpc_h * 1e3 * 2.0**-24) / 1e3 + box_mpc_h * 2.0**-24


# -- initial conditions ---------------------------------------------------------------------------
def test_gadget1_ics_reproduce_the_written_particles(fx, sim):
    ics = sim.read_ics()
    ref = fx.ics_snapshot
    assert ics.grid == N and ics.box_size == pytest.approx(ref.box_size, rel=1e-12)
    assert ics.z == pytest.approx(Z_ICS, rel=1e-12)
    np.testing.assert_array_equal(ics.ids, np.arange(N**3))  # reordered by ID into the Lagrangian grid
    # positions: float32 kpc/h storage, minimum-image difference (a particle may sit at 0 vs L)
    d = np.asarray(ics.positions, np.float64) - ref.positions
    d -= ref.box_size * np.round(d / ref.box_size)
    assert np.abs(d).max() <= _f32_atol(ref.box_size)
    # velocities: u = v / sqrt(a) in float32, times sqrt(a) on reading: float32 relative round-off
    np.testing.assert_allclose(ics.velocities, ref.velocities, rtol=3e-7, atol=1e-6 * np.abs(ref.velocities).max())
    raw = read_particles(sim.ics_prefix)
    assert len(raw.files) == 2
    assert raw.particle_mass == pytest.approx(fx.cosmology.particle_mass(ref.box_size, N), rel=1e-12)


@pytest.mark.parametrize("variant", ["hdf5", "format2_big_endian_long_ids", "single_file"])
def test_other_ic_encodings_read_identically(fx, sim, tmp_path, variant):
    raw = read_particles(sim.ics_prefix)  # file order, file units converted
    pos_kpc = raw.positions.astype(np.float64) * 1e3
    u = raw.velocities.astype(np.float64) / math.sqrt(raw.a)
    kw = dict(a=raw.a, box_kpc=raw.box_size * 1e3, omega_m=raw.omega_m, h=raw.h, mass_1e10=raw.particle_mass / 1e10)
    if variant == "hdf5":
        write_gadget_hdf5(tmp_path / "ics", pos_kpc, u, raw.ids, n_files=3, compress=False, **kw)
    elif variant == "single_file":
        write_gadget1(tmp_path / "ics", pos_kpc, u, raw.ids, n_files=1, **kw)
    else:
        write_gadget1(tmp_path / "ics", pos_kpc, u, raw.ids, n_files=2, order=">", long_ids=True, format2=True, **kw)
    other = read_particles(tmp_path / "ics")
    np.testing.assert_array_equal(other.ids, raw.ids)
    np.testing.assert_allclose(other.positions, raw.positions, rtol=0, atol=0)  # same float32 values round-trip
    np.testing.assert_allclose(other.velocities, raw.velocities, rtol=2e-7)


# -- snapshots and halos --------------------------------------------------------------------------
def test_blosc_snapshot_reproduces_the_jaxpm_run(fx, sim):
    import h5py

    with h5py.File(sim.snapshot_prefix(4).with_name("snap_004.0.hdf5"), "r") as f:
        plist = f["PartType1/Coordinates"].id.get_create_plist()
        assert 32001 in [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]  # really Blosc
    snap = sim.read_snapshot(4)
    truth = fx.truth
    assert snap.a == pytest.approx(truth.a, rel=1e-12) and snap.cosmology.omega_m == fx.cosmology.omega_m
    np.testing.assert_array_equal(snap.ids, np.arange(N**3))
    ref_pos = np.empty_like(truth.positions)
    ref_pos[truth.ids] = truth.positions
    d = np.asarray(snap.positions, np.float64) - ref_pos
    d -= truth.box_size * np.round(d / truth.box_size)
    assert np.abs(d).max() <= _f32_atol(truth.box_size)
    np.testing.assert_allclose(snap.velocity_field(), truth.velocity_field(), rtol=3e-7,
                               atol=1e-6 * np.abs(truth.velocities).max())


def test_fof_tables_reproduce_the_written_catalogue(fx, sim):
    if fx.halos is None or fx.halos.n_halos == 0:
        pytest.skip("no FoF halos in the fixture (halotools missing or a box without halos)")
    truth = sim.read_snapshot(4)
    cat = sim.read_halos(4, truth)
    ref = fx.halos
    order = np.argsort(-ref.mass, kind="stable")
    np.testing.assert_array_equal(cat.n_particles, ref.n_particles[order])
    np.testing.assert_allclose(cat.mass, ref.mass[order], rtol=1e-7)  # float32 in 1e10 Msun/h
    np.testing.assert_allclose(cat.position, ref.position[order], rtol=0, atol=_f32_atol(truth.box_size))
    np.testing.assert_allclose(cat.velocity, ref.velocity[order], rtol=1e-6, atol=1e-4)
    assert cat.particle_mass == pytest.approx(truth.particle_mass) and cat.a == pytest.approx(truth.a)


def test_against_pylians_readgadget_and_readfof(fx, sim):
    readgadget = pytest.importorskip("readgadget", reason="Pylians not installed")
    readfof = pytest.importorskip("readfof", reason="Pylians not installed")
    for prefix in (sim.ics_prefix, sim.snapshot_prefix(4)):
        ours = read_particles(prefix)
        # Pylians returns the file order, positions in kpc/h and velocities times sqrt(a)
        np.testing.assert_allclose(ours.positions, readgadget.read_block(str(prefix), "POS ", [1]) / 1e3, rtol=1e-7)
        np.testing.assert_allclose(ours.velocities, readgadget.read_block(str(prefix), "VEL ", [1]), rtol=1e-6)
        np.testing.assert_array_equal(ours.ids, readgadget.read_block(str(prefix), "ID  ", [1]))
    if fx.halos is not None and fx.halos.n_halos:
        a = fx.truth.a
        fof = readfof.FoF_catalog(str(sim.folder), 4, long_ids=False, swap=False, SFR=False, read_IDs=False)
        ours = read_fof_groups(sim.groups_dir(4), 4, a=a)
        np.testing.assert_array_equal(ours.length, fof.GroupLen)
        np.testing.assert_allclose(ours.mass, fof.GroupMass * 1e10, rtol=1e-7)
        np.testing.assert_allclose(ours.position, fof.GroupPos / 1e3, rtol=1e-7)
        np.testing.assert_allclose(ours.velocity, fof.GroupVel * (1.0 / a), rtol=1e-6)  # docs: v = GroupVel (1+z)


# -- cosmology, seed, P(k) --------------------------------------------------------------------------
def test_latin_hypercube_seed_and_linear_power(fx, sim, tmp_path):
    c = sim.cosmology()
    ref = fx.cosmology
    assert (c.omega_m, c.omega_b, c.h, c.n_s, c.sigma8) == pytest.approx(
        (ref.omega_m, ref.omega_b, ref.h, ref.n_s, ref.sigma8), rel=1e-15)
    other = latin_hypercube_cosmology(fx.root / "latin_hypercube_params.txt", 1)
    assert (other.omega_m, other.omega_b, other.h, other.n_s, other.sigma8) == pytest.approx(OTHER_ROW, rel=1e-15)
    assert sim.seed() == fx.seed
    power = sim.linear_power()
    k = np.array([0.01, 0.1, 1.0])
    from emu_backend.cosmology.linear_power import EisensteinHuPower

    np.testing.assert_allclose(power(k), EisensteinHuPower(ref)(k), rtol=2e-3)  # log-log interpolation, 300 points
    with pytest.raises(InputError, match=r"index into the 2 rows of .* must be an integer in \[0, 1\], got 2"):
        latin_hypercube_cosmology(fx.root / "latin_hypercube_params.txt", 2)
    bad = tmp_path / "latin_hypercube_params.txt"
    bad.write_text("0.3 0.05 0.7 0.96\n")
    with pytest.raises(FileFormatError, match="5 columns"):
        latin_hypercube_cosmology(bad, 0)
    with pytest.raises(FileFormatError, match="does not exist"):
        read_linear_power(tmp_path / "Pk_mm_z=0.000.txt")


# -- the emulator's input from the ICs ---------------------------------------------------------------
def test_linear_displacement_recovers_the_input_field(fx, sim):
    ics = sim.read_ics()
    psi_true = np.asarray(fx.ics.displacement, np.float64)
    rms = float(np.sqrt(np.mean(psi_true**2)))
    psi = linear_displacement_from_ics(ics)
    # bound: float32 kpc/h storage (~4e-6 Mpc/h at L = 62.5 Mpc/h) divided by D(127) ~ 0.01, plus the
    # third-order remainder of the fixed point, (D2/D)^2 |Psi2| ~ 1e-5 |Psi|
    d127 = float(growth_factor(Z_ICS, fx.cosmology.omega_m))
    bound = 2 * _f32_atol(ics.box_size) / d127 + 1e-4 * rms
    assert np.abs(psi - psi_true).max() <= bound
    # without the correction the error is the 2LPT term (D2/D)(127) Psi2, as computed by our LPT kernels
    raw = linear_displacement_from_ics(ics, correct_2lpt=False)
    ratio = float(second_order_growth_factor(Z_ICS, fx.cosmology.omega_m)) / d127
    expected = ratio * second_order_displacement(psi_true, ics.box_size)
    np.testing.assert_allclose(raw - psi_true, expected, rtol=0, atol=bound)
    assert np.abs(expected).max() > 10 * bound  # the correction matters at this tolerance


# -- bad files -----------------------------------------------------------------------------------------
@pytest.fixture()
def copy(fx, tmp_path):
    dst = tmp_path / "lh"
    shutil.copytree(fx.root, dst)
    return dst, fx.sim


def test_missing_and_truncated_ic_files(copy):
    root, i = copy
    ics1 = root / str(i) / "ICs" / "ics.1"
    data = ics1.read_bytes()
    ics1.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match=r"ics\.1.*truncated"):
        QuijoteSimulation.open(root, i).read_ics()
    ics1.write_bytes(data[:-4] + b"\x00\x00\x00\x01")
    with pytest.raises(FileFormatError, match=r"ics\.1.*corrupt record"):
        QuijoteSimulation.open(root, i).read_ics()
    ics1.unlink()
    with pytest.raises(FileFormatError, match=r"ics\.1"):
        QuijoteSimulation.open(root, i).read_ics()
    (root / str(i) / "ICs" / "ics.0").write_bytes(b"not a gadget file at all")
    with pytest.raises(FileFormatError, match=r"ics\.0.*not a Gadget binary"):
        QuijoteSimulation.open(root, i).read_ics()


def test_missing_and_corrupt_snapshot_and_fof_files(copy):
    root, i = copy
    sim = QuijoteSimulation.open(root, i)
    snap1 = root / str(i) / "snapdir_004" / "snap_004.1.hdf5"
    snap1.write_bytes(snap1.read_bytes()[:2000])
    with pytest.raises(FileFormatError, match=r"snap_004\.1\.hdf5"):
        sim.read_snapshot(4)
    snap1.unlink()
    with pytest.raises(FileFormatError, match=r"snap_004\.1\.hdf5"):
        sim.read_snapshot(4)
    with pytest.raises(FileFormatError, match=r"snapdir_003.*does not exist"):
        sim.read_snapshot(3)
    tab = root / str(i) / "groups_004" / "group_tab_004.0"
    if tab.is_file():
        tab.write_bytes(tab.read_bytes()[:-10])
        with pytest.raises(FileFormatError, match=r"group_tab_004\.0.*truncated"):
            read_fof_groups(tab.parent, 4, a=1.0)
    with pytest.raises(FileFormatError, match="does not exist"):
        QuijoteSimulation.open(root, 7)
    (root / "latin_hypercube_params.txt").unlink()
    with pytest.raises(FileFormatError, match="latin_hypercube_params.txt"):
        QuijoteSimulation.open(root, i)


def test_ids_are_labels_placed_by_the_ics_map(fx, sim):
    """IDs are labels: the ICs' positions place them; a snapshot whose IDs are not the ICs' is refused, and a
    late snapshot is not early initial conditions. (Fixture IDs here are 1 + grid index, the proved fast path;
    tests/test_quijote_ids.py covers 2LPTic's glass-tile IDs.)"""
    from dataclasses import replace

    raw = read_particles(sim.ics_prefix)
    ics, lmap = sim.read_ics_with_map()
    assert lmap.in_grid_order and lmap.id_start == 1
    relabelled = particles_to_snapshot(replace(raw, ids=raw.ids + 5), fx.cosmology)  # other labels, same grid
    np.testing.assert_array_equal(relabelled.positions, ics.positions)
    ids = raw.ids.copy()
    ids[0] = ids[1]
    with pytest.raises(FileFormatError, match="IDs repeat"):
        particles_to_snapshot(replace(raw, ids=ids), fx.cosmology)
    snap = read_particles(sim.snapshot_prefix(4))
    with pytest.raises(FileFormatError, match=r"snap_004\.0\.hdf5.*are not IDs of the initial conditions"):
        particles_to_snapshot(replace(snap, ids=snap.ids + 5), fx.cosmology, lagrangian_map=lmap)
    with pytest.raises(InputError, match="not early initial conditions in Lagrangian order"):
        linear_displacement_from_ics(sim.read_snapshot(4, lagrangian_map=lmap))


def test_blosc_without_hdf5plugin_names_the_extra(sim):
    code = ("import sys; sys.modules['hdf5plugin'] = None\n"
            "from emu_backend.io.quijote import read_gadget_hdf5_particles\n"
            "from emu_backend.errors import MissingDependencyError\n"
            "try:\n    read_gadget_hdf5_particles(sys.argv[1])\n"
            "except MissingDependencyError as e:\n    print('MISSING', e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(sim.snapshot_prefix(4))], capture_output=True, text=True,
                         timeout=120)
    assert "MISSING" in out.stdout, out.stderr
    assert "emu_backend[quijote]" in out.stdout and "32001" in out.stdout


def test_builder_without_nbody_gives_a_consistent_folder(tmp_path):
    """The fixture writer itself: a 2LPT stand-in truth, single files, HDF5 ICs (fast path, no JaxPM)."""
    fx = build_quijote_dir(tmp_path / "lh", n=8, sim=1, truth="2lpt", halos=None, ic_format="hdf5", n_files=1)
    sim = QuijoteSimulation.open(fx.root / "1")  # the simulation folder itself: row int(name) of ../params
    assert sim.sim == 1 and sim.cosmology().omega_m == fx.cosmology.omega_m
    assert not sim.has_halos(4) and sim.snapnums() == [4]
    np.testing.assert_allclose(sim.read_snapshot(4).displacement_field(), fx.truth.displacement_field(), atol=1e-5)
