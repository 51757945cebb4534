"""Conversions between pmwd objects and ours: importing pmwd, growth, configuration, cosmology.

pmwd (https://github.com/eelregit/pmwd, not on PyPI: extra ``pmwd``) is imported only when one of
these functions runs. Every number crossing between the two codes is converted here.

Units (from pmwd's ``Configuration``: ``L = Mpc_SI`` metres/h, ``T = 1/H_0``, ``V = L/T``)

* lengths ``[L]``: Mpc/h by default; ``x [Mpc/h] = x_L * conf.L / conf.Mpc_SI`` (so
  ``ptcl_spacing`` is the Lagrangian cell in Mpc/h and ``box = ptcl_spacing * n``);
* ``Particles.vel`` is the canonical velocity ``a^2 dx/dt`` in ``[H_0 L] = [V]`` (100 km/s by
  default); our peculiar velocity is ``v = a dx/dt``, so ``v [km/s] = vel * (conf.V / 1e3) / a``;
* ``Particles.pmid`` is the mesh index nearest to the Lagrangian position and ``disp`` the
  displacement from that mesh point [L]; on a grid made by ``Particles.gen_grid`` the particles are
  in C order of the Lagrangian ``(i, j, k)``, i.e. our id order.

Growth: pmwd normalises ``D_m(a) -> a^m`` deep in matter domination (``G = D/a^m = 1`` at the ODE's
start), ours ``D(z=0) = 1``. For flat matter + Lambda (pmwd's ``E^2`` has no radiation) pmwd's
``D_1(a=1)`` is exactly ``2F1(1, 1/3; 11/6; -Omega_L/Omega_m)`` (:func:`pmwd_growth_today`), so

* pmwd's linear modes at ``a=None`` (``linear_modes(...)``, not scaled by growth) are our z = 0
  linear density divided by ``D_1(a=1)``;
* ``delta(x) = irfftn(modes) / conf.ptcl_cell_vol``: pmwd's Fourier modes in ``[L^3]`` are numpy's
  unnormalised DFT times the cell volume, and its white noise is ``rfftn(noise, norm="ortho")`` --
  the same ``delta_k = sqrt(P V) noise_k / dV`` as :mod:`emu_backend.ics.linear`. The same real
  white-noise array and P(k) give the same field in both codes, except on the Nyquist planes, which
  our ``"fourier"`` convention drops and pmwd keeps in the density (its gradients zero only the
  Nyquist component along the derivative's own axis).

JAX's x64 flag: ``import pmwd`` runs ``jax.config.update("jax_enable_x64", True)`` for the whole
process. :func:`pmwd_modules` imports pmwd and puts the global flag back as it was, and every pmwd
computation here runs inside :func:`pmwd_x64` (``jax.enable_x64(True)``, thread-local), so the rest
of the process (JaxPM, torch) sees the flag unchanged. A side effect: a later ``import pmwd`` in
the same process is a cached no-op and no longer turns x64 on, so wrap your own pmwd calls in
``with pmwd_x64():`` (or import pmwd before this adapter, which keeps pmwd's global behaviour).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch
from scipy.special import hyp2f1

from ..checks import check_int, check_positive, check_real
from ..cosmology.growth import hyp2f1 as growth_hyp2f1
from ..cosmology.params import Cosmology
from ..errors import ComputationError, InputError, require
from ._jax_state import restore_jax_x64
from .jax_bridge import concrete_float, jax_float_dtype, torch_callable

__all__ = [
    "GridSpec",
    "pmwd_modules",
    "pmwd_x64",
    "pmwd_growth_today",
    "configuration_from_grid",
    "grid_from_configuration",
    "to_pmwd_cosmology",
    "from_pmwd_cosmology",
    "check_grid",
    "check_lcdm",
    "jax_module",
    "length_unit_mpc_h",
    "velocity_unit_km_s",
    "pmwd_version",
]

logger = logging.getLogger(__name__)

_EXTRA = "pmwd"


# -- importing pmwd without leaving JAX's x64 flag changed ------------------------------------

def jax_module():
    """The ``jax`` module (:class:`~emu_backend.errors.MissingDependencyError` naming the ``pmwd`` extra)."""
    return require("jax", _EXTRA)


def pmwd_modules():
    """Import pmwd lazily (extra ``pmwd``), restoring the process-wide ``jax_enable_x64`` afterwards.

    Returns
    -------
    module
        The ``pmwd`` package.
    """
    jax_module()
    if "pmwd" in sys.modules and sys.modules["pmwd"] is not None:
        return sys.modules["pmwd"]
    with restore_jax_x64("pmwd (its computations run inside pmwd_x64())"):
        return require("pmwd", _EXTRA)


@contextlib.contextmanager
def pmwd_x64():
    """Context in which pmwd computes as it expects: ``jax.enable_x64(True)``, thread-local.

    Examples
    --------
    >>> with pmwd_x64():  # doctest: +SKIP
    ...     ptcl, obsvbl = pmwd.lpt(modes, cosmo, conf)
    """
    jax = jax_module()
    pmwd_modules()
    with jax.enable_x64(True):
        yield


# -- growth normalisation ---------------------------------------------------------------------
def pmwd_growth_today(omega_m):
    """pmwd's linear growth ``D_1(a=1)`` (normalised to ``a`` in matter domination), flat LambdaCDM.

    ``D_1(1) = 2F1(1, 1/3; 11/6; -(1 - Omega_m)/Omega_m)``: our ``D(a) = a 2F1(..; -x a^3)/2F1(..; -x)``
    tends to ``a / 2F1(..; -x)`` as a -> 0, where pmwd's tends to ``a``.

    Parameters
    ----------
    omega_m : float or jax.Array
        In (0, 1]. A JAX array (or tracer) gives a JAX array of JAX's float dtype, differentiable in
        ``omega_m`` (``jax.grad``; exact derivative ``d 2F1/dx = (a b / c) 2F1(a+1, b+1; c+1; x)``, the
        same scipy values through :func:`emu_backend.cosmology.growth.hyp2f1`).

    Returns
    -------
    float or jax.Array

    Examples
    --------
    >>> round(pmwd_growth_today(0.3175), 6)
    0.789246
    """
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(omega_m, jax.Array):
        return _growth_today_jax(omega_m)
    om = check_real(omega_m, "omega_m", 0.0, 1.0, lo_open=True)
    return float(hyp2f1(1.0, 1.0 / 3.0, 11.0 / 6.0, -(1.0 - om) / om))


def _growth_today_torch(omega_m: torch.Tensor):
    om = omega_m.to(torch.float64)
    if not bool(((om > 0) & (om <= 1)).all()):
        raise InputError(f"omega_m must lie in (0, 1], got {om.detach().cpu().numpy()!r}")
    return (growth_hyp2f1(1.0, 1.0 / 3.0, 11.0 / 6.0, -(1.0 - om) / om),)


def _growth_today_jax(omega_m):
    """:func:`pmwd_growth_today` of a JAX array, through the torch twin (exact derivative) on the host."""
    om = omega_m.astype(jax_float_dtype())
    return torch_callable(_growth_today_torch, [tuple(om.shape)])(om)[0]


# -- Configuration <-> box and grid -----------------------------------------------------------
@dataclass(frozen=True)
class GridSpec:
    """Our view of a cubic pmwd ``Configuration``.

    Attributes
    ----------
    n : int
        Particles per side.
    box_size : float
        Box side [Mpc/h].
    n_mesh : int
        PM mesh points per side.
    a_start, a_stop : float
        Scale factors of the LPT start and of the N-body end.
    a_nbody_maxstep : float
        Largest N-body step in ``a``.
    lpt_order : int
        Order of pmwd's LPT.
    """

    n: int
    box_size: float
    n_mesh: int
    a_start: float
    a_stop: float
    a_nbody_maxstep: float
    lpt_order: int

    @property
    def mesh_factor(self) -> float:
        """Mesh points per particle per side."""
        return self.n_mesh / self.n


def length_unit_mpc_h(conf) -> float:
    """Mpc/h per pmwd length unit ``[L]``."""
    return float(conf.L) / float(conf.Mpc_SI)


def velocity_unit_km_s(conf) -> float:
    """km/s per pmwd velocity unit ``[V] = [H_0 L]``."""
    return float(conf.V) / 1e3


def configuration_from_grid(n: int, box_size: float, *, mesh_factor: float = 1, a_start: float = 1 / 64,
                            a_stop: float = 1.0, a_nbody_maxstep: float = 1 / 64, lpt_order: int = 2, **options):
    """A pmwd ``Configuration`` for an ``n^3`` particle grid in a periodic box of side ``box_size``.

    Parameters
    ----------
    n : int
        Particles per side, >= 2.
    box_size : float
        Box side [Mpc/h] (``ptcl_spacing = box_size / n`` in pmwd's default unit Mpc/h).
    mesh_factor : float
        PM mesh points per particle per side, in [1, 8] (pmwd's ``mesh_shape`` as a ratio).
    a_start : float
        LPT scale factor and N-body start, in (0, 1).
    a_stop : float
        N-body end, in (a_start, 1.5].
    a_nbody_maxstep : float
        Largest N-body step in ``a``, in (0, a_stop - a_start].
    lpt_order : {1, 2}
        Order of pmwd's LPT.
    **options
        Other ``Configuration`` fields (e.g. ``float_dtype``, ``symp_splits``); the units ``M``, ``L``
        and ``T`` must stay pmwd's defaults here.

    Returns
    -------
    pmwd.Configuration

    Examples
    --------
    >>> conf = configuration_from_grid(16, 32.0, mesh_factor=2)  # doctest: +SKIP
    >>> conf.ptcl_spacing, conf.mesh_shape  # doctest: +SKIP
    (2.0, (32, 32, 32))
    """
    n = check_int(n, "n", 2, what="an integer >= 2 particles per side")
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    m = check_real(mesh_factor, "mesh_factor", 1.0, 8.0)
    a0 = check_real(a_start, "a_start", 0.0, 1.0, lo_open=True, hi_open=True)
    a1 = check_real(a_stop, "a_stop", a0, 1.5, lo_open=True)
    step = check_real(a_nbody_maxstep, "a_nbody_maxstep", 0.0, a1 - a0, lo_open=True)
    lpt_order = check_int(lpt_order, "lpt_order", 1, 2, what="1 or 2")
    bad = sorted({"M", "L", "T", "ptcl_spacing", "ptcl_grid_shape", "mesh_shape"} & set(options))
    if bad:
        raise InputError(f"Configuration option(s) {bad} are set by this function's own arguments or "
                         "must keep pmwd's default units")
    pmwd = pmwd_modules()
    try:
        with pmwd_x64():
            return pmwd.Configuration(box / n, (int(n),) * 3, mesh_shape=m, a_start=a0, a_stop=a1,
                                      a_nbody_maxstep=step, lpt_order=int(lpt_order), **options)
    except (TypeError, ValueError) as exc:
        raise InputError(f"pmwd refused the configuration (n={n}, box={box}, mesh_factor={m}): {exc}") from exc


def grid_from_configuration(conf) -> GridSpec:
    """Box [Mpc/h], particle grid and mesh of a cubic 3D pmwd ``Configuration``.

    Raises
    ------
    InputError
        If ``conf`` is not a 3D configuration with a cubic particle grid and mesh.
    """
    pmwd = pmwd_modules()
    if not isinstance(conf, pmwd.Configuration):
        raise InputError(f"conf must be a pmwd.Configuration, got {type(conf).__name__}")
    shape, mesh = tuple(conf.ptcl_grid_shape), tuple(conf.mesh_shape)
    if len(shape) != 3 or len(set(shape)) != 1 or len(set(mesh)) != 1:
        raise InputError(f"only cubic 3D grids convert to ours; got ptcl_grid_shape={shape}, mesh_shape={mesh}")
    n = int(shape[0])
    return GridSpec(n=n, box_size=float(conf.ptcl_spacing) * n * length_unit_mpc_h(conf), n_mesh=int(mesh[0]),
                    a_start=float(conf.a_start), a_stop=float(conf.a_stop),
                    a_nbody_maxstep=float(conf.a_nbody_maxstep), lpt_order=int(conf.lpt_order))


# -- Cosmology <-> ours ------------------------------------------------------------------------
def check_lcdm(cosmo):
    """Refuse anything but a flat LambdaCDM ``pmwd.Cosmology`` (:class:`InputError`).

    ``Omega_k``, ``w_0`` and ``w_a`` must be concrete (pmwd's fixed defaults or numbers), also inside
    ``jax.grad`` / ``jax.jit``: a traced value would be a derivative the flat LambdaCDM emulator ignores.
    """
    pmwd = pmwd_modules()
    if not isinstance(cosmo, pmwd.Cosmology):
        raise InputError(f"cosmo must be a pmwd.Cosmology, got {type(cosmo).__name__}")
    for key, want in (("Omega_k", 0.0), ("w_0", -1.0), ("w_a", 0.0)):
        value = concrete_float(getattr(cosmo, key))
        if value is None:
            raise InputError(f"pmwd {key} is traced by JAX (differentiated or jitted): only flat LambdaCDM "
                             f"converts to ours, leave {key}_ None or pass it as a number")
        if value != want:
            raise InputError(f"only flat LambdaCDM converts to our Cosmology: pmwd {key} = {value!r}, need {want}")


def _sigma8_per_unit_amplitude(cosmo, conf) -> float:
    """sigma8 at a = 1 of ``cosmo`` (transfer and varlin tables needed), with the analytic ``D_1(1)``."""
    from pmwd.boltzmann import varlin

    r8 = 8.0 * float(conf.Mpc_SI) / float(conf.L)  # 8 Mpc/h in [L]
    return math.sqrt(float(varlin(r8, None, cosmo, conf))) * pmwd_growth_today(float(cosmo.Omega_m))


def to_pmwd_cosmology(cosmology: Cosmology, conf):
    """Our :class:`Cosmology` as a pmwd ``Cosmology`` with its tables computed (``boltzmann``).

    ``Omega_m, Omega_b, h, n_s`` map one to one (pmwd: flat, ``w_0 = -1``, ``w_a = 0``). An
    ``A_s`` normalisation gives ``A_s_1e9 = 1e9 A_s`` (both at ``k_pivot = 0.05 / Mpc``); a
    ``sigma8`` one scales ``A_s`` so that pmwd's linear power (Eisenstein & Hu transfer fit) has
    that sigma8 at a = 1 -- like ``Cosmology.from_sigma8``, but with the exact ``D_1(a=1)`` even
    when ``conf.a_stop < 1`` (pmwd's growth table ends at ``a_stop``).

    Parameters
    ----------
    cosmology : Cosmology
    conf : pmwd.Configuration

    Returns
    -------
    pmwd.Cosmology
        With ``transfer``, ``growth`` and ``varlin`` tables.
    """
    if not isinstance(cosmology, Cosmology):
        raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
    pmwd = pmwd_modules()
    grid_from_configuration(conf)
    kw = {"n_s": cosmology.n_s, "Omega_m": cosmology.omega_m, "Omega_b": cosmology.omega_b, "h": cosmology.h}
    try:
        with pmwd_x64():
            if cosmology.A_s is not None:
                cosmo = pmwd.Cosmology(conf, A_s_1e9=cosmology.A_s * 1e9, **kw)
            else:
                unit = pmwd.boltzmann(pmwd.Cosmology(conf, A_s_1e9=1.0, **kw), conf, growth=False)
                cosmo = pmwd.Cosmology(conf, A_s_1e9=(cosmology.sigma8 / _sigma8_per_unit_amplitude(unit, conf)) ** 2,
                                       **kw)
            cosmo = pmwd.boltzmann(cosmo, conf)
    except (InputError, MemoryError):
        raise
    except Exception as exc:
        raise ComputationError(f"pmwd's boltzmann failed for {cosmology!r}: {exc}") from exc
    if not np.isfinite(np.asarray(cosmo.growth)).all():
        raise ComputationError(f"pmwd's growth table is not finite for {cosmology!r}")
    return cosmo


def from_pmwd_cosmology(cosmo, *, amplitude: str = "A_s", name: str = "pmwd") -> Cosmology:
    """A flat LambdaCDM pmwd ``Cosmology`` as ours.

    Parameters
    ----------
    cosmo : pmwd.Cosmology
        ``Omega_k = 0``, ``w_0 = -1``, ``w_a = 0`` (else :class:`InputError`).
    amplitude : {"A_s", "sigma8"}
        Normalise ours by ``A_s = 1e-9 A_s_1e9`` (exact), or by pmwd's sigma8 at a = 1 (computes
        pmwd's transfer and variance tables; exact ``D_1(1)``, see :func:`to_pmwd_cosmology`).
    name : str
        Label of our cosmology.
    """
    if amplitude not in ("A_s", "sigma8"):
        raise InputError(f"amplitude must be 'A_s' or 'sigma8', got {amplitude!r}")
    check_lcdm(cosmo)
    kw = {"omega_m": float(cosmo.Omega_m), "omega_b": float(cosmo.Omega_b), "h": float(cosmo.h),
          "n_s": float(cosmo.n_s), "name": name}
    if amplitude == "A_s":
        return Cosmology(A_s=float(cosmo.A_s_1e9) * 1e-9, sigma8=None, **kw)
    pmwd = pmwd_modules()
    with pmwd_x64():
        tab = cosmo if cosmo.varlin is not None else pmwd.boltzmann(cosmo, cosmo.conf, growth=False)
        sigma8 = _sigma8_per_unit_amplitude(tab, cosmo.conf)
    return Cosmology(sigma8=sigma8, A_s=None, **kw)


def check_grid(spec: GridSpec, n: int, box_size: float, what: str):
    """Refuse a ``what`` (ICs, snapshot) whose ``n`` or box differs from the configuration's ``spec``."""
    if spec.n != n or not math.isclose(spec.box_size, box_size, rel_tol=1e-9):
        raise InputError(f"{what} has n={n}, box {box_size} Mpc/h but the configuration has n={spec.n}, "
                         f"box {spec.box_size} Mpc/h")


def pmwd_version():
    """The installed pmwd's version, or None."""
    try:
        return version("pmwd")
    except PackageNotFoundError:  # pragma: no cover
        return None
