"""Inputs of issue #20 that must be accepted, and the properties of their refusals beyond the bad-input
table (tests/_resource_inputs.py): tensors and devices, caller-supplied output arrays, outputs that
overflow, NumPy scalars, compressed inputs, Gadget header times, output-time and box-size ranges, and
one training crop in memory at a time.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import weakref

import h5py
import numpy as np
import pytest
import torch
from _training_helpers import write_tiny_samples

from emu_backend.cosmology import QUIJOTE_FIDUCIAL, Cosmology
from emu_backend.datatypes import Snapshot
from emu_backend.errors import ComputationError, FileFormatError, InputError
from emu_backend.ics import InitialConditions
from emu_backend.inference import Emulator, ZdepConvention
from emu_backend.inference.streaming import predict_to_file
from emu_backend.io.gadget import read_gadget_hdf5, write_gadget_hdf5
from emu_backend.nn import StyledVNet
from emu_backend.pipelines.run_config import config_from_mapping
from emu_backend.simulator import simulate

CELL = 1000.0 / 512


@pytest.fixture(scope="module")
def emu():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Emulator(ZdepConvention(StyledVNet(2, width=2)))


@pytest.fixture(scope="module")
def field():
    return np.random.default_rng(1).normal(0.0, 3.0, (3, 16, 8, 8)).astype(np.float32)  # two tiles of 8


# -- tensors and devices ---------------------------------------------------------------------------------
def test_cpu_tensors_give_the_array_result(emu, field):
    ref = emu.predict(field, 0.3, 0.5, tile_size=8)
    for tensor in (torch.from_numpy(field), torch.from_numpy(field).requires_grad_(True),
                   torch.from_numpy(field.astype(np.float64))):
        got = emu.predict(tensor, 0.3, 0.5, tile_size=8)
        assert np.array_equal(got.displacement, ref.displacement) and np.array_equal(got.velocity, ref.velocity)
    out = [(np.empty_like(field), None)]
    for _ in emu.predict_batches(torch.from_numpy(field), 0.3, 0.5, out, velocity=False, tile_size=8):
        pass
    assert np.array_equal(out[0][0], ref.displacement)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_gives_the_array_result(emu, field):
    ref = emu.predict(field, 0.3, 0.5, tile_size=8)
    got = emu.predict(torch.from_numpy(field).cuda(), 0.3, 0.5, tile_size=8)
    assert np.array_equal(got.displacement, ref.displacement)


def test_meta_device_is_refused_before_the_model_moves(emu, field):
    with pytest.raises(InputError, match="'meta' holds shapes but no values"):
        Emulator(emu.model, device="meta")
    assert all(p.device.type == "cpu" for p in emu.model.net.parameters())
    assert np.isfinite(emu.predict(field[:, :8, :8, :8], 0.3, 0.0, tile_size=8, velocity=False).displacement).all()


# -- caller-supplied outputs -------------------------------------------------------------------------------
def test_valid_destinations_are_accepted(emu, field, tmp_path):
    ref = emu.predict(field, 0.3, [0.0, 1.0], tile_size=8)
    big = np.zeros((4,) + field.shape, np.float32)  # slices of one array: distinct memory
    maps = [np.lib.format.open_memmap(tmp_path / f"{k}.npy", "w+", np.float32, field.shape) for k in "ab"]
    with h5py.File(tmp_path / "out.h5", "w") as f:
        ds = [f.create_dataset(k, field.shape, np.float32) for k in "cd"]
        emu.predict(field, 0.3, [0.0, 1.0], tile_size=8, out=[(big[0], big[1]), (maps[0], maps[1])])
        emu.predict(field, 0.3, [0.0, 1.0], tile_size=8, out=[(ds[0], ds[1]), (big[2], big[3])])
        got = [(big[0], big[1]), (maps[0], maps[1]), (ds[0][...], ds[1][...]), (big[2], big[3])]
    for (d, v), r in zip(got, [ref[0], ref[1], ref[0], ref[1]]):
        assert np.array_equal(d, r.displacement) and np.array_equal(v, r.velocity)


def test_destinations_that_would_lose_data_are_refused(emu, field, tmp_path):
    a, b = np.zeros_like(field), np.zeros_like(field)
    with pytest.raises(InputError, match=r"out\[0\] displacement and out\[1\] displacement share memory"):
        emu.predict(field, 0.3, [0.0, 1.0], tile_size=8, out=[(a, b), (a[...], np.zeros_like(field))])
    with pytest.raises(InputError, match="shares memory with the input"):  # a reversed view of the input
        emu.predict(a, 0.3, 0.0, tile_size=8, velocity=False, out=[(a[:, :, :, ::-1], None)])
    np.save(tmp_path / "lin.npy", field)
    src = np.load(tmp_path / "lin.npy", mmap_mode="r")
    dst = np.load(tmp_path / "lin.npy", mmap_mode="r+")  # the input's file, mapped again
    with pytest.raises(InputError, match="shares memory with the input"):
        emu.predict(src, 0.3, 0.0, tile_size=8, velocity=False, out=[(dst, None)])
    with h5py.File(tmp_path / "ro.h5", "w") as f:
        f.create_dataset("d", field.shape, np.float32)
    with h5py.File(tmp_path / "ro.h5", "r") as f:
        with pytest.raises(InputError, match=r"out\[0\] displacement is read-only"):
            emu.predict(field, 0.3, 0.0, tile_size=8, velocity=False, out=[(f["d"], None)])
    with pytest.raises(InputError, match="got dtype complex64"):
        emu.predict(field, 0.3, 0.0, tile_size=8, velocity=False, out=[(field.astype(np.complex64), None)])
    assert not a.any()  # nothing was written before the refusal


# -- finite but absurd inputs ---------------------------------------------------------------------------------
def test_a_streamed_run_that_overflows_names_the_tile_and_claims_nothing(emu, tmp_path):
    np.save(tmp_path / "lin.npy", np.full((3, 8, 8, 8), 3e38, np.float32))
    with pytest.raises(ComputationError, match=r"not finite in tile 0 .*3e\+38 Mpc/h"):
        predict_to_file(emu, tmp_path / "lin.npy", tmp_path / "out.h5", 0.3, 0.0, tile_size=8)
    assert not (tmp_path / "out.h5").exists()
    with h5py.File(tmp_path / "out.h5.partial", "r") as f:
        assert int(f.attrs["next_tile"]) == 0 and not f.attrs["complete"]


# -- numbers, ranges, headers, configs -----------------------------------------------------------------------
def test_numpy_scalars_are_the_numbers_they_print_as(emu, tmp_path):
    assert Cosmology(omega_m=np.float32(0.3)).omega_m == 0.3
    assert Cosmology(omega_m=np.array(0.3), sigma8=np.float64(0.8)).omega_m == 0.3
    np.save(tmp_path / "lin.npy", np.zeros((3, 8, 8, 8), np.float32))
    [path] = predict_to_file(emu, tmp_path / "lin.npy", tmp_path / "o.h5", 0.3, 0.0, tile_size=8, velocity=False,
                             cosmology=Cosmology(omega_m=np.float32(0.3)))
    assert path.exists()


def test_output_times_and_box_sizes_at_their_limits():
    ics = InitialConditions.from_noise(8, None, QUIJOTE_FIDUCIAL, seed=1)
    [snap] = simulate(ics, QUIJOTE_FIDUCIAL, z=1000.0, backend="za")
    assert np.isfinite(snap.velocities).all()
    simulate(ics, QUIJOTE_FIDUCIAL, a=1 / 1001, backend="za")
    with pytest.raises(InputError, match=r"redshift z = 1001\.0 is before the earliest output time z = 1000"):
        simulate(ics, QUIJOTE_FIDUCIAL, z=1001.0, backend="za")
    for box in (1e-3, 1e6):
        assert np.isfinite(InitialConditions.from_noise(8, box, QUIJOTE_FIDUCIAL, seed=1).displacement).all()
    with pytest.raises(InputError, match=r"box_size \[Mpc/h\] = 2000000\.0 is outside the range"):
        InitialConditions.from_noise(8, 2e6, QUIJOTE_FIDUCIAL, seed=1)


def test_gadget_header_time_and_redshift(tmp_path):
    rng = np.random.default_rng(0)
    snap = Snapshot.from_displacement(rng.normal(0, 0.5, (3, 2, 2, 2)), rng.normal(0, 50, (3, 2, 2, 2)), 1 / 128,
                                      2 * CELL, QUIJOTE_FIDUCIAL)
    [path] = write_gadget_hdf5(snap, tmp_path / "snap_000")
    assert read_gadget_hdf5(path).a == 1 / 128  # the writer's Redshift = 127 agrees
    with h5py.File(path, "r+") as f:
        f["Header"].attrs["Redshift"] = np.float32(127.0)  # a float32 header
    assert read_gadget_hdf5(path).a == 1 / 128
    with h5py.File(path, "r+") as f:
        del f["Header"].attrs["Redshift"]  # no Redshift: Time alone
    assert read_gadget_hdf5(path).a == 1 / 128
    with h5py.File(path, "r+") as f:
        f["Header"].attrs["Redshift"] = 0.0
    with pytest.raises(FileFormatError, match="Redshift = 0.0 disagrees with Header/Time"):
        read_gadget_hdf5(path)


def test_cosmology_names_must_be_strings():
    assert config_from_mapping({"cosmology": {"name": "mine", "omega_m": 0.3}}).cosmology.name == "mine"
    with pytest.raises(InputError, match=r"Cosmology\.name must be a string \(a label\), got 5"):
        Cosmology(omega_m=0.3, name=5)


# -- compressed inputs -------------------------------------------------------------------------------------------
def _run_in_fresh_interpreters(folder, *scripts):
    """Run each script in its own Python process in ``folder``; the last one must print ``ok``."""
    for script in scripts:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                             cwd=folder)
        assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_blosc_input_loads_hdf5plugin_only_when_needed(tmp_path):
    """In a fresh interpreter, a Blosc-compressed predict input (and field file) is read after hdf5plugin
    is imported on demand, with the values of the uncompressed file."""
    pytest.importorskip("hdf5plugin", reason="hdf5plugin not installed: pip install 'emu_backend[quijote]'")
    write = textwrap.dedent("""
        import hdf5plugin, h5py, numpy as np
        from emu_backend.cosmology import QUIJOTE_FIDUCIAL
        from emu_backend.io.fields import write_fields
        x = np.random.default_rng(2).normal(0, 3, (3, 8, 8, 8)).astype(np.float32)
        write_fields("plain.h5", x, x, box_size=8 * 1000 / 512, a=1.0, cosmology=QUIJOTE_FIDUCIAL)
        with h5py.File("plain.h5") as src, h5py.File("blosc.h5", "w") as dst:
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            for k in ("displacement", "velocity"):
                dst.create_dataset(k, data=src[k][...], **hdf5plugin.Blosc(cname="zstd", clevel=5))
    """)
    read = textwrap.dedent("""
        import sys, numpy as np, torch
        assert "hdf5plugin" not in sys.modules
        from emu_backend.inference import Emulator, ZdepConvention
        from emu_backend.inference.streaming import predict_to_file
        from emu_backend.io.fields import read_fields
        from emu_backend.nn import StyledVNet
        torch.manual_seed(0)
        emu = Emulator(ZdepConvention(StyledVNet(2, width=2)))
        assert "hdf5plugin" not in sys.modules
        outs = [predict_to_file(emu, f"{k}.h5", f"out_{k}.h5", 0.3175, 0.0, tile_size=8)[0] for k in ("plain", "blosc")]
        assert "hdf5plugin" in sys.modules
        a, b = (read_fields(p) for p in outs)
        assert np.array_equal(a.displacement, b.displacement) and np.array_equal(a.velocity, b.velocity)
        assert np.array_equal(read_fields("blosc.h5").velocity, read_fields("plain.h5").velocity)
        print("ok")
    """)
    _run_in_fresh_interpreters(tmp_path, write, read)



def test_blosc_training_sample_loads_hdf5plugin_on_demand(tmp_path):
    """A training sample whose datasets were recompressed with Blosc reads, in a fresh interpreter, after
    hdf5plugin is imported on demand, with the values of the plain file."""
    pytest.importorskip("hdf5plugin", reason="hdf5plugin not installed: pip install 'emu_backend[quijote]'")
    write = textwrap.dedent("""
        import hdf5plugin, h5py, numpy as np
        from emu_backend.cosmology import QUIJOTE_FIDUCIAL
        from emu_backend.io.training_sample import TrainingSample, write_training_sample
        rng = np.random.default_rng(3)
        x = rng.normal(size=(3, 8, 8, 8)).astype(np.float32)
        y = rng.normal(size=(2, 3, 8, 8, 8)).astype(np.float32)
        write_training_sample("plain.h5", TrainingSample(x, [0.0, 0.5], y, 2 * y, 8 * 1000 / 512, QUIJOTE_FIDUCIAL, seed=1))
        with h5py.File("plain.h5") as src, h5py.File("blosc.h5", "w") as dst:
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            for k in src:
                kw = hdf5plugin.Blosc(cname="zstd", clevel=5) if src[k].ndim > 1 else {}
                dst.create_dataset(k, data=src[k][...], **kw)
    """)
    read = textwrap.dedent("""
        import sys, numpy as np
        from emu_backend.io.training_sample import read_training_sample
        assert "hdf5plugin" not in sys.modules
        a = read_training_sample("plain.h5")
        assert "hdf5plugin" not in sys.modules
        b = read_training_sample("blosc.h5")
        assert "hdf5plugin" in sys.modules
        assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("input_displacement", "displacement", "velocity"))
        print("ok")
    """)
    _run_in_fresh_interpreters(tmp_path, write, read)


# -- training ----------------------------------------------------------------------------------------------------
def test_training_holds_one_crop_at_a_time(tmp_path, monkeypatch):
    """A large batch is drawn crop by crop (the batch once held every crop of a step at the same time)."""
    import emu_backend.training.trainer as trainer
    from emu_backend.training.config import TrainConfig

    samples = write_tiny_samples(tmp_path / "data", 1, grid=8)
    alive, most = weakref.WeakSet(), [0]
    loss = trainer._crop_loss

    def counting(net, crop, *args):
        alive.add(crop)
        most[0] = max(most[0], len(alive))
        return loss(net, crop, *args)

    monkeypatch.setattr(trainer, "_crop_loss", counting)
    trainer.train(TrainConfig(width=2, crop=8, batch=3, steps=1, augment=False), samples, [], tmp_path / "run",
                  progress=False)
    assert most[0] == 1
