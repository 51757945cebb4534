"""The physics around the network: styles, normalisations and velocities of the two published models.

Both act on batches of tiles of the z = 0 linear displacement [Mpc/h], bring them to the networks' units
(:mod:`emu_backend.nn.normalisation`) and return the nonlinear displacement [Mpc/h] and peculiar velocity
[km/s] of the tile centres (input - 96 cells). :func:`zdep_forward` is the map2map_zdep forward pass in
network units, shared by inference and training.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import numpy as np
import torch

from ..checks import check_choice
from ..cosmology.growth import growth_factor, growth_rate
from ..errors import InputError
from ..nn import Dual, StyledVNet
from ..nn.normalisation import DIS_STD_MPC_H, V2V_REF_OMEGA_M, velocity_norm
from ..nn.styled_conv import foldable_tangent
from .acceleration import compiled
from .domain import TrainingDomain

__all__ = ["ModelConvention", "ZdepConvention", "EmuConvention", "zdep_style", "emu_style", "zdep_forward"]

log = logging.getLogger(__name__)


def emu_style(omega_m: float, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """map2map_emu style ``(Om - 0.3) * 5`` computed in float32 as the reference does, shape (1,)."""
    om = torch.tensor([np.float32(omega_m)], dtype=torch.float32)
    return ((om - np.float32(0.3)) * np.float32(5.0)).to(device=device, dtype=dtype)


def zdep_style(omega_m: torch.Tensor, dz: torch.Tensor) -> torch.Tensor:
    """map2map_zdep style ``[(Om - 0.3) * 5, D - 1]`` from 0-d tensors, shape (2,)."""
    return torch.stack([(omega_m - 0.3) * 5, dz - 1])


def zdep_forward(net, x: torch.Tensor, omega_m: torch.Tensor, dz: torch.Tensor, *, velocity: bool = True,
                 method: str = "dual", runner=None):
    """The map2map_zdep forward pass in network units (SPEC 3.2), for inference and training alike.

    Parameters
    ----------
    net : StyledVNet (or a DDP wrapper of one)
    x : Tensor, shape (B, 3, n, n, n)
        z = 0 linear displacement in network units (Mpc/h / :data:`~emu_backend.nn.DIS_STD_MPC_H`).
    omega_m, dz : Tensor
        0-d Omega_m and growth factor D(z, Omega_m), in ``x``'s dtype and device.
    velocity : bool
        Also return the derivative of the output with respect to D.
    method : {"dual", "jvp"}
        ``"dual"``: folded-weight forward mode (one extra convolution per layer); ``"jvp"``:
        ``torch.func.jvp`` through ``net`` (the reference formulation).
    runner : callable, optional
        What runs ``net`` (e.g. its ``torch.compile`` wrapper); default ``net`` itself. ``"jvp"`` always
        runs ``net`` eagerly.

    Returns
    -------
    (Tensor, Tensor or None), each (B, 3, n-96, n-96, n-96)
        Output displacement and its D-derivative, both in network units (None without ``velocity``).
    """
    run = net if runner is None else runner
    if not velocity:
        return run(x * dz, zdep_style(omega_m, dz)), None
    if method == "jvp":
        return torch.func.jvp(lambda d: net(x * d, zdep_style(omega_m, d)), (dz,), (torch.ones_like(dz),))
    # d/dD of (x D, [(Om-0.3)*5, D-1]) is (x, [0, 1])
    tangent = torch.tensor([0.0, 1.0], dtype=dz.dtype, device=dz.device)
    return run(Dual(x * dz, x), Dual(zdep_style(omega_m, dz), tangent))


class ModelConvention(ABC):
    """A published model convention around one or two :class:`StyledVNet` networks."""

    kind: str
    domain: TrainingDomain

    @property
    @abstractmethod
    def networks(self) -> dict[str, StyledVNet]:
        """The networks by role (``"displacement"``, ``"velocity"``)."""

    @property
    @abstractmethod
    def has_velocity(self) -> bool:
        """Whether velocities can be predicted."""

    def compile(self, mode: str | None) -> "ModelConvention":
        """Run the networks through ``torch.compile`` with ``mode`` from now on (None: eager again).

        See :func:`emu_backend.inference.acceleration.compiled`; the networks themselves are unchanged.
        """
        self._runners = {role: compiled(net, mode) for role, net in self.networks.items()}
        return self

    def _net(self, role: str):
        """The callable that runs network ``role`` (compiled or the network itself)."""
        runners = getattr(self, "_runners", None) or {}
        return runners.get(role, self.networks[role])

    def to(self, device=None, dtype=None) -> "ModelConvention":
        """Move every network (in place) and return self."""
        for net in self.networks.values():
            net.to(device=device, dtype=dtype).eval()
        return self

    @abstractmethod
    def predict_tiles(self, x: torch.Tensor, omega_m: float, z: float, velocity: bool):
        """Run a batch of tiles.

        Parameters
        ----------
        x : Tensor
            (B, 3, n, n, n) z = 0 linear displacement [Mpc/h], on the model's device.
        omega_m, z : float
        velocity : bool

        Returns
        -------
        (Tensor, Tensor or None)
            Displacement [Mpc/h] and velocity [km/s], each (B, 3, n-96, n-96, n-96).
        """


class ZdepConvention(ModelConvention):
    """map2map_zdep: style ``[(Om-0.3)*5, D(z)-1]``, input scaled by ``D(z)`` inside the model,
    velocity = forward-mode derivative of the output with respect to D (SPEC 3.2)."""

    kind = "zdep"
    VELOCITY_METHODS = ("dual", "jvp")

    def __init__(self, net: StyledVNet, domain: TrainingDomain | None = None, velocity_method: str = "dual"):
        if net.arch.style_size != 2:
            raise InputError(f"map2map_zdep needs style_size 2, got {net.arch.style_size}")
        check_choice(velocity_method, "velocity_method", self.VELOCITY_METHODS)
        self.net = net.eval()
        self.domain = domain or TrainingDomain()
        #: "dual": folded-weight forward mode, one extra convolution per layer (default);
        #: "jvp": torch.func.jvp through the network (the reference formulation, slower; always eager)
        self.velocity_method = velocity_method

    @property
    def networks(self):
        return {"displacement": self.net}

    @property
    def has_velocity(self) -> bool:
        return True

    def predict_tiles(self, x, omega_m, z, velocity):
        ref = next(self.net.parameters())
        om = torch.tensor(float(omega_m), dtype=ref.dtype, device=ref.device)
        dz = torch.tensor(float(growth_factor(z, omega_m)), dtype=ref.dtype, device=ref.device)
        run = self._net("displacement")
        if velocity and run is not self.net and not foldable_tangent(self.net, zdep_style(om, dz)):
            log.info("a layer's modulation is below 1e-3 at Om=%g, z=%g: eager forward mode", omega_m, z)
            run = self.net  # the compiled graph has only the one-convolution tangent
        with torch.no_grad():
            out, dout_dd = zdep_forward(self.net, x / DIS_STD_MPC_H, om, dz, velocity=velocity,
                                        method=self.velocity_method, runner=run)
            if not velocity:
                return out * DIS_STD_MPC_H, None
            return out * DIS_STD_MPC_H, dout_dd * float(velocity_norm(z, omega_m))


class EmuConvention(ModelConvention):
    """map2map_emu: z = 0 only; d2d network for displacements, optional v2v network for velocities
    (input scaled by ``f(0,Om)/f(0,0.31)``, output times ``600 f(0,0.31)`` km/s, SPEC 3.1)."""

    kind = "emu"

    def __init__(self, d2d: StyledVNet, v2v: StyledVNet | None = None, domain: TrainingDomain | None = None):
        for name, net in (("d2d", d2d), ("v2v", v2v)):
            if net is not None and net.arch.style_size != 1:
                raise InputError(f"map2map_emu {name} needs style_size 1, got {net.arch.style_size}")
        self.d2d = d2d.eval()
        self.v2v = v2v.eval() if v2v is not None else None
        self.domain = domain or TrainingDomain(z=(0.0, 0.0))

    @property
    def networks(self):
        nets = {"displacement": self.d2d}
        if self.v2v is not None:
            nets["velocity"] = self.v2v
        return nets

    @property
    def has_velocity(self) -> bool:
        return self.v2v is not None

    def predict_tiles(self, x, omega_m, z, velocity):
        ref = next(self.d2d.parameters())
        style = emu_style(omega_m, dtype=ref.dtype, device=ref.device)
        om32 = float(np.float32(omega_m))
        with torch.no_grad():
            x = x / DIS_STD_MPC_H
            dis = self._net("displacement")(x, style) * DIS_STD_MPC_H
            vel = None
            if velocity:
                f_ref = float(growth_rate(0.0, V2V_REF_OMEGA_M))
                scale_in = float(growth_rate(0.0, om32)) / f_ref
                vel = self._net("velocity")(x * scale_in, style) * (DIS_STD_MPC_H * 100.0 * f_ref)
        return dis, vel
