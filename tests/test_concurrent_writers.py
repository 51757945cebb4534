"""Two writers of one output: a lock file of its own per output, whatever HDF5's file locking says.

Two real ``emu-backend predict`` processes are started at once on the same output, with
``HDF5_USE_FILE_LOCKING`` FALSE and TRUE: the one that takes the lock stops after a few batches (it
waits for a line on stdin), the other must exit with status 2 naming the lock file, its owner's pid and
host, with or without ``--overwrite``; no file with the final name may exist until the winner finishes,
and the finished file equals an uninterrupted run bit for bit. A SIGTERMed winner releases its lock and
resumes. A stale lock (a dead process of this host, or a reused pid) is taken over; another host's lock
is refused with instructions, and so is an unreadable lock file.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
from _tiny_model import random_linear, seeded_model_file  # tests/_tiny_model.py

import emu_backend.cli.main as cli_main
from emu_backend.cli.main import main
from emu_backend.errors import OutputLockedError
from emu_backend.inference import Emulator
from emu_backend.io.fields import read_fields
from emu_backend.io.output_lock import FOLDER_LOCK_NAME, lock_path, output_lock, read_lock
from emu_backend.training.trainer import TrainConfig, train

OM, Z, N = 0.3, 0.5, 16  # 8 tiles of 8^3, one per batch

# The CLI in a child: after K flushed batches it prints READY and waits for a line on stdin.
WORKER = textwrap.dedent("""
    import sys
    from emu_backend.cli.main import main
    from emu_backend.inference import Emulator

    def pause_after(k):
        orig = Emulator.run_plan
        def pausing(self, *args, **kwargs):
            for i, batch in enumerate(orig(self, *args, **kwargs)):
                yield batch
                if i + 1 == k:
                    print("READY", flush=True)
                    sys.stdin.readline()
        Emulator.run_plan = pausing

    pause_after(int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
""")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("concurrent")
    emu = Emulator.from_checkpoint(seeded_model_file(d / "model.emu")[0])
    lin = random_linear(N, seed=11)
    np.save(d / "lin.npy", lin)
    (d / "worker.py").write_text(WORKER)
    ref = emu.predict(lin, OM, Z, tile_size=16, velocity=False).displacement  # = tiles of 8, bit for bit
    return d, ref


def args(d, out, *extra):
    return ["predict", str(d / "lin.npy"), str(out), "--omega-m", str(OM), "--z", str(Z),
            "--weights", str(d / "model.emu"), "--tile", "8", "--no-velocity", *extra]


def _start(d, out, env, *extra):
    return subprocess.Popen([sys.executable, str(d / "worker.py"), "3", *args(d, out, *extra)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_winner(procs, timeout=120):
    """The process that prints READY and the one that exits, in that order (each checked)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in procs if p.poll() is not None]
        if done:
            [loser] = done
            [winner] = [p for p in procs if p is not loser]
            assert winner.stdout.readline() == "READY\n", winner.communicate(timeout=60)[1]
            return winner, loser
        time.sleep(0.1)
    raise AssertionError("neither writer exited")


@pytest.mark.parametrize("hdf5_locking,overwrite,end", [("FALSE", True, "finish"), ("TRUE", False, "sigterm")])
def test_two_writers_exactly_one_proceeds(setup, tmp_path, capsys, hdf5_locking, overwrite, end):
    d, ref = setup
    out = tmp_path / "out.h5"
    env = dict(os.environ, HDF5_USE_FILE_LOCKING=hdf5_locking)
    extra = ("--overwrite",) if overwrite else ()
    procs = [_start(d, out, env, *extra), _start(d, out, env, *extra)]  # a real race for the lock
    try:
        winner, loser = _wait_for_winner(procs)
        err = loser.stderr.read()
        assert loser.returncode == 2, err
        owner = read_lock(lock_path(out))
        assert owner["pid"] == winner.pid and owner["host"] == socket.gethostname()
        [line] = err.strip().splitlines()[-1:]
        assert line.startswith("error: output ") and "Traceback" not in err, err
        assert f"is locked by another run: pid {winner.pid} on host {socket.gethostname()}" in line
        assert f"lock file {str(lock_path(out))!r}" in line and "pass overwrite" not in line
        assert not out.exists()  # nothing reads as complete while the winner is mid-way
        with h5py.File(tmp_path / "out.h5.partial", "r", locking=False) as f:  # the winner has it open
            assert int(f.attrs["next_tile"]) == 3 and not f.attrs["complete"]
        if end == "finish":
            winner.stdin.write("\n")
            winner.stdin.flush()
            assert winner.wait(timeout=120) == 0, winner.stderr.read()
        else:  # a batch system's cancel: the lock is released, the partial file kept for a resume
            winner.send_signal(signal.SIGTERM)
            assert winner.wait(timeout=120) == 143, winner.stderr.read()
            assert not lock_path(out).exists() and not out.exists()
            assert main(args(d, out)) == 0
            assert "stale lock" not in capsys.readouterr().err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    np.testing.assert_array_equal(read_fields(out).displacement, ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]  # no lock, partial or temporary left


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(out, **owner):
    record = {"pid": os.getpid(), "host": socket.gethostname(), "user": "someone",
              "started": "2024-01-02T03:04:05+00:00", "command": "emu-backend predict ...", "token": "x"}
    lock_path(out).write_text(json.dumps(record | owner))


