"""Displacement / velocity field files (HDF5 and .npz)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from emu_backend.cosmology import PLANCK18
from emu_backend.errors import FileFormatError, InputError
from emu_backend.io.fields import FieldData, read_fields, write_fields

N = 8
BOX = 15.625  # 1000 * 8 / 512 Mpc/h, the training resolution


def _fields(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    dis = rng.standard_normal((3, N, N, N)) * 2  # Mpc/h
    vel = rng.standard_normal((3, N, N, N)) * 200  # km/s
    return dis.astype(dtype), vel.astype(dtype)


@pytest.mark.parametrize("suffix", [".h5", ".hdf5", ".npz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roundtrip(tmp_path, suffix, dtype):
    dis, vel = _fields(dtype)
    meta = {"seed": 42, "backend": "emu_zdep", "nested": {"crop": 128}}
    path = write_fields(tmp_path / f"f{suffix}", dis, vel, box_size=BOX, a=0.25, cosmology=PLANCK18, meta=meta)
    back = read_fields(path)
    # both containers store the arrays verbatim: bitwise equal, dtype preserved
    np.testing.assert_array_equal(back.displacement, dis)
    np.testing.assert_array_equal(back.velocity, vel)
    assert back.displacement.dtype == dtype
    assert back.box_size == BOX and back.a == 0.25 and back.z == 3.0  # exact binary values
    assert back.cosmology == PLANCK18 and back.meta == meta and back.grid == N


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_velocity_optional(tmp_path, suffix):
    dis, _ = _fields()
    back = read_fields(write_fields(tmp_path / f"d{suffix}", dis, box_size=BOX, a=1.0, cosmology=PLANCK18))
    assert back.velocity is None and back.meta == {}
    with pytest.raises(InputError, match="velocity"):
        back.to_snapshot()


def test_hdf5_layout(tmp_path):
    dis, vel = _fields()
    path = write_fields(tmp_path / "f.h5", dis, vel, box_size=BOX, a=0.5, cosmology=PLANCK18)
    with h5py.File(path) as f:
        assert f["displacement"].shape == (3, N, N, N) and f["displacement"].attrs["units"] == "Mpc/h"
        assert f["velocity"].attrs["units"] == "km/s"
        assert f.attrs["box_size"] == BOX and f.attrs["a"] == 0.5 and f.attrs["z"] == 1.0  # exact
        assert '"omega_m": 0.3111' in f.attrs["cosmology"]


def test_to_snapshot(tmp_path):
    dis, vel = _fields(seed=1)
    data = read_fields(write_fields(tmp_path / "f.npz", dis, vel, box_size=BOX, a=0.5, cosmology=PLANCK18))
    snap = data.to_snapshot()
    # float32 positions in a 15.6 Mpc/h box: half an ulp (5e-7) per rounding
    np.testing.assert_allclose(snap.displacement_field(), dis, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(snap.velocity_field(), vel)  # stored float32 values unchanged


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_overwrite_refused(tmp_path, suffix):
    dis, _ = _fields()
    path = write_fields(tmp_path / f"f{suffix}", dis, box_size=BOX, a=1.0, cosmology=PLANCK18)
    with pytest.raises(InputError, match="already exists"):
        write_fields(path, dis, box_size=BOX, a=1.0, cosmology=PLANCK18)
    write_fields(path, dis * 2, box_size=BOX, a=1.0, cosmology=PLANCK18, overwrite=True)
    np.testing.assert_array_equal(read_fields(path).displacement, dis * 2)  # exact: verbatim storage
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"f{suffix}"]  # no temporary files left


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_truncated(tmp_path, suffix):
    dis, vel = _fields()
    path = write_fields(tmp_path / f"f{suffix}", dis, vel, box_size=BOX, a=1.0, cosmology=PLANCK18)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match=path.name):
        read_fields(path)


def test_missing_attribute_and_bad_content(tmp_path):
    dis, vel = _fields()
    path = write_fields(tmp_path / "f.h5", dis, vel, box_size=BOX, a=0.5, cosmology=PLANCK18)
    with h5py.File(path, "a") as f:
        del f.attrs["a"]
    with pytest.raises(FileFormatError, match="'a'"):
        read_fields(path)
    with h5py.File(path, "a") as f:
        f.attrs["a"] = 0.7  # z = 1 stays: inconsistent
    with pytest.raises(FileFormatError, match="inconsistent"):
        read_fields(path)
    with h5py.File(path, "a") as f:
        f.attrs["a"] = 0.5
        del f["velocity"]
        f["velocity"] = np.zeros((3, N, N, 4), np.float32)
    with pytest.raises(FileFormatError, match="velocity"):
        read_fields(path)
    with pytest.raises(FileFormatError, match="not found"):
        read_fields(tmp_path / "absent.npz")


def test_bad_arguments(tmp_path):
    dis, vel = _fields()
    with pytest.raises(InputError, match="suffix"):
        write_fields(tmp_path / "f.txt", dis, box_size=BOX, a=1.0, cosmology=PLANCK18)
    with pytest.raises(InputError, match="displacement"):
        write_fields(tmp_path / "f.h5", dis[:2], box_size=BOX, a=1.0, cosmology=PLANCK18)
    with pytest.raises(InputError, match="NaN"):
        write_fields(tmp_path / "f.h5", dis * np.nan, box_size=BOX, a=1.0, cosmology=PLANCK18)
    with pytest.raises(InputError, match="a ="):
        FieldData(dis, vel, BOX, 0.0, PLANCK18)
    assert not list(tmp_path.iterdir())  # nothing written on refused input


def test_atomic_files_get_umask_permissions(tmp_path):
    import os
    import stat

    from emu_backend.io.atomic import atomic_path

    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "f.txt").st_mode) == 0o644  # not mkstemp's 0600
    assert os.listdir(tmp_path) == ["f.txt"]  # no temporary left behind
