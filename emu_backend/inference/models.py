"""The physics around the network: styles, normalisations and velocities of the two published models.

Both act on batches of tiles of the z = 0 linear displacement in network units (Mpc/h / 6) and return
the nonlinear displacement [Mpc/h] and peculiar velocity [km/s] of the tile centres (input - 96 cells).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import numpy as np
import torch

from ..cosmology.growth import DIS_STD_MPC_H, growth_factor, growth_rate, velocity_norm
from ..errors import InputError
from ..nn import Dual, StyledVNet, foldable_tangent
from .acceleration import compiled
from .domain import TrainingDomain

__all__ = ["EmulatorModel", "ZdepModel", "EmuModel", "zdep_style", "emu_style"]

log = logging.getLogger(__name__)

#: Omega_m of the fixed velocity normalisation of map2map_emu's v2v model.
V2V_REF_OMEGA_M = 0.31


def emu_style(omega_m: float, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """map2map_emu style ``(Om - 0.3) * 5`` computed in float32 as the reference does, shape (1,)."""
    om = torch.tensor([np.float32(omega_m)], dtype=torch.float32)
    return ((om - np.float32(0.3)) * np.float32(5.0)).to(device=device, dtype=dtype)


def zdep_style(omega_m: torch.Tensor, dz: torch.Tensor) -> torch.Tensor:
    """map2map_zdep style ``[(Om - 0.3) * 5, D - 1]`` from 0-d tensors, shape (2,)."""
    return torch.stack([(omega_m - 0.3) * 5, dz - 1])


class EmulatorModel(ABC):
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

    def compile(self, mode: str | None) -> "EmulatorModel":
        """Run the networks through ``torch.compile`` with ``mode`` from now on (None: eager again).

        See :func:`emu_backend.inference.acceleration.compiled`; the networks themselves are unchanged.
        """
        self._runners = {role: compiled(net, mode) for role, net in self.networks.items()}
        return self

    def _net(self, role: str):
        """The callable that runs network ``role`` (compiled or the network itself)."""
        runners = getattr(self, "_runners", None) or {}
        return runners.get(role, self.networks[role])

    def to(self, device=None, dtype=None) -> "EmulatorModel":
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
            (B, 3, n, n, n) z = 0 linear displacement / 6 (network units), on the model's device.
        omega_m, z : float
        velocity : bool

        Returns
        -------
        (Tensor, Tensor or None)
            Displacement [Mpc/h] and velocity [km/s], each (B, 3, n-96, n-96, n-96).
        """


class ZdepModel(EmulatorModel):
    """map2map_zdep: style ``[(Om-0.3)*5, D(z)-1]``, input scaled by ``D(z)`` inside the model,
    velocity = forward-mode derivative of the output with respect to D (SPEC 3.2)."""

    kind = "zdep"
    VELOCITY_METHODS = ("dual", "jvp")

    def __init__(self, net: StyledVNet, domain: TrainingDomain | None = None, velocity_method: str = "dual"):
        if net.arch.style_size != 2:
            raise InputError(f"map2map_zdep needs style_size 2, got {net.arch.style_size}")
        if velocity_method not in self.VELOCITY_METHODS:
            raise InputError(f"velocity_method must be one of {self.VELOCITY_METHODS}, got {velocity_method!r}")
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

    def displacement_fn(self, x: torch.Tensor, omega_m: torch.Tensor):
        """``D -> network output`` (normalised units) at fixed input and Omega_m."""
        return lambda dz: self.net(x * dz, zdep_style(omega_m, dz))

    def predict_tiles(self, x, omega_m, z, velocity):
        ref = next(self.net.parameters())
        om = torch.tensor(float(omega_m), dtype=ref.dtype, device=ref.device)
        dz = torch.tensor(float(growth_factor(z, omega_m)), dtype=ref.dtype, device=ref.device)
        fn = self.displacement_fn(x, om)
        with torch.no_grad():
            if not velocity:
                return self._net("displacement")(x * dz, zdep_style(om, dz)) * DIS_STD_MPC_H, None
            if self.velocity_method == "jvp":
                out, dout_dd = torch.func.jvp(fn, (dz,), (torch.ones_like(dz),))
            else:
                # d/dD of (x D, [(Om-0.3)*5, D-1]) is (x, [0, 1])
                style = Dual(zdep_style(om, dz), torch.tensor([0.0, 1.0], dtype=dz.dtype, device=dz.device))
                run = self._net("displacement")
                if run is not self.net and not foldable_tangent(self.net, style.primal):
                    log.info("a layer's modulation is below 1e-3 at Om=%g, z=%g: eager forward mode", omega_m, z)
                    run = self.net  # the compiled graph has only the one-convolution tangent
                out, dout_dd = run(Dual(x * dz, x), style)
            return out * DIS_STD_MPC_H, dout_dd * float(velocity_norm(z, omega_m))


class EmuModel(EmulatorModel):
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
            dis = self._net("displacement")(x, style) * DIS_STD_MPC_H
            vel = None
            if velocity:
                f_ref = float(growth_rate(0.0, V2V_REF_OMEGA_M))
                scale_in = float(growth_rate(0.0, om32)) / f_ref
                vel = self._net("velocity")(x * scale_in, style) * (DIS_STD_MPC_H * 100.0 * f_ref)
        return dis, vel
