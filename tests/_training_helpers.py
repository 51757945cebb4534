"""Helpers shared by the training tests (test_trainer, test_train_resume, test_train_ddp, test_provenance):
tiny seeded training-sample files and a tiny training configuration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.io.training_sample import TrainingSample, write_training_sample

#: TrainConfig arguments of a tiny, fast run (width 4, 8^3 crops).
TINY = dict(width=4, crop=8, batch=1, val_samples=1, warmup_steps=0)


def write_tiny_samples(folder, count, grid=16, zs=(0.0, 1.0), backend="2lpt", first_seed=100):
    """Tiny training samples whose targets are 2LPT (instant) at the trained cell size.

    Sample ``i`` has Omega_m spread over [0.25, 0.35] and white-noise seed ``first_seed + i``;
    returns the file paths ``folder/sim_XXX.h5``.
    """
    from emu_backend.ics import InitialConditions
    from emu_backend.simulator import simulate

    folder = Path(folder)
    paths = []
    for i in range(count):
        cosmo = QUIJOTE_FIDUCIAL.clone(omega_m=0.25 + 0.1 * i / max(1, count - 1))
        ics = InitialConditions.from_noise(grid, None, cosmo, seed=first_seed + i)
        snaps = simulate(ics, cosmo, z=list(zs), backend=backend)
        sample = TrainingSample(ics.displacement, np.asarray(zs), np.stack([s.displacement_field() for s in snaps]),
                                np.stack([s.velocity_field() for s in snaps]), ics.box_size, cosmo,
                                seed=first_seed + i, provenance={"backend": backend})
        paths.append(write_training_sample(folder / f"sim_{i:03d}.h5", sample))
    return paths
