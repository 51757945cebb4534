"""Coverage of the Omega_m and sigma8 posteriors over repeated prior-predictive draws (the calibration tests
of tests/test_fieldlevel.py and tests/test_fieldlevel_closed_loop.py)."""

from __future__ import annotations

import numpy as np
import torch

from emu_backend.fieldlevel import FieldLikelihood, SamplerConfig, sample_posterior


def coverage(fm, repeats: int, sigma: float, *, num_warmup: int, num_samples: int, max_tree_depth: int,
             level: float = 0.9, seed: int = 31, centre: bool = True) -> dict:
    """How many of ``repeats`` central ``level`` intervals cover the drawn truth, per parameter.

    Each repeat draws Omega_m and sigma8 from their default priors' boxes (Omega_m in [0.1, 0.5] for the
    linear model), a white noise and observation noise of std ``sigma``; the data are ``fm``'s density plus
    that noise; NUTS samples the field and both parameters (one chain, seed = the repeat's index), in the
    partially centred coordinates unless ``centre`` is False (the same posterior either way).
    """
    n = fm.grid
    rng = np.random.default_rng(seed)
    covered = {"omega_m": 0, "sigma8": 0}
    q = [(1 - level) / 2, (1 + level) / 2]
    for repeat in range(repeats):
        truth = {"omega_m": rng.uniform(0.1, 0.5), "sigma8": rng.uniform(0.6, 1.0)}
        w = rng.normal(size=(n,) * 3)
        with torch.no_grad():
            data = fm(torch.from_numpy(w), **truth).numpy() + sigma * rng.normal(size=(n,) * 3)
        lik = FieldLikelihood(fm, data, noise_sigma=sigma, infer=tuple(covered))
        post = sample_posterior(lik, SamplerConfig(num_warmup=num_warmup, num_samples=num_samples, num_chains=1,
                                                   max_tree_depth=max_tree_depth, seed=repeat,
                                                   centre=centre))
        for name in covered:
            lo, hi = np.quantile(post.samples[name], q)
            covered[name] += int(lo <= truth[name] <= hi)
    return covered
