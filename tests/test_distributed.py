"""Distributed inference with torch.distributed (2 gloo ranks on CPU, launched by torchrun): the
assembled multi-file output equals the single-process emulator bit for bit, a killed rank resumes,
and the index/part checks catch incomplete or foreign parts."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import torch
from _stall import STALL_SOURCE  # tests/_stall.py
from _tiny_model import random_linear, seeded_model_file  # tests/_tiny_model.py

from emu_backend.errors import FileFormatError, InputError
from emu_backend.inference import Emulator, ZdepConvention
from emu_backend.inference.distributed import check_parts, index_path, part_path, predict_distributed, read_parts
from emu_backend.inference.streaming import output_paths
from emu_backend.inference.tile_evidence import DIGESTS
from emu_backend.inference.tiling import TilePlan
from emu_backend.nn import StyledVNet

OM, Z, N, TILE = 0.3, 0.5, 32, 16  # 2 rows of 4 tiles: one row per rank

# Each rank runs predict_distributed with 1 thread (the reference below too: same arithmetic).
# With STALL_RANK >= 0, that rank prints READY and sleeps after K flushed batches (to be killed).
WORKER = STALL_SOURCE + textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    from emu_backend.inference.distributed import predict_distributed
    model, src, dst, velocity, stall_rank, k, pid_dir = sys.argv[1:8]
    stall_rank, k = int(stall_rank), int(k)
    with open(os.path.join(pid_dir, "rank" + os.environ["RANK"]), "w") as fh:
        fh.write(str(os.getpid()))
    if int(os.environ["RANK"]) == stall_rank:
        stall_after(k)
    predict_distributed(Emulator.from_checkpoint(model), src, dst, 0.3, 0.5, tile_size=16, batch_size=1,
                        velocity=velocity == "1")
""")


