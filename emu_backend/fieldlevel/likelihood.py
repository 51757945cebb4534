"""The field-level posterior: a forward model's density against an observed density with Gaussian noise.

``log p(w, theta | d) = sum_mask log N(d | delta(w, theta), sigma) + sum log N(w | 0, 1) + log U(theta)``

with ``w`` the initial white noise (N^3 values), ``theta`` the inferred cosmological parameters
(Omega_m and/or sigma8, uniform box priors inside the emulator's trained domain), ``delta`` the forward
model's density on the data's mesh (:class:`~emu_backend.differentiable.ForwardModel`, real or redshift
space), ``sigma`` a noise level or a per-voxel noise map and ``mask`` the observed voxels. The torch
densities (``torch.distributions``) are used by the MAP; the sampler builds the same posterior as a
numpyro model (:mod:`.sampling`), and the tests check that the two agree.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import check_real
from ..differentiable import ForwardModel
from ..errors import DomainError, InputError

__all__ = ["COSMOLOGY_PARAMETERS", "FieldLikelihood", "Priors"]

#: Cosmological parameters the field-level posterior can infer (the others stay at the model's cosmology).
COSMOLOGY_PARAMETERS = ("omega_m", "sigma8")
#: sigma8 range of the Quijote Latin hypercube the published emulator was trained on.
SIGMA8_TRAINED = (0.6, 1.0)


@dataclass(frozen=True)
class Priors:
    """Uniform (box) priors of the inferred cosmological parameters.

    Parameters
    ----------
    omega_m : (float, float)
        Omega_m range; default the shipped emulator's trained range.
    sigma8 : (float, float)
        sigma8 range; default the Quijote Latin hypercube's (the emulator's training set).
    """

    omega_m: tuple = (0.1, 0.5)
    sigma8: tuple = SIGMA8_TRAINED

    def __post_init__(self):
        for name in COSMOLOGY_PARAMETERS:
            box = getattr(self, name)
            if not isinstance(box, (tuple, list)) or len(box) != 2:
                raise InputError(f"prior {name} must be a (low, high) pair, got {box!r}")
            lo = check_real(box[0], f"prior {name} low", 0.0, lo_open=True)
            hi = check_real(box[1], f"prior {name} high", lo, lo_open=True)
            object.__setattr__(self, name, (lo, hi))

    def bounds(self, name: str) -> tuple[float, float]:
        """(low, high) of parameter ``name``."""
        return getattr(self, name)


def _as_mesh(value, name: str, shape: tuple, dtype) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != shape:
        raise InputError(f"{name} must have the forward model's mesh shape {shape}, got {arr.shape}")
    arr = arr.astype(dtype, copy=False)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains non-finite values")
    return arr


class FieldLikelihood:
    """The posterior of white noise and cosmology given an observed density mesh.

    Parameters
    ----------
    model : ForwardModel
        Output ``"density"`` or ``"rsd_density"`` at one redshift; its mesh is the data's.
    data : array, shape (n_mesh, n_mesh, n_mesh)
        Observed overdensity.
    noise_sigma : float or array of that shape
        Standard deviation of the Gaussian noise per voxel (> 0).
    mask : bool array of that shape, optional
        Observed voxels (default all); the others do not enter the likelihood.
    infer : sequence of {"omega_m", "sigma8"}
        Cosmological parameters inferred with the noise; the others stay at ``model.cosmology``.
    priors : Priors, optional
        Box priors of the inferred parameters. With the emulator they must lie inside its trained Omega_m
        range unless the model allows extrapolation; by default Omega_m's box is that range (the shipped
        weights': 0.1086-0.4996) and sigma8's the Quijote Latin hypercube's.
    """

    def __init__(self, model: ForwardModel, data, *, noise_sigma, mask=None, infer=COSMOLOGY_PARAMETERS,
                 priors: Priors | None = None):
        if not isinstance(model, ForwardModel):
            raise InputError(f"model must be a ForwardModel, got {type(model).__name__}")
        if model.output not in ("density", "rsd_density") or not model.single:
            raise InputError(f"the likelihood compares densities at one redshift: model output must be 'density' or "
                             f"'rsd_density' at a scalar z, got {model.output!r} at z = {list(model.zs)}")
        self.model = model
        self.shape = (model.n_mesh,) * 3
        self.data = _as_mesh(data, "data", self.shape, np.float64)
        sigma = np.asarray(noise_sigma, dtype=np.float64)
        if sigma.ndim == 0:
            check_real(float(sigma), "noise_sigma", 0.0, lo_open=True)
            sigma = np.full(self.shape, float(sigma))
        sigma = _as_mesh(sigma, "noise_sigma", self.shape, np.float64)
        if not np.all(sigma > 0):
            raise InputError(f"noise_sigma must be > 0 in every voxel, got minimum {sigma.min()!r}")
        self.noise_sigma = sigma
        self.mask = np.ones(self.shape, bool) if mask is None else _as_mesh(mask, "mask", self.shape, bool)
        if not self.mask.any():
            raise InputError("mask selects no voxel")
        infer = tuple(infer)
        bad = [p for p in infer if p not in COSMOLOGY_PARAMETERS]
        if bad or len(set(infer)) != len(infer):
            raise InputError(f"infer must be distinct names among {COSMOLOGY_PARAMETERS}, got {list(infer)}")
        self.infer = tuple(p for p in COSMOLOGY_PARAMETERS if p in infer)
        if priors is None:
            priors = Priors() if model.emulator is None else Priors(omega_m=tuple(model.emulator.model.domain.omega_m))
        self.priors = priors
        if not isinstance(self.priors, Priors):
            raise InputError(f"priors must be a Priors, got {type(self.priors).__name__}")
        if model.emulator is not None and "omega_m" in self.infer and not model.allow_extrapolation:
            lo, hi = model.emulator.model.domain.omega_m
            plo, phi = self.priors.omega_m
            if plo < lo or phi > hi:
                raise DomainError(f"prior omega_m {self.priors.omega_m} leaves the emulator's trained range "
                                  f"[{lo}, {hi}]; narrow it or build the model with allow_extrapolation=True")
        self._mask_t = torch.from_numpy(self.mask)
        self._data_t = torch.from_numpy(self.data[self.mask])
        self._sigma_t = torch.from_numpy(self.noise_sigma[self.mask])

    # -- the pieces ------------------------------------------------------------------------------------------
    @property
    def n_data(self) -> int:
        """Number of observed voxels."""
        return int(self.mask.sum())

    @property
    def n_parameters(self) -> int:
        """Number of inferred values: N^3 noise values and the cosmological parameters."""
        return self.model.grid**3 + len(self.infer)

    def prediction(self, noise: torch.Tensor, **theta) -> torch.Tensor:
        """The forward model's density (n_mesh,)*3 for the noise and the inferred parameters."""
        self._check_theta(theta)
        return self.model(noise, **theta)

    def _check_theta(self, theta: dict):
        if set(theta) != set(self.infer):
            raise InputError(f"pass exactly the inferred parameters {list(self.infer)}, got {sorted(theta)}")

    def log_likelihood(self, noise: torch.Tensor, **theta) -> torch.Tensor:
        """``sum_mask log N(data | delta, sigma)`` (float64 0-d tensor, with its normalisation)."""
        delta = self.prediction(noise, **theta).to(torch.float64)
        dist = torch.distributions.Normal(delta[self._mask_t], self._sigma_t, validate_args=False)
        return dist.log_prob(self._data_t).sum()

    def log_prior(self, noise: torch.Tensor, **theta) -> torch.Tensor:
        """Standard normal prior of the noise plus the box priors of the parameters (-inf outside a box)."""
        self._check_theta(theta)
        total = torch.distributions.Normal(0.0, 1.0, validate_args=False).log_prob(noise.to(torch.float64)).sum()
        for name in self.infer:
            lo, hi = self.priors.bounds(name)
            value = theta[name] if isinstance(theta[name], torch.Tensor) else torch.tensor(float(theta[name]))
            box = torch.distributions.Uniform(torch.tensor(lo, dtype=torch.float64),
                                              torch.tensor(hi, dtype=torch.float64), validate_args=False)
            total = total + box.log_prob(value.to(torch.float64))
        return total

    def log_prob(self, noise: torch.Tensor, **theta) -> torch.Tensor:
        """The unnormalised log posterior (float64 0-d tensor); differentiable in the noise and parameters.

        Outside a prior box it is ``-inf`` without running the forward model.
        """
        prior = self.log_prior(noise, **theta)
        if not math.isfinite(float(prior.detach())):
            return prior
        return prior + self.log_likelihood(noise, **theta)

    def digest(self) -> str:
        """SHA-256 of what defines the posterior (data, noise map, mask, inferred names, priors, model setup)."""
        h = hashlib.sha256()
        for arr in (self.data, self.noise_sigma, self.mask):
            h.update(np.ascontiguousarray(arr).tobytes())
        m = self.model
        h.update(repr((self.infer, self.priors, m.grid, m.box_size, m.zs, m.output, m.dynamics, m.n_mesh, m.window,
                       m.los, m.power, m.cosmology)).encode())
        if m.emulator is not None:
            for tensor in m.net.state_dict().values():
                h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()
