"""Crash-consistent resume of streamed inference: the progress record never runs ahead of the data,
every tile carries a checksum verified on resume and before the final rename, and the input is
identified by its content.

The kill-anywhere test SIGKILLs ``predict_to_file`` in child processes at random points (at chosen
fsyncs, including between the data and the record writes, and at random times), resumes, and compares
the result bit for bit with an uninterrupted run every time.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
from _tiny_model import random_linear, seeded_model_file  # tests/_tiny_model.py

from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.errors import FileFormatError, InputError
from emu_backend.inference import Emulator, streaming
from emu_backend.inference.streaming import PARTIAL_SUFFIX, predict_to_file
from emu_backend.inference.tile_evidence import DIGESTS, TileEvidence
from emu_backend.inference.tiling import TilePlan
from emu_backend.io.fields import read_fields, write_fields

OM, Z, N, TILE = 0.3, 0.5, 16, 8  # 2 x 2 x 2 = 8 tiles, one per batch (a cube: the streamed box must be one)
KW = {"tile_size": TILE, "velocity": False}
N_TILES, DONE = 8, 6  # the shared partial file holds tiles [0, DONE)
N_FSYNCS = 1 + 2 * N_TILES + 1  # a fresh run: the new file, (data, record) per batch, the completion mark

# Runs predict_to_file in a child and SIGKILLs itself at its K-th fsync, before ("pre") or after ("post")
# it (mode "fsync"), or prints STARTED and lets the parent kill it at a random time (mode "time").
WORKER = textwrap.dedent("""
    import os, signal, sys
    from emu_backend.inference import Emulator, streaming
    mode, k, when, model, src, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:7]
    emu = Emulator.from_checkpoint(model)
    if mode == "fsync":
        real, calls = streaming._fsync, [0]
        def fsync(f):
            calls[0] += 1
            if calls[0] == k and when == "pre":
                os.kill(os.getpid(), signal.SIGKILL)
            real(f)
            if calls[0] == k and when == "post":
                os.kill(os.getpid(), signal.SIGKILL)
        streaming._fsync = fsync
    print("STARTED", flush=True)
    streaming.predict_to_file(emu, src, dst, 0.3, 0.5, tile_size=8, velocity=False)
    print("DONE", flush=True)
""")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    emu = Emulator.from_checkpoint(seeded_model_file(d / "model.emu")[0])
    np.save(d / "lin.npy", random_linear(N, seed=5))
    (d / "worker.py").write_text(WORKER)
    t0 = time.monotonic()
    [ref] = predict_to_file(emu, d / "lin.npy", d / "ref" / "out.h5", OM, Z, **KW)
    run_s = time.monotonic() - t0
    with pytest.MonkeyPatch.context() as m:
        _interrupted(emu, d / "lin.npy", d / "partial" / "out.h5", m, after=DONE)
    return d, emu, read_fields(ref).displacement, run_s


def _partial_copy(d, tmp_path):
    """A copy of the shared partial file (tiles [0, DONE) done) in ``tmp_path``: the run record names
    the input, not the output, so the copy resumes; returns its path."""
    part = tmp_path / ("out.h5" + PARTIAL_SUFFIX)
    shutil.copyfile(d / "partial" / part.name, part)
    return part


def _evidence() -> TileEvidence:
    plan = TilePlan((N, N, N), TILE)
    return TileEvidence(tuple(plan.tiles), 0, False, tuple(range(len(plan))))


def _interrupted(emu, src, dst, monkeypatch, after: int, **kw):
    """A run stopped by an exception after ``after`` batches (records written), leaving a partial file."""
    orig = Emulator.run_plan

    def failing(self, *args, **kwargs):
        for i, batch in enumerate(orig(self, *args, **kwargs)):
            if i == after:
                raise KeyboardInterrupt
            yield batch

    with monkeypatch.context() as m:
        m.setattr(Emulator, "run_plan", failing)
        with pytest.raises(KeyboardInterrupt):
            predict_to_file(emu, src, dst, OM, Z, **(KW | kw))
    return dst.with_name(dst.name + PARTIAL_SUFFIX)


def _resume_and_compare(emu, src, dst, ref):
    assert not dst.exists()
    [path] = predict_to_file(emu, src, dst, OM, Z, **KW)
    np.testing.assert_array_equal(read_fields(path).displacement, ref)  # bit-identical, no zero cells left
    assert not list(dst.parent.glob("*" + PARTIAL_SUFFIX + "*"))
    with h5py.File(path, "r") as f:
        assert f[DIGESTS][...].any(axis=1).all() and bool(f.attrs["complete"])


def test_record_edited_ahead_of_the_data_is_detected(setup, tmp_path, monkeypatch, caplog):
    d, emu, ref, _ = setup
    part = _partial_copy(d, tmp_path)
    with h5py.File(part, "r+") as f:
        assert int(f.attrs["next_tile"]) == DONE
        f.attrs["next_tile"] = np.int64(N_TILES)  # claims every tile, even completion; tiles 6, 7 are zeros
        f.attrs["complete"] = True
    with caplog.at_level(logging.WARNING, logger="emu_backend.inference.tile_evidence"):
        _resume_and_compare(emu, d / "lin.npy", tmp_path / "out.h5", ref)
    assert f"tile {DONE} does not match its recorded checksum" in caplog.text and str(part) in caplog.text


def test_record_ahead_of_lost_data_is_recomputed(setup, tmp_path, monkeypatch, caplog):
    """The failure of a record that shares an fsync with its data: the record survived, tile 5's data did not."""
    d, emu, ref, _ = setup
    part = _partial_copy(d, tmp_path)
    with h5py.File(part, "r+") as f:
        f["displacement"][:, 8:16, 0:8, 8:16] = 0.0  # tile 5 (anchor (8, 0, 8)) back to the fill value
    with caplog.at_level(logging.WARNING, logger="emu_backend.inference.tile_evidence"):
        _resume_and_compare(emu, d / "lin.npy", tmp_path / "out.h5", ref)
    assert "tile 5 does not match" in caplog.text and "recomputing from tile 5" in caplog.text