def torchrun(*args, **popen):
    """``torchrun --standalone --nproc-per-node 2 ARGS`` (a free port is picked by the rendezvous)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **popen)


def alive(pid):
    """Whether any thread of ``pid`` is still running: the file table (and HDF5's file locks) goes
    with the last thread, and a killed leader turns zombie before its other threads have exited."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] not in "ZX":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            pass
    return False


def kill_job(proc, pid_dir):
    """SIGKILL the launcher and its ranks (torchrun starts each rank in its own session), then wait
    until they are gone."""
    pids = [int(p.read_text()) for p in pid_dir.glob("rank*")]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "ranks still alive 60 s after SIGKILL"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    emu = Emulator.from_checkpoint(seeded_model_file(d / "model.emu", width=8)[0])
    lin = random_linear(N, seed=2)
    np.save(d / "lin.npy", lin)
    (d / "worker.py").write_text(WORKER)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the ranks: same kernels, same summation order
    try:
        refs = {v: emu.predict(lin, OM, Z, tile_size=TILE, velocity=v) for v in (False, True)}
    finally:
        torch.set_num_threads(threads)
    return d, emu, refs


def test_two_gloo_ranks_equal_single_process(setup):
    d, _, refs = setup
    proc = torchrun(d / "worker.py", d / "model.emu", d / "lin.npy", d / "out" / "nl.h5", 1, -1, 0, d)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        kill_job(proc, d)  # leave no rank behind
        raise
    assert proc.returncode == 0, err[-3000:]
    idx = d / "out" / "nl.index.json"
    assert sorted(p.name for p in (d / "out").iterdir()) == ["nl.0.h5", "nl.1.h5", "nl.index.json"]
    assert sorted(p.name for p in d.glob("rank*")) == ["rank0", "rank1"]
    got = read_parts(idx)
    ref = refs[True]
    np.testing.assert_array_equal(got.displacement, ref.displacement)  # bit-identical: same tiles, same arithmetic
    np.testing.assert_array_equal(got.velocity, ref.velocity)
    assert got.z == pytest.approx(Z) and got.box_size == N * 1000 / 512
    index = json.loads(idx.read_text())
    assert [p["rows"] for p in index["parts"]] == [[0, 16], [16, 32]] and index["world_size"] == 2
    for rank in (0, 1):
        with h5py.File(d / "out" / f"nl.{rank}.h5", "r") as f:
            meta, run = json.loads(f.attrs["meta"]), json.loads(f.attrs["run"])
            assert f["displacement"].shape == (3, 16, N, N)
            assert run["rank"] == rank and run["world_size"] == 2 and meta["package_version"]
            assert meta["emulator_sha256"] and meta["checksum"] and json.loads(f.attrs["cosmology"])["omega_m"] == OM


def test_killed_rank_resumes_bit_identical(setup, tmp_path):
    d, emu, refs = setup
    dst = tmp_path / "nl.h5"
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = torchrun(d / "worker.py", d / "model.emu", d / "lin.npy", dst, 0, 1, 2, pids)
    try:
        line = proc.stdout.readline()  # rank 1 stops after 2 of its 4 tiles (or the job dies: EOF)
        assert line == "READY\n", proc.communicate(timeout=60)[1][-3000:]
    finally:
        kill_job(proc, pids)
    assert not (tmp_path / "nl.index.json").exists()
    with h5py.File(tmp_path / "nl.1.h5.partial", "r") as f:
        assert int(f.attrs["next_tile"]) == 4 + 2 and not f.attrs["complete"]
    # Resume in this process as rank 1 of 2 would need a group; instead re-launch both ranks.
    proc = torchrun(d / "worker.py", d / "model.emu", d / "lin.npy", dst, 0, -1, 0, pids)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        kill_job(proc, pids)
        raise
    assert proc.returncode == 0, err[-3000:]
    got = read_parts(tmp_path / "nl.index.json")
    np.testing.assert_array_equal(got.displacement, refs[False].displacement)  # resumed on a batch boundary
    assert got.velocity is None and not list(tmp_path.glob("*.partial"))


def test_single_rank_without_group_and_refusals(setup, tmp_path):
    d, emu, refs = setup
    [idx] = predict_distributed(emu, d / "lin.npy", tmp_path / "nl.h5", OM, Z, tile_size=32, velocity=False)
    assert idx == index_path(output_paths(tmp_path / "nl.h5", Z)[0]) and part_path(tmp_path / "nl.h5", 0).exists()
    ref = emu.predict(np.load(d / "lin.npy"), OM, Z, tile_size=32, velocity=False)
    np.testing.assert_array_equal(read_parts(idx).displacement, ref.displacement)  # same single tile
    with pytest.raises(InputError, match="already exists"):
        predict_distributed(emu, d / "lin.npy", tmp_path / "nl.h5", OM, Z, tile_size=32, velocity=False)
    with h5py.File(tmp_path / "nl.0.h5", "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(FileFormatError, match="incomplete or from another run"):
        check_parts(idx)
    (tmp_path / "nl.0.h5").unlink()
    with pytest.raises(FileFormatError, match="is missing"):
        read_parts(idx)
    (tmp_path / "bad.index.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="part index .* is not valid JSON"):
        check_parts(tmp_path / "bad.index.json")


def test_part_records_and_done_map(setup, tmp_path):
    """A part's run record pins the rows its rank read (a per-rank input digest, kept out of the index);
    check_parts refuses a part whose done map lacks a tile's checksum."""
    d, emu, _ = setup
    [idx] = predict_distributed(emu, d / "lin.npy", tmp_path / "nl.h5", OM, Z, tile_size=32, velocity=False)
    index = check_parts(idx)
    with h5py.File(tmp_path / "nl.0.h5", "r") as f:
        assert len(json.loads(f.attrs["run"])["input_sha256"]) == 64 and f[DIGESTS].shape == (1, 32)
    assert "input_sha256" not in index["run"] and "input_sha256" not in index["meta"]["config"]
    with h5py.File(tmp_path / "nl.0.h5", "r+") as f:
        f[DIGESTS][0] = 0
    with pytest.raises(FileFormatError, match=r"nl\.0\.h5': tile 0 has no checksum in its done map"):
        check_parts(idx)


def test_slab_share_covers_the_box_once():
    # brute force: every tile assigned to exactly one rank, in order, and rows match the tiles' anchors
    for shape, tile, world in [((32, 24, 16), 8, 3), ((20, 20, 20), 8, 2), ((64, 8, 8), 16, 4)]:
        plan = TilePlan(shape, tile)
        shares = [plan.slab_share(r, world) for r in range(world)]
        assert shares[0][0] == 0 and shares[-1][1] == len(plan)
        assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
        for s in shares:
            anchors = [t.anchor[0] for t in plan.tiles[s[0]:s[1]]]
            sizes = [t.size[0] for t in plan.tiles[s[0]:s[1]]]
            assert plan.rows(*s) == (min(anchors), max(a + z for a, z in zip(anchors, sizes)))
    with pytest.raises(InputError, match="world size must be in"):
        TilePlan((32, 32, 32), 16).slab_share(0, 3)


def test_each_rank_scans_only_the_rows_it_reads():
    from emu_backend.inference.rank_rows import rank_view, read_rows
    from emu_backend.inference.tiling import PAD

    shape, tile, world = (3, 256, 8, 8), 16, 4  # rank 0 computes rows [0, 64) and reads [-48, 112)
    for rank in range(world):
        plan = TilePlan(shape[1:], tile)
        t0, t1 = plan.slab_share(rank, world)
        # brute force: the union of every tile's periodic input rows
        want = sorted({(t.input_origin[0] + i) % shape[1] for t in plan.tiles[t0:t1] for i in range(t.input_size[0])})
        assert read_rows(shape, tile, rank, world).tolist() == want
    assert read_rows(shape, tile, 0, world).tolist() == sorted({r % 256 for r in range(-PAD, 64 + PAD)})

    class Counting:
        """A source that records the rows read along axis 0."""
        def __init__(self, a):
            self.a, self.shape, self.dtype, self.read = a, a.shape, a.dtype, set()

        def __getitem__(self, key):
            self.read.update(range(*key[1].indices(self.shape[1])))
            return self.a[key]

    lin = np.random.default_rng(3).normal(0, 2.0, shape).astype(np.float32)
    lin[1, 200, 3, 4] = np.nan  # read by ranks 2 and 3 only
    torch.manual_seed(0)
    emu = Emulator(ZdepConvention(StyledVNet(2, width=4)))
    with pytest.raises(InputError) as full:
        emu.plan(lin, OM, Z, tile_size=tile, velocity=False)
    for rank in range(world):
        src = Counting(lin)
        view = rank_view(src, tile, rank, world)
        if 200 in read_rows(shape, tile, rank, world):
            with pytest.raises(InputError) as err:
                emu.plan(view, OM, Z, tile_size=tile, velocity=False)
            assert str(err.value) == str(full.value)  # same message, same global index
        else:
            emu.plan(view, OM, Z, tile_size=tile, velocity=False)
        assert src.read == set(read_rows(shape, tile, rank, world).tolist())  # nothing else scanned
    # the tiles a rank computes through its view equal those computed from the whole array, bit for bit
    lin[1, 200, 3, 4] = 0.0
    t0, t1 = TilePlan(shape[1:], tile).slab_share(0, world)
    outs = []
    for src in (lin, rank_view(lin, tile, 0, world)):
        outs.append(np.full((3, 64, 8, 8), np.nan, np.float32))
        for _ in emu.predict_batches(src, OM, Z, [(outs[-1], None)], velocity=False, tile_size=tile,
                                     start_tile=t0, stop_tile=t1):
            pass
    assert np.isfinite(outs[0]).all()
    np.testing.assert_array_equal(outs[1], outs[0])  # same input blocks, same arithmetic


def _finish(proc, pids, timeout=300):
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_job(proc, pids)
        raise


def test_second_job_on_a_running_jobs_output_stops_on_every_rank_naming_the_lock(setup, tmp_path):
    """Job A stalls (rank 1 after one tile) holding the output; job B on the same output exits non-zero
    on both ranks with the lock named and touches no part; A, resumed, completes bit-identical."""
    d, emu, refs = setup
    dst, pids_a, pids_b = tmp_path / "nl.h5", tmp_path / "pa", tmp_path / "pb"
    pids_a.mkdir(), pids_b.mkdir()
    a = torchrun(d / "worker.py", d / "model.emu", d / "lin.npy", dst, 0, 1, 1, pids_a)
    try:
        assert a.stdout.readline() == "READY\n", a.communicate(timeout=60)[1][-3000:]
        stalled = tmp_path / "nl.1.h5.partial"  # rank 1 of A sleeps: its part does not change
        before = stalled.read_bytes()
        b = torchrun(d / "worker.py", d / "model.emu", d / "lin.npy", dst, 0, -1, 0, pids_b)
        _, err = _finish(b, pids_b)
        assert b.returncode != 0
        assert err.count("OutputLockedError") >= 2, err[-3000:]  # raised on both ranks of B
        assert "nl.index.json.lock" in err and "pid" in err
        assert stalled.read_bytes() == before  # B never wrote to A's parts
    finally:
        kill_job(a, pids_a)
    a = torchrun(d / "worker.py", d / "model.emu", d / "lin.npy", dst, 0, -1, 0, pids_a)
    _, err = _finish(a, pids_a)
    assert a.returncode == 0, err[-3000:]
    np.testing.assert_array_equal(read_parts(tmp_path / "nl.index.json").displacement, refs[False].displacement)


def test_two_jobs_started_together_on_one_output_exactly_one_proceeds(setup, tmp_path):
    """Started at the same moment, the two jobs race for the locks: whatever the interleaving exactly one
    completes; the other stops (locked, or - if it came after the winner finished - the output exists),
    and the output is the single-process result."""
    d, emu, refs = setup
    dst = tmp_path / "nl.h5"
    dirs = [tmp_path / "p0", tmp_path / "p1"]
    for p in dirs:
        p.mkdir()
    jobs = [torchrun(d / "worker.py", d / "model.emu", d / "lin.npy", dst, 0, -1, 0, p) for p in dirs]
    results = [(_finish(job, p), job.returncode) for job, p in zip(jobs, dirs)]
    codes = sorted(rc for _, rc in results)
    assert codes[0] == 0 and codes[1] != 0, [err[-2000:] for (_, err), _ in results]
    (_, loser_err), _ = next(r for r in results if r[1] != 0)
    assert "OutputLockedError" in loser_err or "already exists" in loser_err, loser_err[-3000:]
    np.testing.assert_array_equal(read_parts(tmp_path / "nl.index.json").displacement, refs[False].displacement)
