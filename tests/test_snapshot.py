"""The Snapshot dataclass: validation, Lagrangian-grid views, density."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.datatypes import Snapshot
from emu_backend.errors import InputError

BOX = 100.0
N = 8


def _fields(seed=0, n=N, dis_std=3.0):
    rng = np.random.default_rng(seed)
    dis = (rng.standard_normal((3, n, n, n)) * dis_std).astype(np.float32)
    vel = (rng.standard_normal((3, n, n, n)) * 300.0).astype(np.float32)
    return dis, vel


def _snapshot(seed=0, **kw):
    dis, vel = _fields(seed)
    return Snapshot.from_displacement(dis, vel, a=0.5, box_size=BOX, cosmology=QUIJOTE_FIDUCIAL, meta=kw or None)


def test_from_displacement_roundtrip():
    dis, vel = _fields(1)
    snap = Snapshot.from_displacement(dis, vel, 0.5, BOX, QUIJOTE_FIDUCIAL, meta={"seed": 1})
    assert snap.positions.dtype == np.float32 and snap.velocities.dtype == np.float32 and snap.ids.dtype == np.int64
    assert snap.positions.min() >= 0 and snap.positions.max() < BOX
    # positions are float32 values up to L = 100: one rounding of q + dis costs <= half an ulp (3.8e-6)
    np.testing.assert_allclose(snap.displacement_field(), dis, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(snap.velocity_field(), vel)  # exact: stored float32 unchanged
    assert snap.z == pytest.approx(1.0, abs=1e-15)  # 1/0.5 - 1 in float64
    assert snap.meta == {"seed": 1}


def test_ids_and_lagrangian_layout():
    dis = np.zeros((3, 2, 2, 2), np.float32)
    snap = Snapshot.from_displacement(dis, dis, 1.0, 10.0, QUIJOTE_FIDUCIAL)
    # particle id i*4 + j*2 + k sits at (i, j, k) * 5 Mpc/h (exact binary values)
    assert snap.positions[0b110].tolist() == [5.0, 5.0, 0.0]
    assert snap.positions[0b001].tolist() == [0.0, 0.0, 5.0]


def test_wrap_and_minimal_image():
    n = 4
    dis = np.zeros((3, n, n, n), np.float32)
    dis[0, 0, 0, 0] = -1.0  # particle (0,0,0) moves across the lower x face
    dis[1, n - 1, 0, 0] = 30.0  # crosses the upper y face (L = 100)
    dis[2, 1, 1, 1] = -1e-9  # rounds up to exactly L in float32 -> must become 0
    snap = Snapshot.from_displacement(dis, dis, 1.0, BOX, QUIJOTE_FIDUCIAL)
    assert snap.positions.min() >= 0 and snap.positions.max() < BOX
    assert snap.positions[0, 0] == pytest.approx(99.0, abs=1e-5)  # float32 ulp at 100 is 7.6e-6
    back = snap.displacement_field()
    # minimal image recovers the true displacement up to float32 rounding of positions near L
    np.testing.assert_allclose(back, dis, rtol=0, atol=1e-5)


def test_order_independent_views():
    snap = _snapshot(2)
    perm = np.random.default_rng(3).permutation(snap.n_particles)
    shuffled = Snapshot(
        positions=snap.positions[perm],
        velocities=snap.velocities[perm],
        ids=snap.ids[perm],
        a=snap.a,
        box_size=snap.box_size,
        grid=snap.grid,
        cosmology=snap.cosmology,
    )
    # exact: the same float32 values are placed by id, no arithmetic changes
    np.testing.assert_array_equal(shuffled.displacement_field(), snap.displacement_field())
    np.testing.assert_array_equal(shuffled.velocity_field(), snap.velocity_field())


def test_particle_mass_and_frozen():
    snap = _snapshot(4)
    expected = QUIJOTE_FIDUCIAL.particle_mass(BOX, N)
    assert snap.particle_mass == expected  # same function, same arguments
    # rho_crit * Om * L^3 / N, independent route; rho_crit carries 9 significant digits
    assert snap.particle_mass == pytest.approx(2.77536627e11 * 0.3175 * BOX**3 / N**3, rel=1e-12)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.a = 1.0
    with pytest.raises(ValueError):
        snap.positions[0, 0] = 1.0  # arrays are read-only views


def test_density():
    dis = np.zeros((3, N, N, N), np.float32)
    uniform = Snapshot.from_displacement(dis, dis, 1.0, BOX, QUIJOTE_FIDUCIAL)
    delta = uniform.density(N)
    assert delta.shape == (N, N, N)
    # each particle on a mesh point: weight exactly 1, so delta is 0 up to the float32 positions
    np.testing.assert_allclose(delta, 0.0, atol=1e-5)
    clustered = _snapshot(5)
    for window in ("ngp", "cic", "tsc"):
        d = clustered.density(16, window=window)
        # mass conservation: mean overdensity 0 to float64 round-off over 4096 cells
        assert abs(d.mean()) < 1e-12
        assert d.min() >= -1.0 - 1e-12  # densities are non-negative up to round-off


@pytest.mark.parametrize(
    "change, match",
    [
        ({"positions": np.zeros((N**3, 2), np.float32)}, "positions"),
        ({"velocities": np.full((N**3, 3), np.nan, np.float32)}, "NaN"),
        ({"velocities": np.zeros((N**3, 3), np.int32)}, "floating"),
        ({"ids": np.zeros(N**3, np.int64)}, "permutation"),
        ({"ids": np.zeros(N**3, np.float64)}, "integers"),
        ({"grid": 7}, "shape"),
        ({"a": 0.0}, "a"),
        ({"a": 2.0}, "a"),
        ({"box_size": -1.0}, "box_size"),
        ({"cosmology": {"omega_m": 0.3}}, "Cosmology"),
        ({"meta": {"bad": object()}}, "JSON"),
    ],
)
def test_validation(change, match):
    snap = _snapshot(6)
    kwargs = {f.name: getattr(snap, f.name) for f in dataclasses.fields(Snapshot)}
    kwargs.update(change)
    with pytest.raises(InputError, match=match):
        Snapshot(**kwargs)


def test_from_displacement_validation():
    dis, vel = _fields(7)
    with pytest.raises(InputError, match="dis"):
        Snapshot.from_displacement(dis[:, :4], vel[:, :4], 1.0, BOX, QUIJOTE_FIDUCIAL)
    with pytest.raises(InputError, match="vel"):
        Snapshot.from_displacement(dis, vel[:2], 1.0, BOX, QUIJOTE_FIDUCIAL)
    with pytest.raises(InputError, match="n_mesh"):
        _snapshot(7).density(0)


def test_meta_numpy_values_accepted():
    snap = _snapshot(8, run_seed=np.int64(3), shape=np.arange(3))
    assert snap.meta["run_seed"] == 3
