"""The coordinates NUTS moves in: the white noise preconditioned per Fourier mode and, when cosmology is
inferred, partially centred on the linear field's amplitude.

Why centring. With Omega_m or sigma8 inferred, the white noise ``w`` and the parameters ``theta`` meet in
the linear field ``delta_k = a_k(theta) w_k`` (``a_k`` the linear amplitude of mode ``k`` at the data's
redshift, growth included): on the scales the data measure, ``delta_k`` is pinned, so a move of ``theta``
that changes ``a_k`` by a factor must be matched by the opposite factor on every measured ``w_k`` at once --
a thin curved ridge in ``(w, theta)`` that a diagonal mass matrix crosses only in tiny steps (the 8^3
emulator calibration of docs/field_level.md: R-hat 1.2-1.6 after 200 steps). In the *centred* coordinates
``delta_k`` itself the ridge is straight (``theta`` moves with the field fixed) but on the noise-dominated
scales the field's prior ``N(0, a_k(theta)^2)`` ties ``theta`` to thousands of unmeasured modes -- the
funnel of hierarchical models. The partially non-centred parametrisation (Papaspiliopoulos, Roberts &
Skold 2007, Statist. Sci. 22, 59) takes for each mode the fraction ``c_k`` of its posterior precision that
the data give: centred where the data dominate, non-centred where the prior does. With the preconditioner's
posterior std ``A_k`` per mode (in units of the prior's), ``c_k = 1 - A_k^2``, and

    w_k = m_k(theta) u_k,    m_k(theta) = A_k (a_k(theta_ref) / a_k(theta))^(c_k)

(``theta_ref`` the chains' starting parameters, where the map is the plain preconditioner ``A``). The map
is linear in ``u`` for fixed ``theta``, a Fourier multiplier: its Jacobian determinant is the product of
``m_k`` over all ``N^3`` modes of the complex FFT, and the density of ``(u, theta)`` is the posterior at
``w(u, theta)`` times that product, so the posterior of ``(w, theta)`` is exactly the one of
:class:`~.likelihood.FieldLikelihood` whatever ``A``, ``c`` and ``theta_ref``: they only change how NUTS
moves. Modes with no linear amplitude (``k = 0`` and the Nyquist planes, zero in the linear field) are not
centred.

``a_k(theta)`` is the linear model's (:class:`~emu_backend.differentiable.ForwardModel`,
``dynamics="linear"``) response to a unit impulse, at the model's redshift and linear P(k), computed in
torch so that gradients reach ``theta``; redshift-space distortions are not in it (centring is a choice of
coordinates: an approximate ``a_k`` costs mixing, never correctness).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from ..checks import check_bool, check_real
from ..differentiable import ForwardModel
from ..errors import InputError
from ..ics.grid import nyquist_mask
from .likelihood import COSMOLOGY_PARAMETERS, FieldLikelihood
from .precondition import from_noise, to_noise

__all__ = ["NoiseCoordinates", "likelihood_reference", "linear_amplitude", "linear_twin", "mode_multiplicity"]


def mode_multiplicity(n: int) -> np.ndarray:
    """How many modes of the complex FFT of a real (n, n, n) field each ``rfftn`` entry stands for (1 or 2).

    The planes ``k_z = 0`` and (n even) ``k_z = n / 2`` hold their own conjugates; the others stand for a mode
    and its conjugate. Shape (1, 1, n // 2 + 1), broadcasting over ``rfftn``'s layout.
    """
    weight = np.full(n // 2 + 1, 2.0)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    return weight[None, None, :]


def linear_amplitude(model: ForwardModel, theta: dict, *, linear: ForwardModel | None = None) -> torch.Tensor:
    """``a_k(theta)``: the linear density of mode ``k`` at the model's redshift per unit white noise.

    Parameters
    ----------
    model : ForwardModel
        A model (any dynamics) whose grid, box, first redshift, cosmology and linear P(k) are used.
    theta : dict
        Cosmological parameters that differ from ``model.cosmology`` (floats or 0-d tensors; gradients flow).
    linear : ForwardModel, optional
        ``model``'s linear twin, when the caller keeps one (built here otherwise).

    Returns
    -------
    Tensor, shape (N, N, N // 2 + 1), float64
        ``rfftn``'s layout; positive, except at ``k = 0`` and on the Nyquist planes (zero up to round-off).
    """
    n = model.grid
    if linear is None:
        linear = linear_twin(model)
    impulse = torch.zeros((n,) * 3, dtype=torch.float64)
    impulse[0, 0, 0] = 1.0
    return torch.fft.rfftn(linear(impulse, **theta)).real


def linear_twin(model: ForwardModel) -> ForwardModel:
    """The linear-dynamics model of ``model``'s grid, box, first redshift, cosmology and linear P(k)."""
    return ForwardModel(model.grid, model.box_size, model.zs[0], dynamics="linear", cosmology=model.cosmology,
                        power=model.power)


@dataclass(frozen=True, eq=False)
class NoiseCoordinates:
    """``w = m(theta) u``: the white noise of the chains' coordinates ``u`` (module docstring).

    Parameters
    ----------
    model : ForwardModel
        The posterior's forward model (for ``a_k(theta)``).
    scale : ndarray, shape (N, N, N // 2 + 1)
        ``A_k``, the posterior std per mode in units of the prior's (in (0, 1]; :mod:`.precondition`).
    reference : dict
        ``theta_ref``: the inferred parameters' values where ``m = A`` (the chains' start); empty when no
        parameter is inferred, and then nothing is centred.
    centre : bool
        Centre partially (``c_k = 1 - A_k^2``); False: ``c_k = 0``, ``m = A`` (plain preconditioning).

    Examples
    --------
    >>> import numpy as np
    >>> from emu_backend.differentiable import ForwardModel
    >>> fm = ForwardModel(8, 250.0, 0.5, dynamics="linear")
    >>> coords = NoiseCoordinates(fm, np.full((8, 8, 5), 0.5), {"sigma8": 0.8})
    >>> u = np.random.default_rng(0).normal(size=(8, 8, 8))
    >>> w = coords.to_noise(u, {"sigma8": 0.9})  # the white noise at sigma8 = 0.9
    >>> bool(np.allclose(coords.from_noise(w, {"sigma8": 0.9}), u))
    True
    """

    model: ForwardModel
    scale: np.ndarray
    reference: dict
    centre: bool = True
    centring: np.ndarray | None = field(init=False, repr=False)
    _amplitude_ref: torch.Tensor | None = field(init=False, repr=False)
    _linear: ForwardModel | None = field(init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.model, ForwardModel):
            raise InputError(f"model must be a ForwardModel, got {type(self.model).__name__}")
        n = self.model.grid
        scale = np.asarray(self.scale, np.float64)
        if scale.shape != (n, n, n // 2 + 1):
            raise InputError(f"scale must have the rfft shape {(n, n, n // 2 + 1)} of the model's grid, "
                             f"got {scale.shape}")
        if not np.all((scale > 0) & (scale <= 1)):
            raise InputError(f"scale must lie in (0, 1] (a posterior std in units of the prior's), got values in "
                             f"[{scale.min()!r}, {scale.max()!r}]")
        object.__setattr__(self, "scale", scale)
        if not isinstance(self.reference, dict) or not set(self.reference) <= set(COSMOLOGY_PARAMETERS):
            raise InputError(f"reference must map parameters among {COSMOLOGY_PARAMETERS} to values, got "
                             f"{self.reference!r}")
        object.__setattr__(self, "reference", {k: check_real(v, f"reference {k}", 0.0, lo_open=True)
                                               for k, v in self.reference.items()})
        check_bool(self.centre, "centre")
        if not (self.centre and self.reference):
            object.__setattr__(self, "centring", None)
            object.__setattr__(self, "_amplitude_ref", None)
            object.__setattr__(self, "_linear", None)
            return
        object.__setattr__(self, "_linear", linear_twin(self.model))
        with torch.no_grad():
            a_ref = linear_amplitude(self.model, self.reference, linear=self._linear)
        keep = nyquist_mask(self.model.grid)  # the linear field's modes: k = 0 and the Nyquist planes are zero
        keep[0, 0, 0] = False
        c = np.where(keep, 1.0 - scale**2, 0.0)
        object.__setattr__(self, "centring", c)
        object.__setattr__(self, "_amplitude_ref", a_ref)

    @property
    def names(self) -> tuple:
        """The inferred parameters' names, in the order :meth:`log_ratio` takes them."""
        return tuple(self.reference)

    def log_ratio(self, *theta: torch.Tensor) -> torch.Tensor:
        """``c_k log(a_k(theta_ref) / a_k(theta))`` (N, N, N // 2 + 1), float64, differentiable in ``theta``.

        ``theta``: the inferred parameters' values in the order of :attr:`names` (0-d tensors or floats).
        Zero without centring.
        """
        n = self.model.grid
        if self.centring is None:
            return torch.zeros((n, n, n // 2 + 1), dtype=torch.float64)
        a = linear_amplitude(self.model, dict(zip(self.names, theta)), linear=self._linear)
        c = torch.from_numpy(self.centring)
        centred = c > 0
        a_ref = self._amplitude_ref
        safe = torch.where(centred, a, torch.ones_like(a))
        return torch.where(centred, c * (torch.log(torch.where(centred, a_ref, torch.ones_like(a_ref)))
                                         - torch.log(safe)), torch.zeros_like(a))

    def log_det(self, log_ratio: torch.Tensor | np.ndarray):
        """``log |det dw/du|`` less its value at ``theta_ref``: the multiplicity-weighted sum of ``log_ratio``."""
        weight = mode_multiplicity(self.model.grid)
        if isinstance(log_ratio, torch.Tensor):
            return (torch.from_numpy(weight) * log_ratio).sum()
        return (weight * log_ratio).sum()

    def _multiplier(self, theta: dict) -> np.ndarray:
        if self.centring is None:
            return self.scale
        with torch.no_grad():
            ratio = self.log_ratio(*(float(theta[k]) for k in self.names)).numpy()
        return self.scale * np.exp(ratio)

    def to_noise(self, u: np.ndarray, theta: dict) -> np.ndarray:
        """The white noise (N, N, N) of coordinates ``u`` (N, N, N) at the parameters ``theta``."""
        return to_noise(np.asarray(u, np.float64), self._multiplier(theta))

    def from_noise(self, w: np.ndarray, theta: dict) -> np.ndarray:
        """The coordinates ``u`` of a white noise ``w`` (N, N, N) at the parameters ``theta``."""
        return from_noise(np.asarray(w, np.float64), self._multiplier(theta))

    def digest(self) -> str:
        """SHA-256 of what defines the coordinates (``A``, ``c``, ``theta_ref``): recorded with the chains."""
        h = hashlib.sha256(np.ascontiguousarray(self.scale).tobytes())
        if self.centring is not None:
            h.update(np.ascontiguousarray(self.centring).tobytes())
            h.update(json.dumps(self.reference, sort_keys=True).encode())
        return h.hexdigest()


def likelihood_reference(lik: FieldLikelihood, init: dict | None) -> dict:
    """``theta_ref``: the inferred parameters at the chains' start (``init``, else the middle of the boxes)."""
    if init is None:
        return {k: sum(lik.priors.bounds(k)) / 2 for k in lik.infer}
    return {k: float(init[k]) for k in lik.infer}
