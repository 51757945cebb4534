"""Gadget-style HDF5 snapshots: round trips, layout, multi-file sets, corrupt files."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.datatypes import Snapshot
from emu_backend.errors import FileFormatError, InputError
from emu_backend.io.gadget import read_gadget_hdf5, write_gadget_hdf5
from emu_backend.io.gadget_hdf5 import gadget_file_paths

BOX = 250.0
N = 8
A = 0.5


@pytest.fixture
def snap():
    rng = np.random.default_rng(0)
    dis = (rng.standard_normal((3, N, N, N)) * 5.0).astype(np.float32)
    vel = (rng.standard_normal((3, N, N, N)) * 400.0).astype(np.float32)
    meta = {"backend": "test", "seed": 0, "config": {"crop": 128}, "checkpoint_sha256": "ab" * 32}
    return Snapshot.from_displacement(dis, vel, A, BOX, QUIJOTE_FIDUCIAL, meta=meta)


def _assert_same(back: Snapshot, snap: Snapshot, pos_atol: float):
    np.testing.assert_array_equal(back.ids, snap.ids)
    np.testing.assert_allclose(back.positions, snap.positions, rtol=0, atol=pos_atol)
    # v -> v/sqrt(a) -> *sqrt(a): two float32 roundings, each <= half an ulp (2^-24 relative)
    np.testing.assert_allclose(back.velocities, snap.velocities, rtol=2.5e-7, atol=0)
    assert back.a == snap.a and back.box_size == pytest.approx(snap.box_size, rel=1e-15)  # float64 attrs
    assert back.grid == snap.grid and back.cosmology == snap.cosmology and back.meta == snap.meta


def test_roundtrip_mpc_h(tmp_path, snap):
    (path,) = write_gadget_hdf5(snap, tmp_path / "snap_000.hdf5", length_unit="Mpc/h")
    assert path.name == "snap_000.hdf5"
    back = read_gadget_hdf5(path)
    # Mpc/h: coordinates are written unscaled, so they come back bit for bit
    _assert_same(back, snap, pos_atol=0.0)


def test_roundtrip_kpc_h(tmp_path, snap):
    write_gadget_hdf5(snap, tmp_path / "snap_001", length_unit="kpc/h")
    back = read_gadget_hdf5(tmp_path / "snap_001")
    # x*1000 and /1000 each round to float32: <= one float32 ulp at L = 250 Mpc/h (1.5e-5)
    _assert_same(back, snap, pos_atol=np.spacing(np.float32(BOX)))
    with h5py.File(tmp_path / "snap_001.hdf5") as f:
        assert f["Header"].attrs["BoxSize"] == BOX * 1000  # exact: 250000 is representable
        assert f["Parameters"].attrs["UnitLength_in_cm"] == pytest.approx(3.085678e21, rel=1e-12)  # kpc


def test_multifile_roundtrip_split_in_id_order(tmp_path, snap):
    perm = np.random.default_rng(1).permutation(snap.n_particles)
    shuffled = Snapshot(
        positions=snap.positions[perm], velocities=snap.velocities[perm], ids=snap.ids[perm],
        a=snap.a, box_size=snap.box_size, grid=snap.grid, cosmology=snap.cosmology, meta=snap.meta,
    )
    paths = write_gadget_hdf5(shuffled, tmp_path / "snap_002", n_files=3, length_unit="Mpc/h")
    assert [p.name for p in paths] == [f"snap_002.{i}.hdf5" for i in range(3)]
    counts = []
    start = 0
    for p in paths:
        with h5py.File(p) as f:
            ids = f["PartType1/ParticleIDs"][...]
            counts.append(int(f["Header"].attrs["NumPart_ThisFile"][1]))
            assert f["Header"].attrs["NumFilesPerSnapshot"] == 3
            np.testing.assert_array_equal(ids, np.arange(start, start + len(ids)))  # contiguous id blocks
            start += len(ids)
    assert sum(counts) == N**3 and max(counts) - min(counts) <= 1
    for name in (paths[0], paths[2], tmp_path / "snap_002", tmp_path / "snap_002.hdf5", tmp_path):
        back = read_gadget_hdf5(name)
        _assert_same(back, snap, pos_atol=0.0)  # Mpc/h: exact; reader reorders by id
    assert gadget_file_paths(paths[1]) == paths


def test_plain_h5py_layout(tmp_path, snap):
    (path,) = write_gadget_hdf5(snap, tmp_path / "snap_003")  # default kpc/h
    with h5py.File(path, "r") as f:
        h = f["Header"].attrs
        assert h["Time"] == A and h["Redshift"] == pytest.approx(1.0, abs=1e-15)  # 1/0.5 - 1
        assert list(h["NumPart_ThisFile"]) == [0, N**3, 0, 0, 0, 0]
        assert list(h["NumPart_Total"]) == [0, N**3, 0, 0, 0, 0]
        assert list(h["NumPart_Total_HighWord"]) == [0] * 6
        assert h["NumFilesPerSnapshot"] == 1 and h["LengthUnit"] == "kpc/h"
        # MassTable in 1e10 Msun/h, written from the same float64 value
        assert h["MassTable"][1] * 1e10 == pytest.approx(snap.particle_mass, rel=1e-15)
        assert h["Omega0"] == QUIJOTE_FIDUCIAL.omega_m and h["HubbleParam"] == QUIJOTE_FIDUCIAL.h
        assert h["OmegaLambda"] == pytest.approx(1 - QUIJOTE_FIDUCIAL.omega_m, abs=1e-15)  # flat
        pos = f["PartType1/Coordinates"][...]
        vel = f["PartType1/Velocities"][...]
        ids = f["PartType1/ParticleIDs"][...]
        assert pos.shape == (N**3, 3) and pos.dtype == np.float32
        assert vel.shape == (N**3, 3) and vel.dtype == np.float32 and ids.shape == (N**3,)
        assert pos.min() >= 0 and pos.max() < h["BoxSize"]
        # kpc/h: the file holds x * 1000 rounded to float32 (relative 2^-24)
        np.testing.assert_allclose(pos / 1000, snap.positions, rtol=0, atol=np.spacing(np.float32(BOX)))
        # Gadget's u = v / sqrt(a), one float32 rounding
        np.testing.assert_allclose(vel * math.sqrt(A), snap.velocities, rtol=2.5e-7)
        assert f["Units"].attrs["UnitVelocity_in_cm_per_s"] == 1e5
        assert f["Provenance"].attrs["format"] == "emu_backend/gadget-hdf5"
        assert '"backend": "test"' in f["Provenance"].attrs["meta_json"]


def test_position_rounding_onto_boxsize_is_wrapped(tmp_path):
    # L = 392.528 is not a float32 number; the largest float32 position below it, times 1000,
    # rounds in float32 onto BoxSize = 392528 itself (found by search), which the writer maps to 0
    box = 392.528
    x = np.nextafter(np.float32(box), np.float32(0))
    assert x < box and np.float32(np.float64(x) * 1000) >= box * 1000
    pos = np.zeros((8, 3), np.float32)
    pos[1, 0] = x
    s = Snapshot(pos, np.zeros((8, 3), np.float32), np.arange(8), 1.0, box, 2, QUIJOTE_FIDUCIAL)
    (path,) = write_gadget_hdf5(s, tmp_path / "edge")
    with h5py.File(path) as f:
        coords = f["PartType1/Coordinates"][...]
        assert coords.max() < f["Header"].attrs["BoxSize"]
        assert coords[1, 0] == 0.0  # same point of the periodic box


def test_overwrite_refused(tmp_path, snap):
    write_gadget_hdf5(snap, tmp_path / "snap", n_files=2)
    before = (tmp_path / "snap.1.hdf5").read_bytes()
    with pytest.raises(InputError, match="already exists"):
        write_gadget_hdf5(snap, tmp_path / "snap", n_files=2)
    assert (tmp_path / "snap.1.hdf5").read_bytes() == before
    write_gadget_hdf5(snap, tmp_path / "snap", n_files=2, overwrite=True)
    assert not list(tmp_path.glob("*.part"))  # no temporary files left behind


def test_truncated_file(tmp_path, snap):
    (path,) = write_gadget_hdf5(snap, tmp_path / "snap")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="snap.hdf5"):
        read_gadget_hdf5(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "junk.hdf5"
    path.write_bytes(b"not an hdf5 file" * 10)
    with pytest.raises(FileFormatError, match="cannot be opened"):
        read_gadget_hdf5(path)


def test_missing_attribute(tmp_path, snap):
    (path,) = write_gadget_hdf5(snap, tmp_path / "snap")
    with h5py.File(path, "a") as f:
        del f["Header"].attrs["Time"]
    with pytest.raises(FileFormatError, match="Time"):
        read_gadget_hdf5(path)


def test_count_mismatch(tmp_path, snap):
    (path,) = write_gadget_hdf5(snap, tmp_path / "snap")
    with h5py.File(path, "a") as f:
        f["Header"].attrs["NumPart_Total"] = np.array([0, N**3 + 1, 0, 0, 0, 0], np.uint32)
    with pytest.raises(FileFormatError, match="NumPart_Total"):
        read_gadget_hdf5(path)


def test_wrong_dataset_shape(tmp_path, snap):
    (path,) = write_gadget_hdf5(snap, tmp_path / "snap")
    with h5py.File(path, "a") as f:
        del f["PartType1/Velocities"]
        f["PartType1"].create_dataset("Velocities", data=np.zeros((N**3, 2), np.float32))
    with pytest.raises(FileFormatError, match="Velocities"):
        read_gadget_hdf5(path)


def test_missing_member_and_missing_file(tmp_path, snap):
    paths = write_gadget_hdf5(snap, tmp_path / "snap", n_files=3)
    paths[1].unlink()
    with pytest.raises(FileFormatError, match="missing"):
        read_gadget_hdf5(paths[0])
    with pytest.raises(FileFormatError, match="not found"):
        read_gadget_hdf5(tmp_path / "nothing_here")


def test_foreign_file_without_provenance(tmp_path, snap):
    """A minimal Gadget/Quijote-like file: kpc/h, 1-based ids, no Units/Provenance groups. Its IDs are labels:
    at a = 0.5 nothing proves which grid point each started from, so it is refused (never reordered by ID);
    as early ICs (small displacements) its own positions place the particles, whatever the ID order."""
    order = np.random.default_rng(2).permutation(N**3)
    labels = np.random.default_rng(3).permutation(N**3) + 1  # IDs that are not the grid index

    def write(path, a, positions, velocities):
        with h5py.File(path, "w") as f:
            h = f.create_group("Header").attrs
            h["BoxSize"] = BOX * 1000.0
            h["Time"] = a
            h["NumPart_ThisFile"] = np.array([0, N**3, 0, 0, 0, 0], np.int32)
            h["NumPart_Total"] = np.array([0, N**3, 0, 0, 0, 0], np.uint32)
            h["NumFilesPerSnapshot"] = 1
            h["MassTable"] = np.zeros(6)
            h["Omega0"] = 0.3175
            h["HubbleParam"] = 0.6711
            g = f.create_group("PartType1")
            g["Coordinates"] = (positions[order].astype(np.float64) * 1000).astype(np.float32)
            g["Velocities"] = (velocities[order] / np.sqrt(a)).astype(np.float32)
            g["ParticleIDs"] = labels[order].astype(np.uint32)

    write(tmp_path / "late.hdf5", A, snap.positions, snap.velocities)
    with pytest.raises(FileFormatError, match=r"late\.hdf5.*cannot be placed on the 8\^3 Lagrangian grid.*no ID map"):
        read_gadget_hdf5(tmp_path / "late.hdf5")
    early = Snapshot.from_displacement(0.01 * snap.displacement_field(), snap.velocity_field(), 0.01, BOX,
                                       QUIJOTE_FIDUCIAL)
    write(tmp_path / "early.hdf5", 0.01, early.positions, early.velocities)
    back = read_gadget_hdf5(tmp_path / "early.hdf5")
    np.testing.assert_array_equal(back.ids, np.arange(N**3))
    # kpc/h default unit assumed: one float32 ulp at L from the *1000 and /1000 roundings
    np.testing.assert_allclose(back.positions, early.positions, rtol=0, atol=np.spacing(np.float32(BOX)))
    assert back.cosmology.omega_m == 0.3175 and back.meta == {}


def test_bad_arguments(tmp_path, snap):
    with pytest.raises(InputError, match="length_unit"):
        write_gadget_hdf5(snap, tmp_path / "s", length_unit="Gpc/h")
    with pytest.raises(InputError, match="n_files"):
        write_gadget_hdf5(snap, tmp_path / "s", n_files=0)


def test_non_scalar_header_value(tmp_path, snap):
    (path,) = write_gadget_hdf5(snap, tmp_path / "snap")
    with h5py.File(path, "a") as f:
        f["Header"].attrs["Time"] = np.array([0.5, 0.5])
    with pytest.raises(FileFormatError, match="Time"):
        read_gadget_hdf5(path)
