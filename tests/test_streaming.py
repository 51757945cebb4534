"""Streaming, resumable emulation to files: exact agreement with in-memory runs, kill-and-resume, refusals."""

import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from _tiny_model import random_linear, seeded_model_file  # tests/_tiny_model.py

from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.errors import InputError
from emu_backend.inference import Emulator
from emu_backend.inference.streaming import output_paths, predict_to_file
from emu_backend.io.fields import read_fields, write_fields

OM, ZS, TILE = 0.3, [0.5, 1.0], 8  # 16^3 box, tile 8: 8 tiles
# Multi-tile runs skip velocities (2x the cost); test_velocity_single_tile covers them.

# Runs predict_to_file in a child process and stops it (prints READY, sleeps) at a chosen batch:
# "after_flush": K batches written and flushed; "in_flight": batch K written but not yet flushed.
WORKER = textwrap.dedent("""
    import sys, time
    from emu_backend.inference import Emulator
    from emu_backend.inference.streaming import predict_to_file
    k, mode, model, src, dst = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    orig = Emulator.run_plan
    def stalling(self, *args, **kwargs):
        it = orig(self, *args, **kwargs)
        def gen():
            for i, batch in enumerate(it):
                if mode == "in_flight" and i == k:
                    print("READY", flush=True); time.sleep(600)
                yield batch
                if mode == "after_flush" and i + 1 == k:
                    print("READY", flush=True); time.sleep(600)
        return gen()
    Emulator.run_plan = stalling
    predict_to_file(Emulator.from_checkpoint(model), src, dst, 0.3, [0.5, 1.0], tile_size=8, batch_size=1,
                    velocity=False)
""")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    emu = Emulator.from_checkpoint(seeded_model_file(d / "model.emu")[0])
    lin = random_linear(16, seed=1)
    np.save(d / "lin.npy", lin)
    ref = predict_to_file(emu, d / "lin.npy", d / "ref" / "out.h5", OM, ZS, tile_size=TILE, velocity=False)
    return d, emu, lin, [read_fields(p) for p in ref]


def assert_same_files(paths, ref):
    assert len(paths) == len(ref)
    for p, r in zip(paths, ref):
        got = read_fields(p)
        np.testing.assert_array_equal(got.displacement, r.displacement)  # bit-identical: same tiles, same arithmetic
        assert got.velocity is None and r.velocity is None
        assert got.a == r.a and got.meta == r.meta


def test_matches_in_memory_predict(setup):
    d, emu, lin, ref = setup
    preds = emu.predict(lin, OM, ZS, tile_size=TILE, batch_size=1, velocity=False)
    for pred, r, z in zip(preds, ref, ZS):
        np.testing.assert_array_equal(r.displacement, pred.displacement)  # same tiles, same arithmetic
        assert r.z == pytest.approx(z) and r.box_size == 16 * 1000 / 512
        assert r.meta["tile_size"] == TILE and r.meta["package_version"] and r.meta["emulator_sha256"]
    assert sorted(p.name for p in (d / "ref").iterdir()) == ["out_z0.5.h5", "out_z1.h5"]


def test_hdf5_input_and_velocity(setup, tmp_path):
    d, emu, lin, _ = setup
    cosmo = QUIJOTE_FIDUCIAL.clone(omega_m=OM)
    write_fields(tmp_path / "lin.h5", lin, box_size=31.25, a=1.0, cosmology=cosmo, meta={"seed": 7})
    [path] = predict_to_file(emu, tmp_path / "lin.h5", tmp_path / "o.h5", OM, 1.0, tile_size=16)  # one tile
    got = read_fields(path)
    pred = emu.predict(lin, OM, 1.0, tile_size=16)
    np.testing.assert_array_equal(got.displacement, pred.displacement)
    np.testing.assert_array_equal(got.velocity, pred.velocity)
    assert got.meta["seed"] == 7 and got.cosmology == cosmo and got.box_size == 31.25


@pytest.mark.parametrize("k,mode", [(2, "after_flush"), (5, "in_flight")])
def test_sigkill_and_resume_is_bit_identical(setup, tmp_path, k, mode):
    d, emu, _, ref = setup
    (tmp_path / "worker.py").write_text(WORKER)
    dst = tmp_path / "out.h5"
    finals = output_paths(dst, ZS)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(k), mode, str(d / "model.emu"),
                             str(d / "lin.npy"), str(dst)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the worker stops at its point (or dies: EOF)
        assert line == "READY\n", proc.communicate(timeout=60)[1]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not any(p.exists() for p in finals)  # nothing with a final name while interrupted
    for p in finals:
        with h5py.File(p.with_name(p.name + ".partial"), "r") as f:
            assert int(f.attrs["next_tile"]) == k and not f.attrs["complete"]
    paths = predict_to_file(emu, d / "lin.npy", dst, OM, ZS, tile_size=TILE, velocity=False)
    assert paths == finals and not list(tmp_path.glob("*.partial"))
    assert_same_files(paths, ref)


def _interrupted_run(emu, src, dst, monkeypatch, z=1.0, after=3):
    """A run stopped by an exception after ``after`` batches, leaving partial files."""
    orig = Emulator.run_plan

    def failing(self, *args, **kwargs):
        for i, batch in enumerate(orig(self, *args, **kwargs)):
            if i == after:
                raise KeyboardInterrupt
            yield batch

    with monkeypatch.context() as m:
        m.setattr(Emulator, "run_plan", failing)
        with pytest.raises(KeyboardInterrupt):
            predict_to_file(emu, src, dst, OM, z, tile_size=TILE, velocity=False)


