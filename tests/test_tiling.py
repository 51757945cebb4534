"""Tiled periodic inference: tile-size independence, shift equivariance, batching (narrow random nets:
these are properties of the architecture and the tiling, not of the weights)."""

import numpy as np
import pytest
import torch

from emu_backend.inference import EmuConvention, Emulator, ZdepConvention
from emu_backend.inference.tiling import TilePlan, periodic_read
from emu_backend.nn import StyledVNet


def _box(n, seed=0):
    return np.random.default_rng(seed).normal(0, 4.0, (3, n, n, n)).astype(np.float32)


@pytest.fixture(scope="module")
def zdep_emu():
    torch.manual_seed(0)
    return Emulator(ZdepConvention(StyledVNet(2, width=4)))


def test_periodic_read_matches_modular_indexing():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(2, 5, 7, 6))
    origin, size = (-13, 4, 20), (17, 3, 15)
    idx = [np.arange(o, o + s) % n for o, s, n in zip(origin, size, src.shape[1:])]
    ref = src[:, idx[0]][:, :, idx[1]][:, :, :, idx[2]]  # independent: NumPy fancy indexing
    np.testing.assert_array_equal(periodic_read(src, origin, size), ref)


@pytest.mark.parametrize("shape,tile", [((32, 32, 32), 16), ((20, 20, 20), 8), ((8, 24, 40), 16), ((12, 12, 12), 128)])
def test_plan_covers_every_cell_once(shape, tile):
    count = np.zeros(shape, int)
    for t in TilePlan(shape, tile).tiles:
        assert all(a % 8 == 0 for a in t.anchor) and all(c % 8 == 0 and c >= s for c, s in zip(t.compute_size, t.size))
        sl = tuple(slice(a, a + s) for a, s in zip(t.anchor, t.size))
        count[sl] += 1
    assert (count == 1).all()


def test_tile_size_independence(zdep_emu):
    box = _box(16)
    ref = zdep_emu.predict(box, 0.3, 0.5, tile_size=16)
    for tile in (8, 24):
        p = zdep_emu.predict(box, 0.3, 0.5, tile_size=tile)
        # same arithmetic per output cell; only the convolution blocking may differ: float32 round-off
        # (measured here: bit-identical; 2e-5 of max|v| leaves room for other CPUs' oneDNN blocking)
        np.testing.assert_allclose(p.displacement, ref.displacement, rtol=0, atol=2e-5)
        np.testing.assert_allclose(p.velocity, ref.velocity, rtol=0, atol=2e-5 * np.abs(ref.velocity).max())


def test_box_not_multiple_of_8(zdep_emu):
    box = _box(12, seed=2)
    a = zdep_emu.predict(box, 0.3, 0.0, tile_size=8, velocity=False)  # last tiles: 4 cells computed at 8
    b = zdep_emu.predict(box, 0.3, 0.0, tile_size=16, velocity=False)  # one tile computed at 16, cropped
    np.testing.assert_allclose(a.displacement, b.displacement, rtol=0, atol=2e-5)  # float32 round-off


def test_shift_by_8_cells_shifts_output(zdep_emu):
    box = _box(32, seed=3)
    shift = (8, 16, -8)
    a = zdep_emu.predict(box, 0.25, 1.0, tile_size=16, velocity=False).displacement
    b = zdep_emu.predict(np.roll(box, shift, axis=(1, 2, 3)), 0.25, 1.0, tile_size=16, velocity=False).displacement
    # the network has no padding and 3 stride-2 levels: exactly equivariant to shifts by multiples of 8
    np.testing.assert_allclose(np.roll(a, shift, axis=(1, 2, 3)), b, rtol=0, atol=1e-6)


def test_shift_by_1_cell_is_not_equivariant(zdep_emu):
    """The resampling phase matters (SPEC 8): a 1-cell shift changes the result, so anchors must be fixed."""
    box = _box(16, seed=4)
    a = zdep_emu.predict(box, 0.3, 0.0, tile_size=16, velocity=False).displacement
    b = zdep_emu.predict(np.roll(box, 1, axis=1), 0.3, 0.0, tile_size=16, velocity=False).displacement
    assert np.abs(np.roll(a, 1, axis=1) - b).max() > 1e-3


