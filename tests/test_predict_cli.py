"""``emu-backend predict``: bad input exits 2 with a clear message, the output equals the library call,
a SIGKILLed run resumes bit-identically, and under torchrun the ranks write parts of the same box."""

import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _stall import STALL_SOURCE  # tests/_stall.py
from _tiny_model import random_linear, seeded_model_file  # tests/_tiny_model.py

from emu_backend.cli.main import main
from emu_backend.inference import Emulator
from emu_backend.inference.distributed import read_parts
from emu_backend.inference.streaming import predict_to_file
from emu_backend.io.fields import read_fields

OM, Z = 0.3, 0.5

# The CLI in a child process, stopped (prints READY, sleeps) after K flushed batches, to be killed.
WORKER = STALL_SOURCE + textwrap.dedent("""
    import sys
    from emu_backend.cli.main import main
    stall_after(int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
""")


def children(pid):
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                with open(f"/proc/{stat}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(stat))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                pass
    return found


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict_cli")
    emu = Emulator.from_checkpoint(seeded_model_file(d / "model.emu")[0])
    lin = random_linear(16, seed=3)
    np.save(d / "lin.npy", lin)
    return d, emu, lin


def args(d, out, *extra):
    return ["predict", str(d / "lin.npy"), str(out), "--omega-m", str(OM), "--z", str(Z),
            "--weights", str(d / "model.emu"), "--tile", "8", "--no-velocity", *extra]


@pytest.mark.parametrize("change,message", [
    ({"input": "missing.npy"}, "not found"),
    ({"input": "bad_shape.npy"}, r"shape \(3, N0, N1, N2\)"),
    ({"input": "lin.txt"}, "must be a .npy, .h5 or .hdf5 file"),
    ({"--tile": "12"}, "multiple of 8"),
    ({"--batch": "0"}, "batch_size must be a positive integer"),
    ({"--omega-m": "0.9"}, "omega_m"),
    ({"--z": "7"}, "z"),
    ({"--omega-m": "-1"}, r"\(0, 1\]"),
    ({"output": "out.npy"}, "must end in .h5 or .hdf5"),
    ({"--weights": "nothing.emu"}, "nothing.emu"),
    ({"--device": "nodevice"}, "unknown device"),
])
def test_bad_inputs_exit_2_with_a_message(setup, tmp_path, capsys, change, message):
    d, _, _ = setup
    np.save(tmp_path / "bad_shape.npy", np.zeros((3, 8, 8), np.float32))
    (tmp_path / "lin.txt").write_text("1 2 3")
    argv = args(d, tmp_path / "out.h5")
    for key, value in change.items():
        if key == "input":
            argv[1] = str(tmp_path / value)
        elif key == "output":
            argv[2] = str(tmp_path / value)
        elif key in argv:
            argv[argv.index(key) + 1] = value
        else:
            argv += [key, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert not list(tmp_path.glob("out*"))  # nothing written


def test_usage_errors_exit_2(setup, tmp_path, capsys):
    d, _, _ = setup
    argv = args(d, tmp_path / "out.h5")
    del argv[3:5]  # no --omega-m
    assert main(argv) == 2
    assert "--omega-m" in capsys.readouterr().err


def test_output_equals_library_call_and_refuses_overwrite(setup, tmp_path, capsys):
    d, emu, lin = setup
    assert main(args(d, tmp_path / "cli.h5", "--z", "0.5", "1")) == 0
    libs = predict_to_file(emu, d / "lin.npy", tmp_path / "lib.h5", OM, [0.5, 1.0], tile_size=8, velocity=False)
    for z, lib in zip(("0.5", "1"), libs):
        got, ref = read_fields(tmp_path / f"cli_z{z}.h5"), read_fields(lib)
        np.testing.assert_array_equal(got.displacement, ref.displacement)  # same library call underneath
        assert got.meta["emulator_sha256"] == ref.meta["emulator_sha256"]
    pred = emu.predict(lin, OM, 1.0, tile_size=8, velocity=False)
    np.testing.assert_array_equal(read_fields(tmp_path / "cli_z1.h5").displacement, pred.displacement)
    capsys.readouterr()
    stamp = (tmp_path / "cli_z1.h5").stat().st_mtime_ns
    assert main(args(d, tmp_path / "cli.h5", "--z", "0.5", "1")) == 2
    assert "already exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert (tmp_path / "cli_z1.h5").stat().st_mtime_ns == stamp
    assert main(args(d, tmp_path / "cli.h5", "--z", "0.5", "1", "--overwrite", "--tile", "16")) == 0  # one tile: cheap


def test_sigkill_then_rerun_is_bit_identical(setup, tmp_path, capsys):
    d, emu, lin = setup
    (tmp_path / "worker.py").write_text(WORKER)
    out = tmp_path / "out.h5"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), "3", *args(d, out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line == "READY\n", proc.communicate(timeout=60)[1]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert not out.exists() and (tmp_path / "out.h5.partial").exists()
    assert main(args(d, out)) == 0
    assert "resuming 1 interrupted output" in capsys.readouterr().err
    ref = emu.predict(lin, OM, Z, tile_size=8, velocity=False)
    np.testing.assert_array_equal(read_fields(out).displacement, ref.displacement)  # resumed on a batch boundary
    assert not list(tmp_path.glob("*.partial"))


def test_under_torchrun_two_ranks_write_parts(setup, tmp_path):
    d, emu, lin = setup
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "emu_backend", *args(d, tmp_path / "out.h5")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        for pid in children(proc.pid):  # torchrun starts each rank in its own session: kill them too
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        raise
    assert proc.returncode == 0, err[-3000:]
    assert "2 rank(s)" in out and "out.index.json" in out
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the ranks (OMP_NUM_THREADS=1): same kernels
    try:
        ref = emu.predict(lin, OM, Z, tile_size=8, velocity=False)
    finally:
        torch.set_num_threads(threads)
    got = read_parts(tmp_path / "out.index.json")
    np.testing.assert_array_equal(got.displacement, ref.displacement)  # each tile computed as in one process
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.0.h5", "out.1.h5", "out.index.json"]


def test_flags_named_as_the_library_with_old_aliases(setup, tmp_path):
    """--tile-size/--batch-size/--compile-mode are PredictConfig's names; --tile/--batch/--compile stay aliases."""
    import argparse

    from emu_backend.cli.predict import add_arguments, config_from_args
    from emu_backend.errors import InputError
    from emu_backend.pipelines.predict import PredictConfig

    p = argparse.ArgumentParser()
    add_arguments(p)
    base = ["lin.npy", "out.h5", "--omega-m", "0.3", "--z", "0"]
    new = config_from_args(p.parse_args([*base, "--tile-size", "16", "--batch-size", "2", "--compile-mode", "default"]))
    old = config_from_args(p.parse_args([*base, "--tile", "16", "--batch", "2", "--compile", "default"]))
    assert new == old and (new.tile_size, new.batch_size, new.compile_mode, new.z) == (16, 2, "default", 0.0)
    assert config_from_args(p.parse_args([*base[:-1], "0", "1"])).z == (0.0, 1.0)  # several --z: one file each
    with pytest.raises(InputError, match=r"omega_m = 0\.0 is outside the allowed range \(0, 1\]"):
        PredictConfig("lin.npy", "out.h5", omega_m=0.0, z=0.0)
    with pytest.raises(InputError, match="compile_mode must be one of"):
        PredictConfig("lin.npy", "out.h5", omega_m=0.3, z=0.0, compile_mode="fastest")


def test_predict_outside_a_terminal_logs_its_tiles(setup, tmp_path, capsys, monkeypatch):
    """stderr is not a terminal under pytest: no bar, but tile lines on the progress logger for the work
    that took long enough (here every line: the threshold is set to 0), ending with the last tile."""
    import emu_backend.cli._common as common
    import emu_backend.pipelines.steps as steps

    d, _, _ = setup
    monkeypatch.setattr(steps, "LONG_STEP_S", 0.0)
    monkeypatch.setattr(common, "LONG_STEP_S", 0.0)
    assert main(args(d, tmp_path / "p.h5")) == 0
    err = capsys.readouterr().err
    lines = re.findall(r"predict: tile (\d+)/(\d+), \d+\.\d s", err)
    assert lines and lines[-1] == ("8", "8"), err  # 16^3 in 8^3 tiles
    assert [int(a) for a, _ in lines] == sorted(int(a) for a, _ in lines)


def test_tile_log_throttles_to_one_line_per_long_step(monkeypatch, caplog):
    """One line per LONG_STEP_S of work and one for the last tile, on a controlled clock; a new stream
    (the next redshift) restarts the count."""
    import logging

    import emu_backend.pipelines.steps as steps

    clock = iter([0.0, 0.5, 1.0, 2.5, 3.0, 5.0, 10.0, 10.1, 10.2])
    monkeypatch.setattr(steps.time, "perf_counter", lambda: next(clock))
    log = steps.TileLog("predict")  # t0 = 0.0
    with caplog.at_level(logging.INFO, logger=steps.PROGRESS_LOGGER):
        for tile in (1, 2, 3, 4, 5, 6):  # at t = 0.5, 1, 2.5, 3, 5, 10 of 6 tiles
            log(tile, 6)
        log(1, 2), log(2, 2)  # a second stream at t = 10.1, 10.2
    got = [r.getMessage().split(",")[0] for r in caplog.records]
    assert got == ["predict: tile 3/6", "predict: tile 5/6", "predict: tile 6/6", "predict: tile 2/2"]