def test_crash_between_the_data_and_the_record(setup, tmp_path, monkeypatch):
    """Killed after tile 7's data and checksum are durable, before its record: the record says 7."""
    d, emu, ref, _ = setup
    _partial_copy(d, tmp_path)
    real, calls = streaming._fsync, []

    def fsync(f):
        real(f)
        calls.append(1)
        if len(calls) == 3:  # resuming at 6: tile 6's data, its record, then tile 7's data
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(streaming, "_fsync", fsync)
        with pytest.raises(KeyboardInterrupt):
            predict_to_file(emu, d / "lin.npy", tmp_path / "out.h5", OM, Z, **KW)
    with h5py.File(tmp_path / "out.h5.partial", "r") as f:
        assert int(f.attrs["next_tile"]) == 7 and f[DIGESTS][7].any()
        assert _evidence().first_bad(f, 8) is None  # the data of tile 7 is there, only the record lags
    _resume_and_compare(emu, d / "lin.npy", tmp_path / "out.h5", ref)


def test_tile_changed_before_the_rename_is_refused(setup, tmp_path, monkeypatch, caplog):
    """A tile that no longer matches its checksum when the run ends: no final file; a resume repairs it."""
    d, emu, ref, _ = setup
    _partial_copy(d, tmp_path)
    orig = Emulator.run_plan

    def tampering(self, src, plan, out, **kwargs):
        yield from orig(self, src, plan, out, **kwargs)
        out[0][0][:, -1, -1, -1] = 1.0  # tile 7 changes on disk after its checksum was recorded

    with monkeypatch.context() as m:
        m.setattr(Emulator, "run_plan", tampering)
        with pytest.raises(FileFormatError, match=r"out\.h5\.partial': tile 7 does not match the checksum .* not renamed"):
            predict_to_file(emu, d / "lin.npy", tmp_path / "out.h5", OM, Z, **KW)
    assert not (tmp_path / "out.h5").exists()
    with caplog.at_level(logging.WARNING, logger="emu_backend.inference.tile_evidence"):
        _resume_and_compare(emu, d / "lin.npy", tmp_path / "out.h5", ref)
    assert "tile 7 does not match" in caplog.text


