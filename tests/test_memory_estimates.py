"""Peak-memory estimates (emu_backend.inference.memory) against measured peaks; the available memory; the
refusals they drive and their overrides.

Calibration: each case runs in a fresh interpreter that builds its inputs, resets its peak resident set
(writing 5 to /proc/self/clear_refs), runs the job and reports ``VmHWM`` less the resident set before
the job. The estimate must bound that from above, by at most a factor of 2: the stated margin of
constants rounded up from such measurements (allocators, BLAS builds and load move the real peak).
Linux only (procfs).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import emu_backend.inference.memory as memory
from emu_backend.cli.main import main
from emu_backend.errors import ResourceError
from emu_backend.inference import EmuConvention, Emulator, ZdepConvention
from emu_backend.inference.memory import (
    MemoryEstimate,
    available_memory,
    box_bytes,
    check_memory,
    format_bytes,
    pm_bytes,
    tile_pass_estimate,
    training_estimate,
)
from emu_backend.nn import StyledVNet

MARGIN = 2.0  # estimate / measured, at most
PROCFS = Path("/proc/self/clear_refs").exists()
needs_procfs = pytest.mark.skipif(not PROCFS, reason="peak RSS is read from Linux procfs")

_PRELUDE = """
import json, sys
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
def measure(job):
    open("/proc/self/clear_refs", "w").write("5")
    rss0 = status("VmRSS")
    job()
    return status("VmHWM") - rss0