def test_resume_refuses_other_parameters(setup, tmp_path, monkeypatch):
    d, emu, _, ref = setup
    dst = tmp_path / "out.h5"
    _interrupted_run(emu, d / "lin.npy", dst, monkeypatch)
    assert not dst.exists() and (tmp_path / "out.h5.partial").exists()
    base = dict(omega_m=OM, tile_size=TILE, velocity=False)
    for change, field in [(dict(tile_size=16), "tile_size"), (dict(batch_size=2), "batch_size"),
                          (dict(velocity=True), "velocity"), (dict(omega_m=0.25), "omega_m")]:
        kw = base | change
        with pytest.raises(InputError, match=rf"different run \({field}: recorded"):
            predict_to_file(emu, d / "lin.npy", dst, kw.pop("omega_m"), 1.0, **kw)
    # another arithmetic changes the round-off: a resume with it is refused too
    bf16 = Emulator(emu.model, precision="bf16", memory_format=emu.memory_format)
    with pytest.raises(InputError, match=r"different run \(emulator_sha256: recorded"):
        predict_to_file(bf16, d / "lin.npy", dst, OM, 1.0, tile_size=TILE, velocity=False)
    with pytest.raises(InputError, match="resume=True to continue"):
        predict_to_file(emu, d / "lin.npy", dst, OM, 1.0, tile_size=TILE, velocity=False, resume=False)
    [path] = predict_to_file(emu, d / "lin.npy", dst, OM, 1.0, tile_size=TILE, velocity=False)
    np.testing.assert_array_equal(read_fields(path).displacement, ref[1].displacement)


def test_resume_refuses_changed_input(setup, tmp_path, monkeypatch):
    d, emu, lin, _ = setup
    np.save(tmp_path / "lin.npy", lin)
    _interrupted_run(emu, tmp_path / "lin.npy", tmp_path / "out.h5", monkeypatch, after=1)
    stat = (tmp_path / "lin.npy").stat()
    np.save(tmp_path / "lin.npy", lin[:, ::-1].copy())  # same size and (below) the same modification time:
    os.utime(tmp_path / "lin.npy", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # only the content tells
    assert (tmp_path / "lin.npy").stat().st_size == stat.st_size
    with pytest.raises(InputError, match="input_sha256: recorded"):
        predict_to_file(emu, tmp_path / "lin.npy", tmp_path / "out.h5", OM, 1.0, tile_size=TILE, velocity=False)


def test_existing_output_needs_overwrite(setup, tmp_path, monkeypatch):
    d, emu, lin, _ = setup
    dst = tmp_path / "out.h5"
    kw = dict(tile_size=16, velocity=False)  # one tile: cheap
    predict_to_file(emu, d / "lin.npy", dst, OM, 1.0, **kw)
    stamp = dst.stat().st_mtime_ns
    with pytest.raises(InputError, match="already exists; pass overwrite=True"):
        predict_to_file(emu, d / "lin.npy", dst, OM, 1.0, **kw)
    with pytest.raises(InputError, match="already exists; pass overwrite=True"):
        predict_to_file(emu, d / "lin.npy", dst, OM, 1.0, **kw, resume=False)
    assert dst.stat().st_mtime_ns == stamp
    [path] = predict_to_file(emu, d / "lin.npy", dst, 0.25, 1.0, **kw, overwrite=True)
    pred = emu.predict(lin, 0.25, 1.0, tile_size=16, velocity=False)
    np.testing.assert_array_equal(read_fields(path).displacement, pred.displacement)
    assert read_fields(path).cosmology.omega_m == 0.25


def test_overwrite_starts_a_partial_over(setup, tmp_path, monkeypatch):
    d, emu, _, ref = setup
    dst = tmp_path / "out.h5"
    _interrupted_run(emu, d / "lin.npy", dst, monkeypatch, after=1)
    with h5py.File(tmp_path / "out.h5.partial", "r+") as f:
        f["displacement"][...] = 1e6  # what a start-over must not keep
    [path] = predict_to_file(emu, d / "lin.npy", dst, OM, 1.0, tile_size=TILE, velocity=False, overwrite=True)
    np.testing.assert_array_equal(read_fields(path).displacement, ref[1].displacement)


def test_killed_between_renames_resumes(setup, tmp_path):
    d, emu, _, ref = setup
    for p in (d / "ref").iterdir():  # the run record holds the input, not the output name
        (tmp_path / p.name).write_bytes(p.read_bytes())
    finals = output_paths(tmp_path / "out.h5", ZS)
    finals[1].rename(finals[1].with_name(finals[1].name + ".partial"))  # as if killed before the second rename
    paths = predict_to_file(emu, d / "lin.npy", tmp_path / "out.h5", OM, ZS, tile_size=TILE, velocity=False)
    assert_same_files(paths, ref)
    with pytest.raises(InputError, match="already exists"):  # with nothing left to resume, finals are refused
        predict_to_file(emu, d / "lin.npy", tmp_path / "out.h5", OM, ZS, tile_size=TILE, velocity=False)