def test_batched_tiles_equal_single_tiles(zdep_emu):
    box = _box(16, seed=5)
    one = zdep_emu.predict(box, 0.3, [0.0, 2.0], tile_size=8, batch_size=1)
    many = zdep_emu.predict(box, 0.3, [0.0, 2.0], tile_size=8, batch_size=3)
    for p, q in zip(one, many):
        # batched convolutions may block differently: float32 round-off (measured: 4e-7 of max|v|)
        np.testing.assert_allclose(p.displacement, q.displacement, rtol=0, atol=2e-5)
        np.testing.assert_allclose(p.velocity, q.velocity, rtol=0, atol=2e-5 * np.abs(p.velocity).max())


def test_many_redshifts_equal_separate_calls(zdep_emu):
    box = _box(16, seed=6)
    both = zdep_emu.predict(box, 0.3, [0.5, 1.5], tile_size=16)
    for p in both:
        q = zdep_emu.predict(box, 0.3, p.z, tile_size=16)
        np.testing.assert_array_equal(p.displacement, q.displacement)  # identical computation
        np.testing.assert_array_equal(p.velocity, q.velocity)


@pytest.mark.parametrize("style_size", [1, 2])
def test_network_batch_of_two_equals_two_batches_of_one(style_size):
    torch.manual_seed(7)
    net = StyledVNet(style_size, width=4).eval()
    x = torch.randn(2, 3, 104, 104, 104)
    styles = torch.randn(2, style_size)
    with torch.no_grad():
        per_sample = net(x, styles)  # grouped path: each sample its own modulated weights
        shared = net(x, styles[0])  # folded path: one style for the batch
        singles = [net(x[i:i + 1], styles[i]) for i in range(2)]
    # different convolution groupings: float32 round-off only
    torch.testing.assert_close(per_sample[0], singles[0][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(per_sample[1], singles[1][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(shared[0], singles[0][0], rtol=0, atol=1e-5)


def test_output_can_stream_to_memmaps(zdep_emu, tmp_path):
    box = _box(16, seed=8)
    np.save(tmp_path / "in.npy", box)
    src = np.load(tmp_path / "in.npy", mmap_mode="r")
    dis = np.lib.format.open_memmap(tmp_path / "dis.npy", "w+", np.float32, box.shape)
    vel = np.lib.format.open_memmap(tmp_path / "vel.npy", "w+", np.float32, box.shape)
    zdep_emu.predict(src, 0.3, 1.0, tile_size=8, out=[(dis, vel)])
    ref = zdep_emu.predict(box, 0.3, 1.0, tile_size=8)
    np.testing.assert_array_equal(np.asarray(dis), ref.displacement)  # same tiles, same arithmetic
    np.testing.assert_array_equal(np.asarray(vel), ref.velocity)


def test_emu_model_pair_runs_at_z0():
    torch.manual_seed(9)
    emu = Emulator(EmuConvention(StyledVNet(1, width=4), StyledVNet(1, width=4)))
    p = emu.predict(_box(8), 0.3, 0.0, tile_size=8)
    assert p.displacement.shape == p.velocity.shape == (3, 8, 8, 8)
    assert np.isfinite(p.velocity).all()


def test_float64_path():
    import copy

    torch.manual_seed(10)
    net = StyledVNet(2, width=4)
    e32 = Emulator(ZdepConvention(copy.deepcopy(net)), dtype="float32")
    e64 = Emulator(ZdepConvention(net), dtype="float64")
    box = _box(8, seed=11)
    a = e64.predict(box, 0.3, 0.5, tile_size=8)
    b = e32.predict(box, 0.3, 0.5, tile_size=8)
    # float32 vs float64 of the same weights: <= ~1e-5 absolute on O(1-10) Mpc/h outputs
    np.testing.assert_allclose(a.displacement, b.displacement, rtol=0, atol=1e-4)
