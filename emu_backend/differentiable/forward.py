"""The differentiable forward model: white noise and cosmology -> emulated nonlinear fields, in PyTorch.

The chain, every step in torch ops so that gradients flow to the white noise and to each cosmological
parameter passed as a tensor:

1. white noise -> linear density and ZA displacement at z = 0 with the Eisenstein & Hu P(k) of
   ``(Omega_m, Omega_b, h, n_s, sigma8)`` (:mod:`.linear`; sigma8 normalisation by a fixed Simpson rule);
2. the map2map_zdep emulator on the periodic box, tile by tile with recomputation in the backward
   (:func:`.tiles.emulate_box`), with style ``[(Om - 0.3) 5, D(z, Om) - 1]``; D, f and H are the closed forms
   of :mod:`emu_backend.cosmology.growth`, whose torch path has exact derivatives in Omega_m;
3. the velocity is the emulator's forward-mode derivative in D times ``velocity_norm(z, Om)``; its
   reverse-mode gradient is exact (each folded dual layer's backward is written out in
   :mod:`emu_backend.nn.modulated_conv`, the network's weights being constants here);
4. the output: ``"displacement"`` [Mpc/h], ``"velocity"`` [km/s], ``"density"`` (TSC/CIC overdensity of
   the particles on an ``n_mesh^3`` mesh) or ``"rsd_density"`` (the same in redshift space along ``los``,
   ``s = x + v_los / (a H)``).

Step 2 is the emulator by default (``dynamics="emulator"``). The same chain with the Zel'dovich
approximation (``dynamics="za"``: displacement ``D psi``, velocity ``a H f D psi``) or with linear theory
(``dynamics="linear"``: the density ``D delta_lin`` on the particle grid, no particles) gives the standard
baselines of field-level inference; the linear model's posterior is Gaussian with a closed form (the Wiener
filter), the reference the inference code is tested against.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from ..checks import check_bool, check_choice, check_int, check_positive, check_reals
from ..cosmology.growth import growth_factor, growth_rate, hubble
from ..cosmology.linear_power import eisenstein_hu_power
from ..cosmology.params import QUIJOTE_FIDUCIAL, Cosmology
from ..datatypes.snapshot import lagrangian_grid
from ..errors import InputError
from ..inference import Emulator, ZdepConvention, default_emulator
from ..inference.tiling import check_tile_size
from ..mesh.paint import check_window, paint
from ..nn.vnet import CROP, PERIOD_MULTIPLE
from .fields import default_tile_size, emulated_fields
from .linear import linear_fields

__all__ = ["DENSITY_WINDOW", "DYNAMICS", "ForwardModel", "OUTPUTS", "PARAMETERS"]

log = logging.getLogger(__name__)

#: Output kinds of :class:`ForwardModel`.
OUTPUTS = ("displacement", "velocity", "density", "rsd_density")
#: Dynamics of :class:`ForwardModel`: the emulator, the Zel'dovich approximation, linear theory.
DYNAMICS = ("emulator", "za", "linear")
#: Cosmological parameters a call may pass (as floats or tensors); the others come from ``cosmology``.
PARAMETERS = ("omega_m", "omega_b", "h", "n_s", "sigma8")
#: Default mass assignment of the density outputs: TSC, whose quadratic B-spline has a continuous first
#: derivative, so the density -- and any posterior built on it -- has a continuous gradient in the particles'
#: positions. CIC's linear kernel has kinks at every mesh plane: its gradient jumps each time a particle
#: crosses one, and leapfrog trajectories (HMC, NUTS) lose their second order (measured in
#: ``benchmarks/smoothness.py``; docs/field_level.md, "Mass assignment").
DENSITY_WINDOW = "tsc"


class ForwardModel:
    """White noise and cosmology -> emulated fields at one or more redshifts, differentiable in both.

    Parameters
    ----------
    grid : int
        Particles per side ``N`` (>= 8).
    box_size : float
        Box side [Mpc/h]. The emulator was trained at ``1000 / 512`` Mpc/h per cell; other cell sizes need
        ``allow_extrapolation=True``.
    z : float or sequence of float
        Output redshift(s), in the emulator's domain.
    emulator : Emulator, optional
        A map2map_zdep :class:`~emu_backend.inference.Emulator`; default :func:`default_emulator` (the
        shipped weights). Its dtype is the computation's dtype.
    output : {"displacement", "velocity", "density", "rsd_density"}
    cosmology : Cosmology, optional
        Values of the parameters a call does not pass (default Quijote's fiducial cosmology).
    tile_size : int, optional
        Output tile side, a multiple of 8: peak memory is set by it (default ``min(32, N)`` rounded up).
    power : {"eisenstein_hu", "eisenstein_hu_nowiggle"}
        The linear P(k) at z = 0, normalised to sigma8.
    n_mesh : int, optional
        Mesh per side of the density outputs (default ``N``).
    window : {"tsc", "cic", "ngp"}
        Mass assignment of the density outputs (default :data:`DENSITY_WINDOW`, TSC: a gradient continuous in
        the positions; CIC's jumps where a particle crosses a mesh plane; NGP has none).
    los : {0, 1, 2}
        Line-of-sight axis of ``"rsd_density"``.
    allow_extrapolation : bool
        Run outside the emulator's training domain (Omega_m, z, cell size) instead of raising.
    recompute : bool, "all" or "checkpoint"
        Recompute each tile's activations in the backward pass (bounded memory; default), its first
        forward at the cost of inference, the last tile's kept from its forward; ``"all"`` recomputes
        the last tile too; False keeps them all (memory grows with the box); ``"checkpoint"`` recomputes
        through :func:`torch.utils.checkpoint.checkpoint` (see
        :func:`~emu_backend.differentiable.tiles.emulate_box`).
    dynamics : {"emulator", "za", "linear"}
        The nonlinear map: the emulator (default), the Zel'dovich approximation (no network; float64 on the
        CPU), or linear theory (output ``"density"`` only, on the particle grid: ``n_mesh`` = ``grid``).
    periodic : bool, optional
        Run the emulator on the whole box at once in the network's periodic mode (each activation once per
        period, no halo: :func:`~emu_backend.differentiable.tiles.emulate_box`) instead of tile by tile; the
        same numbers up to float round-off. Default (None): periodic when ``grid`` is a multiple of 8 and at
        most ``tile_size + 96``, where the whole box's activations take no more memory than one tile's
        (then ``recompute`` does not apply); tiles otherwise.

    Examples
    --------
    >>> import torch
    >>> from emu_backend.inference import Emulator, ZdepConvention
    >>> from emu_backend.nn import StyledVNet
    >>> emu = Emulator(ZdepConvention(StyledVNet(2, width=4)), dtype="float64")
    >>> fm = ForwardModel(8, 8 * 1000 / 512, 0.5, emulator=emu, output="density")
    >>> noise = torch.randn(8, 8, 8, dtype=torch.float64, requires_grad=True)
    >>> om = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    >>> delta = fm(noise, omega_m=om)
    >>> delta.shape, (delta ** 2).sum().backward(), om.grad is not None
    (torch.Size([8, 8, 8]), None, True)
    """

    def __init__(self, grid: int, box_size: float, z, *, emulator: Emulator | None = None, output: str = "density",
                 cosmology: Cosmology | None = None, tile_size: int | None = None, power: str = "eisenstein_hu",
                 n_mesh: int | None = None, window: str = DENSITY_WINDOW, los: int = 2,
                 allow_extrapolation: bool = False, recompute: bool | str = True, dynamics: str = "emulator",
                 periodic: bool | None = None):
        self.grid = check_int(grid, "grid", 8)
        self.box_size = check_positive(box_size, "box_size", unit="Mpc/h")
        self.single = not isinstance(z, Sequence) and getattr(z, "ndim", 0) == 0
        self.zs = tuple(check_reals(z, "z", -1.0, lo_open=True, item="redshift"))
        self.output = check_choice(output, "output", OUTPUTS)
        self.power = check_choice(power, "power", ("eisenstein_hu", "eisenstein_hu_nowiggle"))
        self.cosmology = QUIJOTE_FIDUCIAL if cosmology is None else cosmology
        if not isinstance(self.cosmology, Cosmology):
            raise InputError(f"cosmology must be a Cosmology, got {type(self.cosmology).__name__}")
        self.tile_size = default_tile_size(self.grid) if tile_size is None else check_tile_size(tile_size, "tile_size")
        self.n_mesh = self.grid if n_mesh is None else check_int(n_mesh, "n_mesh", 2)
        self.window = check_window(window)
        self.los = check_choice(los, "los", (0, 1, 2))
        self.allow_extrapolation = bool(allow_extrapolation)
        self.recompute = recompute if isinstance(recompute, str) else check_bool(recompute, "recompute")
        if isinstance(recompute, str):
            check_choice(recompute, "recompute", ("all", "checkpoint"))
        self.dynamics = check_choice(dynamics, "dynamics", DYNAMICS)
        if periodic is None:
            periodic = self.grid % PERIOD_MULTIPLE == 0 and self.grid <= self.tile_size + 2 * CROP
        elif check_bool(periodic, "periodic") and self.grid % PERIOD_MULTIPLE:
            raise InputError(f"periodic=True needs a grid that is a multiple of {PERIOD_MULTIPLE}, got grid {self.grid}")
        self.periodic = bool(periodic)
        if self.dynamics == "linear" and (self.output != "density" or self.n_mesh != self.grid):
            raise InputError(f"dynamics='linear' gives the density on the particle grid only: output must be "
                             f"'density' (got {self.output!r}) and n_mesh {self.grid} (got {self.n_mesh})")
        if self.dynamics == "emulator":
            self.emulator = default_emulator(allow_extrapolation=allow_extrapolation) if emulator is None else emulator
            if not isinstance(self.emulator, Emulator) or not isinstance(self.emulator.model, ZdepConvention):
                raise InputError("emulator must be an Emulator of the map2map_zdep convention (ZdepConvention), got "
                                 f"{type(getattr(self.emulator, 'model', self.emulator)).__name__}")
            self.net = self.emulator.model.net
            self.dtype, self.device = self.emulator.dtype, self.emulator.device
        else:
            if emulator is not None:
                raise InputError(f"dynamics={self.dynamics!r} uses no emulator; pass emulator=None")
            self.emulator = self.net = None
            self.dtype, self.device = torch.float64, torch.device("cpu")
        # the Lagrangian grid q [Mpc/h], (N^3, 3), particle (i, j, k) in C order
        q = lagrangian_grid(self.grid, self.box_size).reshape(3, -1).T
        self._q = torch.from_numpy(q.copy()).to(device=self.device, dtype=self.dtype)

    # -- parameters ---------------------------------------------------------------------------------------
    def parameters(self, **given) -> dict:
        """The cosmological parameters of a call: those given (floats or tensors), the rest from ``cosmology``."""
        unknown = set(given) - set(PARAMETERS)
        if unknown:
            raise InputError(f"unknown cosmological parameters {sorted(unknown)}; the forward model takes {PARAMETERS}")
        c = self.cosmology
        params = {"omega_m": c.omega_m, "omega_b": c.omega_b, "h": c.h, "n_s": c.n_s, "sigma8": c.sigma8}
        params.update({k: v for k, v in given.items() if v is not None})
        if params["sigma8"] is None:
            raise InputError(f"cosmology {c.name!r} has no sigma8; pass sigma8=... (the EH98 P(k) is normalised by it)")
        out = {}
        for key, value in params.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(float(value), dtype=torch.float64)
            if t.ndim != 0:
                raise InputError(f"{key} must be a scalar (0-d tensor or float), got shape {tuple(t.shape)}")
            if not math.isfinite(float(t.detach())):
                raise InputError(f"{key} must be finite, got {float(t.detach())!r}")
            out[key] = t.to(device=self.device, dtype=torch.float64)
        if self.emulator is not None:
            self.emulator.model.domain.check(float(out["omega_m"].detach()), self.zs, self.box_size, self.grid,
                                             self.allow_extrapolation)
        return out

    # -- the chain ----------------------------------------------------------------------------------------
    def _power(self, params: dict):
        wiggles = self.power == "eisenstein_hu"

        def power(k):
            return eisenstein_hu_power(k, params["omega_m"], params["omega_b"], params["h"], params["n_s"],
                                       params["sigma8"], wiggles=wiggles)

        return power

    def linear_displacement(self, noise: torch.Tensor, params: dict) -> torch.Tensor:
        """z = 0 ZA displacement (3, N, N, N) [Mpc/h] of the white noise, in the model's dtype."""
        _, psi = linear_fields(noise, self._power(params), self.box_size, density=False)
        return psi.to(self.dtype)

    def _fields(self, noise: torch.Tensor, p: dict, velocity: bool) -> list:
        """[(displacement [Mpc/h], velocity [km/s] or None)] per redshift, by the model's dynamics."""
        psi = self.linear_displacement(noise, p)
        if self.dynamics == "emulator":
            return emulated_fields(self.net, psi, p["omega_m"], self.zs, tile_size=self.tile_size,
                                   velocity=velocity, recompute=self.recompute, periodic=self.periodic)
        fields = []
        for z in self.zs:  # Zel'dovich: x = q + D psi, v = a dx/dt = a H f D psi
            d = growth_factor(z, p["omega_m"])
            vel = psi * (d * growth_rate(z, p["omega_m"]) * hubble(z, p["omega_m"]) / (1.0 + z)) if velocity else None
            fields.append((psi * d, vel))
        return fields

    def _density(self, displacement: torch.Tensor) -> torch.Tensor:
        pos = torch.remainder(self._q + displacement.reshape(3, -1).T, self.box_size)
        mesh = paint(pos, self.n_mesh, self.box_size, window=self.window, periodic=True)
        return mesh * (self.n_mesh**3 / self.grid**3) - 1.0

    def __call__(self, noise: torch.Tensor, **params):
        """The output field(s) of white ``noise`` (N, N, N) for the given cosmological parameters.

        Returns
        -------
        Tensor, or list of Tensor (one per redshift when ``z`` was a sequence)
            ``"displacement"`` / ``"velocity"``: (3, N, N, N) [Mpc/h] / [km/s];
            ``"density"`` / ``"rsd_density"``: (n_mesh, n_mesh, n_mesh) overdensity.
        """
        if not isinstance(noise, torch.Tensor) or tuple(noise.shape) != (self.grid,) * 3:
            raise InputError(f"noise must be a tensor of shape {(self.grid,) * 3}, got "
                             f"{tuple(getattr(noise, 'shape', ())) or type(noise).__name__}")
        if not torch.isfinite(noise.detach()).all():
            raise InputError("noise contains non-finite values")
        p = self.parameters(**params)
        noise = noise.to(self.device)
        if self.dynamics == "linear":  # delta(z) = D(z, Om) delta_lin(z = 0) on the particle grid
            delta0, _ = linear_fields(noise.to(self.dtype), self._power(p), self.box_size, displacement=False)
            outs = [delta0 * growth_factor(z, p["omega_m"]).to(self.dtype) for z in self.zs]
            return outs[0] if self.single else outs
        need_velocity = self.output in ("velocity", "rsd_density")
        outs = []
        fields = self._fields(noise, p, need_velocity)
        for z, (dis, vel) in zip(self.zs, fields):
            if self.output == "displacement":
                outs.append(dis)
            elif self.output == "velocity":
                outs.append(vel)
            elif self.output == "density":
                outs.append(self._density(dis))
            else:  # redshift space: s = x + v_los / (a H) along the line of sight [Mpc/h]
                shift = vel[self.los] / ((1.0 / (1.0 + z)) * hubble(z, p["omega_m"]).to(self.dtype))
                outs.append(self._density(dis + torch.stack([shift if c == self.los else torch.zeros_like(shift)
                                                             for c in range(3)])))
        return outs[0] if self.single else outs
