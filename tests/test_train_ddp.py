"""DDP training: 2 gloo processes on CPU give the weights of 1 process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from _training_helpers import write_tiny_samples  # tests/_training_helpers.py

from emu_backend.errors import InputError
from emu_backend.training.checkpoint import load_latest_checkpoint
from emu_backend.training.distributed import setup_distributed

TIMEOUT = 600


def _args(train_file, val_file, out):
    return ["train", "--data", str(train_file), "--val-files", str(val_file), "--out", str(out), "--width", "4",
            "--crop", "8", "--batch", "2", "--steps", "2", "--lr", "2e-3", "--checkpoint-every", "2",
            "--val-every", "2", "--val-samples", "2", "--warmup-steps", "0", "--seed", "1", "--no-progress"]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    pytest.importorskip("torch.distributed.run", reason="torch.distributed (torchrun) is not available")
    train_file, val_file = write_tiny_samples(tmp_path / "data", 2)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "emu_backend", *_args(train_file, val_file, single)],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "emu_backend", *_args(train_file, val_file, ddp)],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert done.returncode == 0, done.stdout + done.stderr

    a, b = load_latest_checkpoint(single), load_latest_checkpoint(ddp)
    assert a["step"] == b["step"] == 2 and a["world_size"] == 1 and b["world_size"] == 2
    worst = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
    moved = min((a["model"][k] - v).abs().max().item() for k, v in _initial(a).items())
    # Rank gradients are allreduced ((g0 + g1) / 2) where the single process accumulates g0/2 + g1/2:
    # for 2 ranks these are equal in binary floating point (observed bit-identical); with more ranks
    # or another reduction order float32 round-off (~1e-7 relative) enters the gradients, and Adam
    # (update ~ lr g / |g|) turns it into weight differences ~lr * 1e-7 per step, far below 1e-6.
    assert worst < 1e-6, worst
    assert moved > 1e-4  # every tensor did train (2 steps of lr 2e-3)
    # the logged global-batch losses agree to float32 round-off as well
    rows = [(single / "log.csv").read_text().split("\n")[1:3], (ddp / "log.csv").read_text().split("\n")[1:3]]
    for ra, rb in zip(*rows):
        va, vb = ra.split(","), rb.split(",")
        assert va[0] == vb[0]
        for col in (1, 4, 5, 6, 7, 8):  # lr, loss and its components
            assert float(va[col]) == pytest.approx(float(vb[col]), rel=1e-5, abs=1e-6)


def _initial(ckpt):
    from emu_backend.training.config import TrainConfig
    from emu_backend.training.trainer import build_model

    cfg = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in ("width", "seed")})
    return build_model(cfg).state_dict()


def test_launcher_environment_is_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(InputError, match="rank 5, world size 2"):
        setup_distributed("cpu")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(InputError, match="not an integer"):
        setup_distributed("cpu")
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(InputError, match="MASTER_ADDR"):
        setup_distributed("cpu")
    if not torch.cuda.is_available():
        monkeypatch.delenv("SLURM_NTASKS")
        monkeypatch.delenv("SLURM_PROCID")
        with pytest.raises(InputError, match="CUDA is not available"):
            setup_distributed("cuda")