import torch
torch.set_num_threads(2)
"""


def _child(body: str, tmp_path: Path) -> dict:
    """Run ``body`` (which prints one JSON line with ``measured`` and ``estimate``) in a fresh interpreter."""
    script = tmp_path / "job.py"
    script.write_text(_PRELUDE + textwrap.dedent(body))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _assert_bounds(result: dict) -> None:
    measured, estimate = result["measured"], result["estimate"]
    ratio = estimate / measured
    print(f"measured {format_bytes(measured)}, estimated {format_bytes(estimate)} (x{ratio:.2f})")
    assert measured <= estimate <= MARGIN * measured, result


# -- calibration ---------------------------------------------------------------------------------------
@needs_procfs
@pytest.mark.parametrize("width, batch, velocity, dtype", [
    (8, 1, False, "float32"),
    (8, 1, True, "float32"),
    (16, 1, False, "float32"),
    pytest.param(8, 2, False, "float32", marks=pytest.mark.slow),
    pytest.param(8, 1, False, "float64", marks=pytest.mark.slow),  # CPU float64: im2col convolutions
])
def test_tile_pass_estimate_bounds_the_measured_peak(tmp_path, width, batch, velocity, dtype):
    result = _child(f"""
        import numpy as np
        from emu_backend.inference import Emulator, ZdepConvention
        from emu_backend.nn import StyledVNet
        torch.manual_seed(0)
        emu = Emulator(ZdepConvention(StyledVNet(2, width={width})), dtype="{dtype}")
        n = 8 * {batch}
        x = np.random.default_rng(0).normal(0.0, 1.0, (3, n, 8, 8)).astype(np.float32)
        out = [(np.zeros_like(x), np.zeros_like(x) if {velocity} else None)]
        est = emu.memory_estimate(x.shape, 8, {batch}, {velocity}).host_bytes
        peak = measure(lambda: emu.predict(x, 0.3, 0.0, tile_size=8, batch_size={batch}, velocity={velocity},
                                           out=out))
        print(json.dumps({{"measured": peak, "estimate": est}}))
    """, tmp_path)
    _assert_bounds(result)


@needs_procfs
@pytest.mark.parametrize("plot", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_run_estimate_bounds_the_measured_peak(tmp_path, plot):
    result = _child(f"""
        from emu_backend.pipelines.run import RunConfig, memory_estimate, run
        from emu_backend.simulator import get_backend
        import emu_backend.pipelines.plot, emu_backend.validation.power  # imports are not the run's memory
        config = RunConfig(grid=128, z=(0.0, 1.0), backend="za", plot={plot}, out="out", overwrite=True)
        est = memory_estimate(config, get_backend("za")).host_bytes
        peak = measure(lambda: run(config))
        print(json.dumps({{"measured": peak, "estimate": est}}))
    """, tmp_path)
    _assert_bounds(result)


@needs_procfs
def test_make_training_set_estimate_bounds_the_measured_peak(tmp_path):
    result = _child("""
        from emu_backend.cosmology import QUIJOTE_FIDUCIAL
        from emu_backend.simulator import get_backend
        from emu_backend.training.make_set import make_training_set, memory_estimate
        est = memory_estimate(128, 2, get_backend("2lpt")).host_bytes
        peak = measure(lambda: make_training_set("set", [QUIJOTE_FIDUCIAL], grid=128, z=[0.0, 1.0], backend="2lpt",
                                                 progress=False))
        print(json.dumps({"measured": peak, "estimate": est}))
    """, tmp_path)
    _assert_bounds(result)


@needs_procfs
@pytest.mark.slow
def test_training_estimate_bounds_the_measured_peak(tmp_path):
    result = _child("""
        from emu_backend.cosmology import QUIJOTE_FIDUCIAL
        from emu_backend.inference.memory import training_estimate
        from emu_backend.training.make_set import make_training_set
        from emu_backend.training.trainer import TrainConfig, train
        made = make_training_set("set", [QUIJOTE_FIDUCIAL], grid=16, z=[0.0, 1.0], backend="2lpt", progress=False)
        config = TrainConfig(width=4, crop=8, batch=1, steps=1, augment=False)
        est = training_estimate("t", width=4, crop=8, crops_per_rank=1, data_bytes=0).host_bytes
        peak = measure(lambda: train(config, list(made.files), [], "run", progress=False))
        print(json.dumps({"measured": peak, "estimate": est}))
    """, tmp_path)
    _assert_bounds(result)


# -- the model's structure -------------------------------------------------------------------------------
def _emulator(width=4, dtype="float32", kind="zdep"):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if kind == "zdep":
            return Emulator(ZdepConvention(StyledVNet(2, width=width)), dtype=dtype)
        return Emulator(EmuConvention(StyledVNet(1, width=width), StyledVNet(1, width=width)), dtype=dtype)


def test_tile_estimate_follows_the_tiles_not_the_box():
    emu = _emulator()
    small, big = emu.memory_estimate((3, 16, 16, 16), 128, 1), emu.memory_estimate((3, 1024, 1024, 1024), 16, 1)
    assert "112x112x112 input cells" in small.what and "112x112x112 input cells" in big.what  # tile capped by the box
    scan = 3 * 64 * 1024 * 1024 * 5 - 3 * 16 * 16 * 16 * 5  # only the input's scan block grows with the box
    assert big.host_bytes - small.host_bytes == scan
    # a batch never holds more tiles than the box has
    assert emu.memory_estimate((3, 16, 16, 16), 8, 100).host_bytes == emu.memory_estimate((3, 16, 16, 16), 8, 8).host_bytes
    assert "batches of 8 tile(s)" in emu.memory_estimate((3, 16, 16, 16), 8, 100).what


def test_velocity_float64_and_model_kind_scale_the_activations():
    zdep, emu_kind = _emulator(width=64), _emulator(width=64, kind="emu")
    shape = (3, 8, 8, 8)
    plain, dual = zdep.memory_estimate(shape, 8, 1, False).host_bytes, zdep.memory_estimate(shape, 8, 1, True).host_bytes
    assert dual > plain * 1.5  # the forward-mode tangent doubles the w-channel activations
    assert emu_kind.memory_estimate(shape, 8, 1, True).host_bytes < dual  # v2v runs after d2d: no tangent
    f64 = _emulator(width=64, dtype="float64").memory_estimate(shape, 8, 1, False).host_bytes
    assert f64 > 3 * plain  # 8-byte floats and the CPU's im2col buffer (27 w floats per voxel)


def test_device_estimates_split_host_and_device():
    est = tile_pass_estimate("x", width=64, input_size=(224,) * 3, batch=1, device="cuda:0")
    assert est.device == "cuda:0" and est.device_bytes > 10 * 2**30 > est.host_bytes
    cpu = tile_pass_estimate("x", width=64, input_size=(224,) * 3, batch=1)
    assert cpu.device_bytes == 0 and cpu.host_bytes >= est.device_bytes
    train = training_estimate("t", width=8, crop=8, crops_per_rank=1, device="cuda:1")
    assert train.device == "cuda:1" and train.device_bytes > train.host_bytes


def test_issue_sizes_are_far_beyond_a_workstation():
    """The sizes of issue #20 (run -n 4096 and 1024, a batch of 27 tiles at width 64, make-training-set
    --grid 4096 with JaxPM's mesh factor 3) estimate above 0.5 TiB."""
    assert box_bytes(4096, 2, backend="za", plot=True, baseline=True) > 2**40 * 30
    assert box_bytes(1024, 2, backend="za", plot=True, baseline=True) > 2**39
    assert tile_pass_estimate("x", width=64, input_size=(224,) * 3, batch=27, velocity_dual=True).host_bytes > 2**39
    assert box_bytes(4096, 5, sample=True, pm=pm_bytes(4096, 3, "jaxpm")) > 2**50