def test_input_with_same_size_and_time_but_new_content_is_refused(setup, tmp_path, monkeypatch):
    d, emu, _, _ = setup
    lin = np.load(d / "lin.npy")
    cosmo = QUIJOTE_FIDUCIAL.clone(omega_m=OM)
    src = tmp_path / "lin.h5"
    write_fields(src, lin, box_size=N * 1000 / 512, a=1.0, cosmology=cosmo, meta={"seed": 5})
    part = _interrupted(emu, src, tmp_path / "out.h5", monkeypatch, after=0, tile_size=16)  # one tile
    assert part.exists()
    stat = src.stat()
    with h5py.File(src, "r+") as f:  # new values in place: same size
        f["displacement"][0, 0, 0, 0] += 1.0
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same modification time
    assert (src.stat().st_size, src.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    with pytest.raises(InputError, match=r"different run \(input_sha256: recorded '[0-9a-f]{64}', now"):
        predict_to_file(emu, src, tmp_path / "out.h5", OM, Z, **(KW | {"tile_size": 16}))
    with h5py.File(src, "r+") as f:  # the input back as it was: the run resumes
        f["displacement"][0, 0, 0, 0] -= 1.0
    [path] = predict_to_file(emu, src, tmp_path / "out.h5", OM, Z, **(KW | {"tile_size": 16}))
    with h5py.File(path, "r") as f:
        assert json.loads(f.attrs["run"])["input_sha256"] == read_fields(path).meta["config"]["input_sha256"]


def _run_worker(d, dst, mode, k=0, when="pre", delay=0.0) -> None:
    """Run the worker to its end or its kill; for mode "time" kill it ``delay`` seconds after it starts
    the run."""
    proc = subprocess.Popen([sys.executable, str(d / "worker.py"), mode, str(k), when, str(d / "model.emu"),
                             str(d / "lin.npy"), str(dst)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line == "STARTED\n", proc.communicate(timeout=60)[1][-3000:]
        if mode == "time":
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGKILL), err[-3000:]


def _check_after_kill(dst, ref):
    """What a kill may leave: a final file only if complete and exact; a partial whose record claims
    only tiles whose data matches their checksums."""
    if dst.exists():
        np.testing.assert_array_equal(read_fields(dst).displacement, ref)
    part = dst.with_name(dst.name + PARTIAL_SUFFIX)
    if part.exists():
        with h5py.File(part, "r") as f:
            assert _evidence().first_bad(f, int(f.attrs["next_tile"])) is None  # the record never runs ahead


@pytest.mark.slow
def test_kill_anywhere_then_resume_is_bit_identical(setup, tmp_path):
    d, emu, ref, run_s = setup
    rng = np.random.default_rng(2024)
    data_fsync = 2 * int(rng.integers(1, N_TILES + 1))  # a random batch's data fsync: between data and record
    chains = [
        [("fsync", data_fsync, "post"), ("fsync", int(rng.integers(1, 6)), str(rng.choice(["pre", "post"]))),
         ("fsync", 1, "post")],  # the last: right after a file is created, or the first resumed batch's data
        [("time", 0, "", float(rng.uniform(0.0, run_s))), ("time", 0, "", float(rng.uniform(0.0, run_s)))],
    ]
    for i, chain in enumerate(chains):
        dst = tmp_path / f"chain{i}" / "out.h5"
        dst.parent.mkdir()
        for mode, k, when, *delay in chain:
            _run_worker(d, dst, mode, k, when, *delay)
            _check_after_kill(dst, ref)
            if dst.exists():  # finished (or killed after its rename): nothing left to resume
                break
        if not dst.exists():
            _resume_and_compare(emu, d / "lin.npy", dst, ref)
        np.testing.assert_array_equal(read_fields(dst).displacement, ref)
    assert data_fsync < N_FSYNCS


def test_resume_start_snaps_to_a_batch_boundary(tmp_path, caplog):
    """The done map alone (no network): the start is the record, lowered to the first bad tile, then
    to a batch boundary; a slab file (rows from 16, tiles 2 and 3) is checked in its own coordinates."""
    plan = TilePlan((32, 32, 16), 16)  # 4 tiles; in batches of 2 ([0, 2), [2, 4))
    data = np.random.default_rng(0).normal(size=(3, 32, 32, 16)).astype(np.float32)
    path = tmp_path / "f.h5"
    for ev, rows in [(TileEvidence(tuple(plan.tiles), 0, False, (0, 2)), slice(0, 32)),
                     (TileEvidence(tuple(plan.tiles[2:]), 16, False, (2,)), slice(16, 32))]:
        with h5py.File(path, "w") as f:
            f["displacement"] = data[:, rows]
            ev.create(f)
            ev.record(f, list(ev.tiles))
        assert ev.resume_start(path, ev.stop) == ev.stop and ev.resume_start(path, 99) == ev.stop
        ev.check_done(path)
        with caplog.at_level(logging.WARNING, logger="emu_backend.inference.tile_evidence"):
            assert ev.resume_start(path, 3) == 2  # tile 3 is inside batch [2, 4): restart at 2
        assert "next_tile = 3 is not a batch boundary" in caplog.text
        with h5py.File(path, "r+") as f:
            f["displacement"][0, -1, -1, -1] += 1.0  # the last tile (3) changes
        with caplog.at_level(logging.WARNING, logger="emu_backend.inference.tile_evidence"):
            assert ev.resume_start(path, ev.stop) == 2
        assert "tile 3 does not match its recorded checksum" in caplog.text
        with pytest.raises(FileFormatError, match=r"f\.h5': tile 3 does not match the checksum recorded"):
            ev.check_done(path)
    with h5py.File(path, "r+") as f:
        del f[DIGESTS]
    with pytest.raises(FileFormatError, match="unreadable tile data or done map"):
        ev.resume_start(path, 3)