@pytest.mark.parametrize("owner", [{"pid": "dead"}, {"pid_start": -1}], ids=["dead-pid", "reused-pid"])
def test_stale_lock_of_this_host_is_taken_over(setup, tmp_path, capsys, owner):
    d, ref = setup
    out = tmp_path / "out.h5"
    _write_lock(out, **{k: (_dead_pid() if v == "dead" else v) for k, v in owner.items()})
    assert main(args(d, out, "--tile", "16")) == 0  # one tile: cheap (bit-identical to tiles of 8 here)
    assert "taking over the stale lock" in capsys.readouterr().err
    np.testing.assert_array_equal(read_fields(out).displacement, ref)
    assert not lock_path(out).exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_lock_of_another_host_is_refused(setup, tmp_path, capsys, overwrite):
    d, _ = setup
    out = tmp_path / "out.h5"
    _write_lock(out, host="node042.cluster", pid=4242)
    (tmp_path / "out.h5.partial").write_bytes(b"being written on node042")
    assert main(args(d, out, *(["--overwrite"] if overwrite else []))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "locked by another run: pid 4242 on host node042.cluster (user someone)" in err
    assert "check on node042.cluster: ps -p 4242), delete the lock file" in err and "overwrite" not in err
    assert lock_path(out).exists() and read_lock(lock_path(out))["host"] == "node042.cluster"  # never broken
    assert (tmp_path / "out.h5.partial").read_bytes() == b"being written on node042"  # nor the file touched


def test_unreadable_lock_is_refused(setup, tmp_path, capsys):
    d, _ = setup
    out = tmp_path / "out.h5"
    lock_path(out).write_bytes(b"")  # a run killed between creating the lock file and writing it
    assert main(args(d, out)) == 2
    assert "exists but cannot be read" in capsys.readouterr().err


def test_lock_is_released_on_error_and_interrupt(tmp_path):
    out = tmp_path / "sub" / "out.h5"
    for exc in (ValueError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), output_lock(out) as lock:
            assert read_lock(lock)["pid"] == os.getpid()
            raise exc
        assert not (tmp_path / "sub").exists()  # the folder it made is removed again when left empty
    with output_lock(out), pytest.raises(OutputLockedError, match="still running on this host"):
        with output_lock(out):
            pass


def _cli_error(argv, monkeypatch, capsys):
    """Run the CLI: it must exit 2 with one line; returns the package error it caught."""
    caught = []
    monkeypatch.setattr(cli_main.logger, "debug", lambda *a, **k: caught.append(sys.exc_info()[1]))
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    return caught[0]


def test_folder_writers_lock_their_folder(tmp_path, monkeypatch, capsys):
    """run, validate, make-training-set and train lock their output folder before looking into it."""
    out = tmp_path / "out"
    out.mkdir()
    _write_lock(out / "x", host="elsewhere", pid=7)
    (out / "x.lock").rename(out / FOLDER_LOCK_NAME)
    message = r"output '.*out' is locked by another run: pid 7 on host elsewhere"
    for argv in (["run", "--backend", "za", "-n", "8", "--z", "0", "--no-plot", "--out", str(out), "--overwrite"],
                 ["validate", "--against", "jaxpm", "-n", "8", "--candidates", "za", "-o", str(out)],
                 ["make-training-set", "--out", str(out), "--n-sims", "1", "-n", "8", "--backend", "2lpt"]):
        error = _cli_error(argv, monkeypatch, capsys)
        assert isinstance(error, OutputLockedError) and re.search(message, str(error)), (argv, error)
    with pytest.raises(OutputLockedError, match=message):  # before any sample file is opened
        train(TrainConfig(width=4, crop=8, steps=1), [tmp_path / "no_such_sample.h5"], [], out)
    assert sorted(p.name for p in out.iterdir()) == [FOLDER_LOCK_NAME]  # nothing written, the lock kept