# -- available memory and the refusal ---------------------------------------------------------------------
def test_available_memory_reads_meminfo_and_a_cgroup_limit(tmp_path, monkeypatch):
    n, source = available_memory()
    if Path("/proc/meminfo").exists():
        assert n is not None and n > 0 and source
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "memory.max").write_text(f"{4 * 2**30}\n")
    (cg / "memory.current").write_text(f"{3 * 2**30}\n")
    (cg / "memory.stat").write_text(f"anon 100\ninactive_file {2**29}\n")
    monkeypatch.setattr(memory, "_CGROUP_V2", cg)
    n, source = available_memory()
    assert n == 2**30 + 2**29 and "cgroup" in source  # the limit less the usage, page cache excepted
    (cg / "memory.max").write_text("max\n")  # no limit: MemAvailable again
    assert "cgroup" not in available_memory()[1]


def _machine(monkeypatch, host_gib: float, device_gib: float | None = None):
    def fake(device="cpu"):
        if torch.device(device).type == "cuda":
            return int(device_gib * 2**30), f"free memory of {device}"
        return int(host_gib * 2**30), "MemAvailable of /proc/meminfo"
    monkeypatch.setattr(memory, "available_memory", fake)


def test_check_memory_names_the_estimate_the_available_memory_and_the_flag(monkeypatch):
    _machine(monkeypatch, 1.0, 2.0)
    check_memory(MemoryEstimate("small", 2**29))
    with pytest.raises(ResourceError) as info:
        check_memory(MemoryEstimate("a big job", 3 * 2**30, advice="use less"))
    assert str(info.value) == ("a big job needs about 3 GiB of memory at its peak (estimated), but 1 GiB is available "
                               "(MemAvailable of /proc/meminfo); use less, or pass --ignore-memory-check "
                               "(check_memory=False) to try anyway")
    with pytest.raises(ResourceError, match=r"needs about 3 GiB of memory on cuda:0 .* but 2 GiB is available "
                                            r"\(free memory of cuda:0\)"):
        check_memory(MemoryEstimate("gpu job", 2**29, 3 * 2**30, "cuda:0"))
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": (None, "unknown"))
    check_memory(MemoryEstimate("anything", 2**60))  # unknown: not checked


def test_emulator_refuses_and_check_memory_false_runs(monkeypatch):
    _machine(monkeypatch, 0.01)
    x = np.zeros((3, 8, 8, 8), np.float32)
    with pytest.raises(ResourceError, match=r"emulating a 8x8x8 box .*needs about"):
        _emulator().predict(x, 0.3, 0.0, tile_size=8)
    emu = _emulator()
    emu.check_memory = False
    assert emu.predict(x, 0.3, 0.0, tile_size=8, velocity=False).displacement.shape == x.shape


def test_cli_ignore_memory_check(monkeypatch, tmp_path, capsys):
    _machine(monkeypatch, 0.01)
    argv = ["run", "--backend", "za", "-n", "8", "--z", "0", "--no-plot", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "--ignore-memory-check" in capsys.readouterr().err
    assert main([*argv, "--ignore-memory-check"]) == 0
    np.save(tmp_path / "lin.npy", np.zeros((3, 8, 8, 8), np.float32))
    weights = tmp_path / "w.emu"
    _emulator(width=2).save(weights)
    argv = ["predict", str(tmp_path / "lin.npy"), str(tmp_path / "o.h5"), "--omega-m", "0.3", "--z", "0",
            "--weights", str(weights), "--tile", "8", "--no-velocity"]
    assert main(argv) == 2
    assert "needs about" in capsys.readouterr().err and not (tmp_path / "o.h5").exists()
    assert main([*argv, "--ignore-memory-check"]) == 0 and (tmp_path / "o.h5").exists()


def test_train_and_make_set_flags_reach_the_library():
    import argparse

    from emu_backend.cli import make_training_set as cli_set
    from emu_backend.cli import train as cli_train

    for module, argv in ((cli_train, ["--data", "d", "--out", "o"]), (cli_set, ["--out", "o", "--n-sims", "1"])):
        p = argparse.ArgumentParser()
        module.add_arguments(p)
        assert module.config_from_args(p.parse_args(argv)).check_memory is True
        assert module.config_from_args(p.parse_args([*argv, "--ignore-memory-check"])).check_memory is False
