"""Kill-and-resume of training: SIGKILL at two points, resume, and get the uninterrupted run bit for bit."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _training_helpers import write_tiny_samples  # tests/_training_helpers.py

from emu_backend.errors import CheckpointError
from emu_backend.training.checkpoint import CHECKPOINT_DIR, load_latest_checkpoint, save_checkpoint

TIMEOUT = 600


def _train_cmd(train_file, val_file, out):
    return [sys.executable, "-m", "emu_backend", "train", "--data", str(train_file), "--val-files", str(val_file),
            "--out", str(out), "--width", "4", "--crop", "8", "--batch", "1", "--steps", "5", "--lr", "2e-3",
            "--checkpoint-every", "2", "--val-every", "2", "--val-samples", "1", "--warmup-steps", "0",
            "--seed", "3", "--no-progress"]


def _rows(out):
    path = Path(out) / "log.csv"
    if not path.is_file():
        return []
    lines = path.read_text().split("\n")[1:-1]  # header; the text after the last newline is partial
    return [line for line in lines if line.count(",") >= 12]


def _run_and_kill(cmd, out, kill_at_row):
    """Start ``cmd``; SIGKILL it as soon as log.csv has ``kill_at_row`` rows."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT
    while len(_rows(out)) < kill_at_row:
        if proc.poll() is not None:
            pytest.fail(f"training exited (rc {proc.returncode}) before the kill point:\n{proc.stdout.read().decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("training did not reach the kill point in time")
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _final(out):
    ckpt = load_latest_checkpoint(out)
    rows = list(csv.DictReader(open(Path(out) / "log.csv")))
    for r in rows:
        r.pop("seconds")  # wall time: the only column allowed to differ
    return ckpt, rows


@pytest.mark.slow
def test_training_resumes_bit_identically(tmp_path):
    train_file, val_file = write_tiny_samples(tmp_path / "data", 2)
    ref, run = tmp_path / "uninterrupted", tmp_path / "killed"
    done = subprocess.run(_train_cmd(train_file, val_file, ref), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr

    cmd = _train_cmd(train_file, val_file, run)
    _run_and_kill(cmd, run, 3)  # after the step-2 checkpoint, inside step 4
    assert load_latest_checkpoint(run)["step"] == 2
    _run_and_kill(cmd, run, 4)  # right after step 4's log row: the step-4 checkpoint may be mid-write
    assert load_latest_checkpoint(run)["step"] in (2, 4)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert "resumed from step" in done.stdout and "resumed from step 0" not in done.stdout

    (ckpt_ref, rows_ref), (ckpt_run, rows_run) = _final(ref), _final(run)
    assert ckpt_run["step"] == ckpt_ref["step"] == 5
    # bit-identical: same seeded draws, same operations on the same device and thread count
    for key, value in ckpt_ref["model"].items():
        assert torch.equal(value, ckpt_run["model"][key]), key
    for state_ref, state_run in zip(ckpt_ref["optimizer"]["state"].values(), ckpt_run["optimizer"]["state"].values()):
        assert all(torch.equal(state_ref[k], state_run[k]) for k in state_ref)
    assert rows_run == rows_ref and [int(r["step"]) for r in rows_ref] == [1, 2, 3, 4, 5]

    from emu_backend.checkpoints.native import load_model_file

    # the exported files hash the weights and the whole provenance (losses, steps, config, data)
    assert load_model_file(ref / "model.emu").checksum == load_model_file(run / "model.emu").checksum


_WRITER = """
import sys, torch
from emu_backend.training.checkpoint import save_checkpoint
blob = torch.arange(4_000_000, dtype=torch.float32)
for step in range(1, 10_000):
    save_checkpoint(sys.argv[1], {"blob": blob + step}, step, keep=2)
"""


def test_killed_checkpoint_write_never_looks_complete(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)])
    folder = tmp_path / CHECKPOINT_DIR
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:  # kill while a temporary (a write in progress) exists, after >= 1 complete checkpoint
            latest = folder / "latest.json"
            if latest.is_file() and any(p.name.endswith(".part") for p in folder.iterdir()):
                break
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt = load_latest_checkpoint(tmp_path)
    # the marker names a complete, checksummed file whose content is that step's
    assert torch.equal(ckpt["blob"], torch.arange(4_000_000, dtype=torch.float32) + ckpt["step"])
    for path in folder.glob("step_*.pt"):  # every file under a final name is complete
        obj = torch.load(path, weights_only=True)
        assert torch.equal(obj["blob"], torch.arange(4_000_000, dtype=torch.float32) + obj["step"])
    # a new write cleans the temporaries of the killed one
    save_checkpoint(tmp_path, {"blob": torch.zeros(1)}, 99_999)
    assert not [p for p in os.listdir(folder) if p.endswith(".part")]


def test_corrupt_or_truncated_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path, {"blob": torch.ones(1000)}, 7)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_latest_checkpoint(tmp_path)
    path.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(CheckpointError, match="sha256"):
        load_latest_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_DIR / "latest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_latest_checkpoint(tmp_path)
    assert load_latest_checkpoint(tmp_path / "empty") is None
