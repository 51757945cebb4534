"""Quijote's particle IDs: the ID -> Lagrangian grid map of the initial conditions, used for ICs, snapshots and halos.

The download is written by tests/_quijote_fixtures.py in the real conventions (2LPTic's glass-tile IDs with
T = 2 tiles per side, slab-split Gadget-1 or Blosc HDF5 ICs with shuffled files, a lossy-compressed snapshot in
Morton order, FoF tables with member IDs) from a known truth; the expected arrays are the truth, never a
reader's inverse. Where Pylians is installed, its readgadget/readfof read the same files, and Quijote's own
recipe (sort the IC particles by ID, round x / L n) applied to Pylians' arrays orders the snapshot as we do.
About 10 s on 2 cores.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pytest

pytest.importorskip("hdf5plugin", reason="hdf5plugin not installed: pip install 'emu_backend[quijote]'")

from _quijote_fixtures import (  # noqa: E402  (tests/_quijote_fixtures.py)
    SNAPNUM,
    TRUNC_POS_BITS,
    TRUNC_VEL_BITS,
    Z_ICS,
    build_download,
)

from emu_backend.cosmology.growth import growth_factor  # noqa: E402
from emu_backend.errors import FileFormatError, InputError  # noqa: E402
from emu_backend.io.gadget_hdf5 import read_gadget_hdf5_particles  # noqa: E402
from emu_backend.io.lagrangian_map import lagrangian_index  # noqa: E402
from emu_backend.io.quijote import (  # noqa: E402
    QuijoteSimulation,
    lagrangian_map_from_ics,
    linear_displacement_from_ics,
    particles_to_snapshot,
    read_fof_groups,
    read_particles,
)

N = 16


@pytest.fixture(scope="module", params=["gadget1", "hdf5"])
def dl(request, tmp_path_factory):
    n_ic_files = 2 if request.param == "gadget1" else 4
    return build_download(tmp_path_factory.mktemp(request.param) / "DOWNLOAD", n=N, ic_format=request.param,
                          n_ic_files=n_ic_files)


@pytest.fixture(scope="module")
def sim(dl):
    return QuijoteSimulation.open(dl.root / "Snapshots" / "latin_hypercube", 0)


def _min_image(d, box):
    return d - box * np.round(d / box)


def _storage(box: float) -> float:
    """Position storage bound [Mpc/h]: one float32 ulp at BoxSize in kpc/h, plus one at L in Mpc/h."""
    return (np.spacing(np.float32(box * 1e3)) / 1e3) + float(np.spacing(np.float32(box)))


# -- the fixture really is in the 2LPTic convention ---------------------------------------------------
def test_fixture_ids_are_glass_tile_labels_not_grid_indices(dl, sim):
    g = N // 2
    assert sorted(dl.ids.tolist()) == list(range(1, N**3 + 1))
    assert np.count_nonzero(dl.ids.astype(np.int64) - 1 == np.arange(N**3)) < N**3 // 100  # not grid order
    tile = (dl.ids.astype(np.int64) - 1) // g**3  # the tile of a grid point is its corner / G
    i, j, k = np.unravel_index(np.arange(N**3), (N, N, N))
    np.testing.assert_array_equal(tile, ((i // g) * 2 + j // g) * 2 + k // g)
    for prefix in (sim.ics_prefix, sim.snapshot_prefix(SNAPNUM)):
        raw = read_particles(prefix)
        assert len(raw.files) >= 2 and np.any(np.diff(raw.ids.astype(np.int64)) < 0)  # not sorted inside files


# -- initial conditions and the linear displacement ---------------------------------------------------
def test_ic_map_is_the_constructed_grid_assignment(dl, sim):
    ics, lmap = sim.read_ics_with_map()
    assert not lmap.in_grid_order and "permutation of the 16^3 grid" in lmap.proof
    np.testing.assert_array_equal(lagrangian_index(dl.ids, lmap, "truth"), np.arange(N**3))
    d = _min_image(np.asarray(ics.positions, np.float64) - dl.ics_pos, dl.box)
    assert np.abs(d).max() <= _storage(dl.box)
    # u = v / sqrt(a) stored in float32, times sqrt(a) on reading: two float32 roundings
    np.testing.assert_allclose(ics.velocities, dl.ics_vel, rtol=3e-7, atol=1e-6 * np.abs(dl.ics_vel).max())
    assert ics.meta["lagrangian_map"] == lmap.proof and ics.z == pytest.approx(Z_ICS, rel=1e-12)


def test_linear_displacement_equals_the_za_field(dl, sim):
    ics = sim.read_ics()
    d127 = float(growth_factor(Z_ICS, dl.cosmology.omega_m))
    # tolerance: float32 kpc/h storage of the IC positions divided by D(127) (2e-4 Mpc/h here), plus 1e-4 of
    # the rms for the third-order remainder of the 2LPT fixed point; the fixture's own 2LPT has the
    # package's discretisation (spectral, Nyquist planes dropped), so nothing else separates them
    bound = 2 * _storage(dl.box) / d127 + 1e-4 * float(np.sqrt(np.mean(dl.psi1**2)))
    psi = linear_displacement_from_ics(ics)
    assert np.abs(psi - dl.psi1).max() <= bound <= 0.05
    # without the 2LPT correction the error is the 2LPT residue (D2/D)(127) Psi2, ~0.05 Mpc/h at most
    raw = linear_displacement_from_ics(ics, correct_2lpt=False)
    om_z = dl.cosmology.omega_m * 128**3 / (dl.cosmology.omega_m * 128**3 + 1 - dl.cosmology.omega_m)
    residue = -3.0 / 7.0 * d127 * om_z ** (-1.0 / 143.0) * dl.psi2
    np.testing.assert_allclose(raw - dl.psi1, residue, rtol=0, atol=bound)
    assert 10 * bound < np.abs(residue).max() <= 0.1


# -- the snapshot -------------------------------------------------------------------------------------
def test_snapshot_in_lagrangian_order_equals_the_truth(dl, sim):
    with h5py.File(sim.snapshot_prefix(SNAPNUM).with_name("snap_004.0.hdf5"), "r") as f:
        plist = f["PartType1/Coordinates"].id.get_create_plist()
        assert 32001 in [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]  # Blosc
        low = f["PartType1/Coordinates"][...].view(np.uint32) & np.uint32((1 << TRUNC_POS_BITS) - 1)
        assert not low.any()  # the low mantissa bits are zeroed, as in Quijote
    snap = sim.read_snapshot(SNAPNUM)
    np.testing.assert_array_equal(snap.ids, np.arange(N**3))
    # compression tolerance: zeroing B low bits of a float32 x loses < |x| 2^(B - 23); plus float32 round-off
    d = _min_image(np.asarray(snap.positions, np.float64) - dl.snap_pos, dl.box)
    np.testing.assert_array_less(np.abs(d), dl.snap_pos * 2.0 ** (TRUNC_POS_BITS - 23) + _storage(dl.box))
    dv = np.abs(np.asarray(snap.velocities, np.float64) - dl.snap_vel)
    np.testing.assert_array_less(dv, np.abs(dl.snap_vel) * 2.0 ** (TRUNC_VEL_BITS - 23) * 1.01 + 1e-4)
    assert "permutation" in snap.meta["lagrangian_map"] and snap.meta["snapnum"] == SNAPNUM


def test_halos_equal_the_catalogue(dl, sim):
    ics, lmap = sim.read_ics_with_map()
    snap = sim.read_snapshot(SNAPNUM, lagrangian_map=lmap)
    assert sim.groups_dir(SNAPNUM) == dl.halos("FoF_id") / "groups_004"  # found beside Snapshots, not copied
    cat = sim.read_halos(SNAPNUM, snap, lagrangian_map=lmap)
    sizes = np.array([len(m) for m in dl.halo_members])
    expected = np.float32(sizes * dl.particle_mass / 1e10).astype(np.float64) * 1e10  # GroupMass as stored
    order = np.argsort(-expected, kind="stable")
    np.testing.assert_array_equal(cat.mass, expected[order])
    np.testing.assert_array_equal(cat.n_particles, sizes[order])
    np.testing.assert_allclose(cat.mass, cat.n_particles * dl.particle_mass, rtol=1e-7)
    for h, g in enumerate(order):  # members, through the ID map, are the collapsed Lagrangian patches
        assert set(np.flatnonzero(cat.particle_halo == h)) == set(dl.halo_members[g].tolist())
    single = QuijoteSimulation.open(dl.root, 0, halos=dl.halos("FoF")).read_halos(SNAPNUM, snap)
    np.testing.assert_array_equal(single.mass, cat.mass)
    assert single.particle_halo is None  # Halos/FoF has no member IDs


def test_pylians_reads_the_same_particles_and_halos(dl, sim):
    readgadget = pytest.importorskip("readgadget", reason="Pylians not installed")
    readfof = pytest.importorskip("readfof", reason="Pylians not installed")
    for prefix in (sim.ics_prefix, sim.snapshot_prefix(SNAPNUM)):
        ours = read_particles(prefix)
        np.testing.assert_allclose(ours.positions, readgadget.read_block(str(prefix), "POS ", [1]) / 1e3, rtol=1e-7)
        np.testing.assert_allclose(ours.velocities, readgadget.read_block(str(prefix), "VEL ", [1]), rtol=1e-6)
        np.testing.assert_array_equal(ours.ids, readgadget.read_block(str(prefix), "ID  ", [1]))
    # Quijote's own recipe on Pylians' arrays: sort the IC particles by ID, grid point = round(x / L n) mod n
    ic_pos = readgadget.read_block(str(sim.ics_prefix), "POS ", [1]).astype(np.float64) / 1e3
    ic_ids = readgadget.read_block(str(sim.ics_prefix), "ID  ", [1]).astype(np.int64)
    q = np.mod(np.rint(ic_pos[np.argsort(ic_ids)] / dl.box * N).astype(np.int64), N)
    grid_of_id = (q[:, 0] * N + q[:, 1]) * N + q[:, 2]  # ID i + 1 -> grid index
    pos = readgadget.read_block(str(sim.snapshot_prefix(SNAPNUM)), "POS ", [1]) / 1e3
    ids = readgadget.read_block(str(sim.snapshot_prefix(SNAPNUM)), "ID  ", [1]).astype(np.int64)
    recipe = np.empty_like(pos)
    recipe[grid_of_id[ids - 1]] = pos
    np.testing.assert_allclose(sim.read_snapshot(SNAPNUM).positions, recipe, rtol=1e-7)
    fof = readfof.FoF_catalog(str(dl.halos("FoF_id")), SNAPNUM, long_ids=False, swap=False, SFR=False, read_IDs=True)
    ours = read_fof_groups(dl.halos("FoF_id") / "groups_004", SNAPNUM, a=1.0)
    np.testing.assert_array_equal(ours.member_ids, fof.GroupIDs)
    np.testing.assert_array_equal(ours.length, fof.GroupLen)
    np.testing.assert_array_equal(ours.offset, fof.GroupOffset)
    np.testing.assert_allclose(ours.mass, fof.GroupMass * 1e10, rtol=1e-7)
    np.testing.assert_allclose(ours.position, fof.GroupPos / 1e3, rtol=1e-7)


# -- displacements beyond half a cell, and what cannot be mapped ------------------------------------------
def test_velocities_place_particles_displaced_beyond_half_a_cell(tmp_path):
    # a box-sized flow of 0.7 cells at z = 127 on top of the field, as in the low-Omega_m corner at 1024^3
    big = build_download(tmp_path / "big", n=N, bulk_cells=0.7)
    sim = QuijoteSimulation.open(big.root, 0)
    d = _min_image(big.ics_pos - np.stack(np.unravel_index(np.arange(N**3), (N,) * 3), 1) * big.box / N, big.box)
    assert np.abs(d).max() > 0.6 * big.box / N
    lmap = sim.lagrangian_map()
    assert "minus v / (a H f)" in lmap.proof
    np.testing.assert_array_equal(lagrangian_index(big.ids, lmap, "truth"), np.arange(N**3))
    still = build_download(tmp_path / "still", n=N, bulk_cells=0.7, zero_ic_velocities=True)
    with pytest.raises(FileFormatError, match=r"ics\.0.*cannot be placed on the 16\^3 Lagrangian grid: from the "
                                              r"positions: .*not a permutation.*from the positions minus v") as info:
        QuijoteSimulation.open(still.root, 0).read_ics()
    assert "check" not in str(info.value) and "False" not in str(info.value)  # no advice to switch checks off


def test_ics_that_are_a_glass_are_refused(dl, sim):
    raw = read_particles(sim.ics_prefix)
    glass = np.random.default_rng(1).uniform(0, dl.box, raw.positions.shape).astype(np.float32)
    with pytest.raises(FileFormatError, match=r"ics\.0.*grid points get two or more particles"):
        lagrangian_map_from_ics(replace(raw, positions=glass))
    with pytest.raises(FileFormatError, match="IDs repeat"):
        lagrangian_map_from_ics(replace(raw, ids=np.where(raw.ids == 7, 8, raw.ids).astype(np.uint64)))
    # the whole box moved by 0.7 cells: every particle rounds to its neighbour's point, a consistent relabelling
    moved = replace(raw, positions=(raw.positions + 0.7 * dl.box / N).astype(np.float32))
    with pytest.raises(FileFormatError, match=r"from the positions: the mean displacement is \(-0\.3"):
        lagrangian_map_from_ics(moved)


def test_snapshot_ids_that_cannot_be_mapped_are_an_error(dl, sim, tmp_path):
    lmap = sim.lagrangian_map()
    particles = read_gadget_hdf5_particles(sim.snapshot_prefix(SNAPNUM))
    with pytest.raises(FileFormatError, match=r"snap_004\.0\.hdf5.*4096 particle IDs .*not IDs of the initial "
                                              r"conditions .*ics\.0"):
        particles_to_snapshot(replace(particles, ids=particles.ids + N**3), lagrangian_map=lmap)
    ids = particles.ids.copy()
    ids[5] = ids[6]
    with pytest.raises(FileFormatError, match=r"snap_004\.0\.hdf5.*IDs repeat"):
        particles_to_snapshot(replace(particles, ids=ids), lagrangian_map=lmap)
    # without the ICs' map a z = 0 snapshot cannot be ordered: an error, not a reordering by ID
    with pytest.raises(FileFormatError, match=r"snap_004\.0\.hdf5.*cannot be placed.*no ID map") as info:
        particles_to_snapshot(particles, dl.cosmology)
    assert "check" not in str(info.value)
    with pytest.raises(InputError, match="id_base"):
        particles_to_snapshot(particles, dl.cosmology, id_base=1)
    # a snapshot of another simulation (other IDs) in place of this one's, read by the simulation: refused
    other = build_download(tmp_path / "other", n=8)
    broken = tmp_path / "broken"
    shutil.copytree(dl.root, broken)
    target = broken / "Snapshots" / "latin_hypercube" / "0" / "snapdir_004"
    shutil.rmtree(target)
    shutil.copytree(other.folder / "snapdir_004", target)
    with pytest.raises(FileFormatError, match=r"snap_004\.0\.hdf5.*512 particles, but the initial conditions"):
        QuijoteSimulation.open(broken, 0).read_snapshot(SNAPNUM)


def test_fof_members_that_are_not_the_simulations_are_refused(dl, sim, tmp_path):
    lmap = sim.lagrangian_map()
    folder = tmp_path / "groups_004"
    shutil.copytree(dl.halos("FoF_id") / "groups_004", folder)
    path = folder / "group_ids_004.1"
    data = bytearray(path.read_bytes())
    data[28:32] = np.array([N**3 + 5], "<u4").tobytes()  # the first member ID of file 1: no such particle
    path.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match=r"FoF member IDs .*groups_004.*1 particle IDs \(e\.g\. 4101\) are not"):
        read_fof_groups(folder, SNAPNUM, a=1.0, lagrangian_map=lmap)
    path.write_bytes(bytes(data[:-3]))
    with pytest.raises(FileFormatError, match=r"group_ids_004\.1.*corrupt or truncated"):
        read_fof_groups(folder, SNAPNUM, a=1.0)


def test_grid_order_is_a_fast_path_only_where_proved(tmp_path):
    """IDs equal to 1 + grid index (as in an unshuffled 2LPTic grid run) are recognised, after the same checks."""
    dl = build_download(tmp_path / "d", n=8, tiles=1, seed=3)
    sim = QuijoteSimulation.open(dl.root, 0)
    raw = read_particles(sim.ics_prefix)
    grid_ids = (lagrangian_index(raw.ids, sim.lagrangian_map(), "ics") + 1).astype(np.uint64)  # 1 + grid index
    lmap = lagrangian_map_from_ics(replace(raw, ids=grid_ids))
    assert lmap.in_grid_order and lmap.id_start == 1
    shifted = replace(raw, ids=grid_ids, positions=np.roll(raw.positions, 1, axis=0))  # IDs no longer match
    assert not lagrangian_map_from_ics(shifted).in_grid_order
    ics = particles_to_snapshot(replace(raw, ids=grid_ids), lagrangian_map=lmap)
    assert math.isclose(ics.a, 1 / 128) and np.array_equal(ics.ids, np.arange(8**3))
