"""The maximum a posteriori point of a :class:`~emu_backend.fieldlevel.FieldLikelihood`, by L-BFGS.

The optimiser is :class:`torch.optim.LBFGS` with a strong-Wolfe line search, over the white noise and,
for each inferred cosmological parameter, an unconstrained variable mapped into its prior box by
``torch.distributions.transforms`` (``biject_to(interval(low, high))``). The objective is the negative log
posterior in the parameters themselves (no Jacobian term: the mode of the posterior, not of the
unconstrained density), divided by the number of inferred values so that it is O(1).

Convergence rule (documented in docs/field_level.md): the run stops at the first outer iteration (one
``LBFGS.step`` of at most ``inner_iterations`` evaluations) that lowers the objective by less than
``rtol`` times its magnitude, or when the largest gradient component of the scaled objective falls below
``gtol``; after ``max_iterations`` outer iterations it stops unconverged (``MapResult.converged`` False,
with a warning in the log).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..checks import check_int, check_real
from ..errors import InputError
from .likelihood import FieldLikelihood

__all__ = ["MapResult", "find_map"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapResult:
    """The MAP point and the optimisation record.

    Attributes
    ----------
    noise : ndarray, shape (N, N, N)
        White noise at the MAP.
    theta : dict
        Inferred cosmological parameters at the MAP.
    log_prob : float
        Log posterior there.
    converged : bool
        Whether the convergence rule was met.
    iterations : int
        Outer L-BFGS iterations run.
    evaluations : int
        Gradient evaluations (forward + backward passes of the model).
    history : list of float
        Log posterior after each outer iteration.
    """

    noise: np.ndarray
    theta: dict
    log_prob: float
    converged: bool
    iterations: int
    evaluations: int
    history: list = field(default_factory=list)


def _transform(lik: FieldLikelihood, name: str):
    lo, hi = lik.priors.bounds(name)
    constraint = torch.distributions.constraints.interval(lo, hi)
    return torch.distributions.constraint_registry.biject_to(constraint)


def find_map(lik: FieldLikelihood, *, init_noise=None, init_theta: dict | None = None, max_iterations: int = 100,
             inner_iterations: int = 20, rtol: float = 1e-9, gtol: float = 1e-7, history_size: int = 20,
             callback: Callable[[int, float], None] | None = None) -> MapResult:
    """Maximise the log posterior of ``lik`` with L-BFGS.

    Parameters
    ----------
    lik : FieldLikelihood
    init_noise : array (N, N, N), optional
        Starting white noise (default zeros: the prior mean).
    init_theta : dict, optional
        Starting values of the inferred parameters (default the middle of each prior box).
    max_iterations : int
        Outer iterations at most (each one ``LBFGS.step``).
    inner_iterations : int
        Evaluations per outer iteration at most (``LBFGS(max_iter=...)``).
    rtol : float
        Relative decrease of the objective below which an outer iteration counts as converged.
    gtol : float
        Largest gradient component of the scaled objective (``-log p / n_parameters``) counted as zero.
    history_size : int
        L-BFGS memory.
    callback : callable, optional
        ``callback(iteration, log_prob)`` after each outer iteration (progress bars).

    Returns
    -------
    MapResult
    """
    max_iterations = check_int(max_iterations, "max_iterations", 1)
    inner_iterations = check_int(inner_iterations, "inner_iterations", 1)
    rtol = check_real(rtol, "rtol", 0.0, lo_open=True)
    gtol = check_real(gtol, "gtol", 0.0, lo_open=True)
    history_size = check_int(history_size, "history_size", 1)
    grid = (lik.model.grid,) * 3
    noise0 = np.zeros(grid) if init_noise is None else np.asarray(init_noise, dtype=np.float64)
    if noise0.shape != grid or not np.all(np.isfinite(noise0)):
        raise InputError(f"init_noise must be a finite array of shape {grid}, got shape {noise0.shape}")
    init_theta = {} if init_theta is None else dict(init_theta)
    unknown = set(init_theta) - set(lik.infer)
    if unknown:
        raise InputError(f"init_theta has parameters that are not inferred: {sorted(unknown)} (inferred: {list(lik.infer)})")
    noise = torch.tensor(noise0, dtype=torch.float64, requires_grad=True)
    transforms = {name: _transform(lik, name) for name in lik.infer}
    free = {}
    for name in lik.infer:
        lo, hi = lik.priors.bounds(name)
        start = float(init_theta.get(name, 0.5 * (lo + hi)))
        if not lo < start < hi:
            raise InputError(f"init_theta {name} = {start!r} must lie inside its prior box ({lo}, {hi})")
        u = transforms[name].inv(torch.tensor(start, dtype=torch.float64))
        free[name] = u.detach().clone().requires_grad_(True)
    scale = float(lik.n_parameters)
    opt = torch.optim.LBFGS([noise, *free.values()], lr=1.0, max_iter=inner_iterations, history_size=history_size,
                            tolerance_grad=gtol, tolerance_change=0.0, line_search_fn="strong_wolfe")
    evaluations = 0

    def theta_of():
        return {name: transforms[name](u) for name, u in free.items()}

    def closure():
        nonlocal evaluations
        opt.zero_grad()
        loss = -lik.log_prob(noise, **theta_of()) / scale
        loss.backward()
        evaluations += 1
        return loss

    history, converged, previous = [], False, math.inf
    it = 0
    for it in range(1, max_iterations + 1):
        opt.step(closure)
        with torch.no_grad():
            value = float(-lik.log_prob(noise, **theta_of()) / scale)
        history.append(-value * scale)
        if callback is not None:
            callback(it, -value * scale)
        grad_max = max(float(p.grad.abs().max()) for p in [noise, *free.values()] if p.grad is not None)
        if previous - value < rtol * abs(value) or grad_max < gtol:
            converged = True
            break
        previous = value
    if not converged:
        log.warning("MAP not converged after %d L-BFGS iterations (%d evaluations); last log posterior %.6g",
                    it, evaluations, history[-1])
    with torch.no_grad():
        theta = {name: float(t) for name, t in theta_of().items()}
    return MapResult(noise.detach().numpy().copy(), theta, history[-1], converged, it, evaluations, history)
