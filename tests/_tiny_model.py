"""Shared test inputs: a seeded narrow zdep model file and a random linear displacement field."""

from pathlib import Path

import numpy as np
import torch

from emu_backend.inference import Emulator, ZdepConvention
from emu_backend.nn import StyledVNet


def seeded_model_file(path, width: int = 4, seed: int = 0) -> tuple[Path, str]:
    """Save a seeded random zdep network of ``width`` to ``path`` (the caller's RNG state is untouched);
    returns the path and the checksum stored in the file."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        emu = Emulator(ZdepConvention(StyledVNet(2, width=width)))
    return Path(path), emu.save(path)


def random_linear(n: int, seed: int, sigma: float = 2.0) -> np.ndarray:
    """A (3, n, n, n) float32 Gaussian field of rms ``sigma`` [Mpc/h]: a stand-in linear displacement."""
    return np.random.default_rng(seed).normal(0, sigma, (3, n, n, n)).astype(np.float32)
