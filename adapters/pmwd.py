"""pmwd adapter: the ``"pmwd"`` simulator backend and an emulator drop-in for pmwd's ``nbody``.

pmwd (https://github.com/eelregit/pmwd) is a differentiable particle-mesh code in JAX. It is not on
PyPI: install it with ``pip install "emu_backend[pmwd]"`` (a direct git reference) or from a clone.
Importing this module registers the backend where pmwd is installed (``get_backend("pmwd")`` imports
it on first use) and never imports jax or pmwd; they are imported when a backend is constructed or a
function runs (:class:`MissingDependencyError` naming the extra without them). The unit, growth and mode
conventions and the handling of pmwd's global x64 switch are in
:mod:`emu_backend.adapters.pmwd_convert` (configuration, cosmology) and
:mod:`emu_backend.adapters.pmwd_fields` (linear modes, particles).

* :class:`PmwdBackend` (``simulate(..., backend="pmwd")``): our ICs -> pmwd ``lpt`` at ``a_start``
  -> pmwd's N-body (``nbody_init`` then ``nbody_step``, the loop inside ``pmwd.nbody``) with the
  steps split so that every output ``a`` is a step boundary -> our snapshots.
* :func:`emulator_nbody`: called like ``pmwd.nbody(ptcl, obsvbl, cosmo, conf)`` and returning
  ``(Particles, obsvbl)`` at ``conf.a_stop``, produced by the emulator from the linear field that
  the LPT particles at ``conf.a_start`` encode (:func:`linear_displacement_from_particles`), in JAX
  and differentiable with respect to pmwd's modes and cosmology like ``pmwd.nbody`` (the emulator
  runs in torch behind a ``jax.custom_vjp``, :mod:`emu_backend.adapters.jax`);
  :func:`emulator_nbody_numpy` is the former NumPy path (not differentiable, any emulator).

A runnable example is in ``docs/adapters/pmwd.md``.
"""

from __future__ import annotations

import importlib.util
import logging
import math

import numpy as np

from ..checks import check_int, check_real
from ..errors import ComputationError, InputError, require
from ..ics.conditions import InitialConditions
from ..ics.linear import divergence
from ..ics.lpt import second_order_displacement
from ..inference import ZdepConvention
from ..simulator.backends import Backend, EmulatorBackend, output_scale_factors, register_backend
from . import jax_lpt
from .jax import jax_emulator
from .pmwd_convert import (
    check_lcdm,
    configuration_from_grid,
    from_pmwd_cosmology,
    grid_from_configuration,
    pmwd_growth_today,
    pmwd_modules,
    pmwd_x64,
    to_pmwd_cosmology,
)
from .pmwd_fields import (
    initial_conditions_from_modes,
    lagrangian_displacement,
    lagrangian_displacement_jax,
    modes_from_initial_conditions,
    particles_from_fields,
    particles_from_snapshot,
    snapshot_from_particles,
)

__all__ = [
    "PmwdBackend",
    "MESH_FACTORS",
    "emulator_nbody",
    "emulator_nbody_numpy",
    "linear_ics_from_particles",
    "linear_displacement_from_particles",
    "configuration_from_grid",
    "grid_from_configuration",
    "to_pmwd_cosmology",
    "from_pmwd_cosmology",
    "initial_conditions_from_modes",
    "modes_from_initial_conditions",
    "particles_from_fields",
    "particles_from_snapshot",
    "snapshot_from_particles",
    "pmwd_x64",
]

logger = logging.getLogger(__name__)

#: Allowed PM mesh points per particle per side of the backend.
MESH_FACTORS = (1, 2, 3, 4)


def _growth_tables(cosmo, conf):
    """``cosmo`` with pmwd's growth table (computed if missing)."""
    if cosmo.growth is not None:
        return cosmo
    pmwd = pmwd_modules()
    with pmwd_x64():
        return pmwd.boltzmann(cosmo, conf)


def linear_ics_from_particles(ptcl, cosmo, conf, *, iterations: int = 4) -> InitialConditions:
    """Our z = 0 linear ICs from pmwd LPT particles at ``conf.a_start`` (inverts pmwd's LPT).

    pmwd's LPT places particle q at ``q + D_1 Psi - D_2 Psi2[Psi]`` (growth normalised to ``a^m`` in
    matter domination, ``Psi2`` our :func:`~emu_backend.ics.lpt.second_order_displacement`). With
    ``conf.lpt_order == 2`` the fixed point ``Psi = (dis + D_2 Psi2[Psi]) / D_1`` is iterated
    ``iterations`` times (the correction is O(D_1) relative, so a few suffice); the z = 0 linear
    density is ``-D_1(a=1) div Psi`` (Nyquist planes dropped, as in our ICs).

    Parameters
    ----------
    ptcl : pmwd.Particles
        Output of ``pmwd.lpt(modes, cosmo, conf)`` (velocities are not used).
    cosmo : pmwd.Cosmology
        Flat LambdaCDM; its growth table is computed if absent.
    conf : pmwd.Configuration
    iterations : int
        Fixed-point iterations of the second-order inversion, 1..20.

    Returns
    -------
    InitialConditions
        From the recovered density (``from_linear_density``).
    """
    iterations = check_int(iterations, "iterations", 1, 20)
    pmwd = pmwd_modules()
    spec = grid_from_configuration(conf)
    cosmo = _growth_tables(cosmo, conf)
    n, box = spec.n, spec.box_size
    dis = lagrangian_displacement(ptcl).T.reshape(3, n, n, n)
    with pmwd_x64():
        d1 = float(pmwd.growth(conf.a_start, cosmo, conf, order=1))
        d2 = float(pmwd.growth(conf.a_start, cosmo, conf, order=2))
    psi = dis / d1
    if spec.lpt_order == 2:
        for _ in range(int(iterations)):
            psi = (dis + d2 * second_order_displacement(psi, box)) / d1
    # the linear density -div Psi: its displacement is curl-free and Nyquist-free, as our ICs
    delta0 = -divergence(psi, box) * pmwd_growth_today(float(cosmo.Omega_m))
    prov = {"source": "pmwd_particles", "a_start": spec.a_start, "lpt_order": spec.lpt_order}
    return InitialConditions.from_linear_density(delta0, box, provenance=prov)


def linear_displacement_from_particles(ptcl, cosmo, conf, *, iterations: int = 4):
    """Our z = 0 linear displacement of pmwd LPT particles at ``conf.a_start``, in JAX (differentiable).

    The JAX twin of :func:`linear_ics_from_particles` (same inversion of pmwd's LPT, same fixed point,
    Nyquist planes dropped as in our ICs), differentiable with respect to ``ptcl.disp`` and to ``cosmo``
    (pmwd's growth table, through ``pmwd.growth``, and ``Omega_m``, through ``D_1(a=1)``): the chain
    ``modes -> pmwd.lpt -> this`` differentiates under ``jax.grad``. Computed in float64 (``pmwd_x64()``).

    Parameters
    ----------
    ptcl : pmwd.Particles
        Output of ``pmwd.lpt(modes, cosmo, conf)`` (velocities are not used).
    cosmo : pmwd.Cosmology
        Flat LambdaCDM; its growth table is computed (``pmwd.boltzmann``) if absent.
    conf : pmwd.Configuration
    iterations : int
        Fixed-point iterations of the second-order inversion, 1..20.

    Returns
    -------
    jax.Array, shape (3, n, n, n), float64
        ``Psi`` [Mpc/h] with ``div Psi = -delta_0``, our z = 0 linear displacement.
    """
    iterations = check_int(iterations, "iterations", 1, 20)
    pmwd = pmwd_modules()
    spec = grid_from_configuration(conf)
    n, box = spec.n, spec.box_size
    with pmwd_x64():
        cosmo = _growth_tables(cosmo, conf)
        dis = lagrangian_displacement_jax(ptcl).T.reshape(3, n, n, n)
        d1 = pmwd.growth(conf.a_start, cosmo, conf, order=1)
        d2 = pmwd.growth(conf.a_start, cosmo, conf, order=2)
        psi = dis / d1
        if spec.lpt_order == 2:
            for _ in range(int(iterations)):
                psi = (dis + d2 * jax_lpt.second_order_displacement(psi, box)) / d1
        delta0 = -jax_lpt.divergence(psi, box) * pmwd_growth_today(cosmo.Omega_m)
        return jax_lpt.displacement_from_density(delta0, box)


def _check_nbody_call(ptcl, conf, reverse: bool):
    if reverse:
        raise InputError("emulator_nbody runs forward only (reverse=True is pmwd's adjoint integration)")
    pmwd = pmwd_modules()
    if not isinstance(ptcl, pmwd.Particles):
        raise InputError(f"ptcl must be pmwd.Particles, got {type(ptcl).__name__}")
    return grid_from_configuration(conf)


def emulator_nbody(ptcl, obsvbl, cosmo, conf, reverse: bool = False, *, emulator=None, tile_size=None,
                   allow_extrapolation=None):
    """Drop-in for ``pmwd.nbody(ptcl, obsvbl, cosmo, conf)``: the emulator's particles at ``conf.a_stop``,
    differentiable like ``pmwd.nbody``.

    JAX all the way: pmwd's LPT particles -> our z = 0 linear displacement
    (:func:`linear_displacement_from_particles`) -> the emulator (:func:`emu_backend.adapters.jax.jax_emulator`,
    torch behind a ``jax.custom_vjp``) -> pmwd ``Particles`` (:func:`particles_from_fields`). ``jax.grad``
    flows to ``ptcl.disp`` (hence to pmwd's modes through ``pmwd.lpt``) and to ``cosmo`` (``Omega_m``, the
    growth table and whatever made them, e.g. ``pmwd.boltzmann``); ``jax.jit`` works. The
    numbers equal :func:`emulator_nbody_numpy` (the former NumPy path) to float32 round-off.

    Parameters
    ----------
    ptcl : pmwd.Particles
        LPT particles at ``conf.a_start`` (from ``pmwd.lpt``).
    obsvbl : any
        Returned unchanged (pmwd's observables are not emulated).
    cosmo : pmwd.Cosmology
        Flat LambdaCDM (``Omega_k_``, ``w_0_``, ``w_a_`` concrete); the emulator uses its ``Omega_m``.
    conf : pmwd.Configuration
        Cubic grid (n >= 8); the output time is ``conf.a_stop``.
    reverse : bool
        Must be False (backward integration is not emulated).
    emulator : Emulator, optional
        A map2map_zdep emulator (default: the shipped one); others (map2map_emu) through
        :func:`emulator_nbody_numpy`.
    tile_size : int, optional
        Output tile side, a multiple of 8 (default n rounded up to 8, at most 32): the backward pass's
        memory, not the result.
    allow_extrapolation : bool, optional
        Run outside the training domain; None keeps the emulator's setting.

    Returns
    -------
    (pmwd.Particles, obsvbl)
        Particles on ``conf``'s Lagrangian grid with ``disp`` [L] and canonical ``vel`` [H_0 L]
        (``acc`` is None), and ``obsvbl`` as given.

    Examples
    --------
    >>> ptcl, obsvbl = pmwd.lpt(modes, cosmo, conf)  # doctest: +SKIP
    >>> ptcl, obsvbl = emulator_nbody(ptcl, obsvbl, cosmo, conf)  # instead of pmwd.nbody  # doctest: +SKIP
    """
    spec = _check_nbody_call(ptcl, conf, reverse)
    check_lcdm(cosmo)
    if emulator is not None and not isinstance(getattr(emulator, "model", None), ZdepConvention):
        raise InputError("emulator_nbody differentiates map2map_zdep emulators (ZdepConvention) only; got "
                         f"{type(getattr(emulator, 'model', emulator)).__name__}: use emulator_nbody_numpy")
    emulate = jax_emulator(spec.box_size, 1.0 / spec.a_stop - 1.0, emulator=emulator, tile_size=tile_size,
                           allow_extrapolation=allow_extrapolation)
    with pmwd_x64():
        psi0 = linear_displacement_from_particles(ptcl, cosmo, conf)
        dis, vel = emulate(psi0, cosmo.Omega_m)
        return particles_from_fields(dis, vel, spec.a_stop, conf), obsvbl


def emulator_nbody_numpy(ptcl, obsvbl, cosmo, conf, reverse: bool = False, *, emulator=None, tile_size=None,
                         batch_size: int = 1, allow_extrapolation=None):
    """:func:`emulator_nbody` through NumPy and our emulator backend: not differentiable, any emulator.

    The former implementation of :func:`emulator_nbody`, kept for emulators it cannot differentiate
    (map2map_emu, two networks at z = 0) and as its reference: :func:`linear_ics_from_particles` ->
    :class:`~emu_backend.simulator.EmulatorBackend` (ICs and snapshot in float32) ->
    :func:`particles_from_snapshot`.

    Parameters
    ----------
    ptcl, obsvbl, cosmo, conf, reverse
        As :func:`emulator_nbody`.
    emulator, tile_size, batch_size, allow_extrapolation
        As :class:`~emu_backend.simulator.EmulatorBackend` (default: the shipped emulator).

    Returns
    -------
    (pmwd.Particles, obsvbl)
    """
    spec = _check_nbody_call(ptcl, conf, reverse)
    ours = from_pmwd_cosmology(cosmo)
    ics = linear_ics_from_particles(ptcl, cosmo, conf)
    backend = EmulatorBackend(emulator, tile_size=tile_size, batch_size=batch_size,
                              allow_extrapolation=allow_extrapolation)
    snap = backend.run(ics, ours, [1.0 / spec.a_stop - 1.0])[0]
    return particles_from_snapshot(snap, conf), obsvbl


class PmwdBackend(Backend):
    """Particle-mesh N-body with pmwd: pmwd's LPT at ``a_start``, then its symplectic N-body steps.

    Parameters
    ----------
    mesh_factor : int
        PM mesh points per particle per side, in 1..4 (pmwd paints ``n^3`` particles on a
        ``(mesh_factor n)^3`` mesh). Even factors put the initial lattice on every other mesh point,
        where pmwd's low-k force comes out ~12% too strong (measured; docs/adapters/pmwd.md): the
        default 3 avoids it.
    steps : int
        N-body steps (uniform in ``a``) from ``a_start`` to the latest output, in [1, 10000]; every
        interval between outputs gets its share, at least one.
    a_start : float
        Scale factor of the LPT start, in [0.01, 0.5]; every output must be later.
    lpt_order : {1, 2}
        Order of pmwd's LPT.

    Examples
    --------
    >>> PmwdBackend(mesh_factor=2, steps=20).describe()["steps"]  # doctest: +SKIP
    20
    """

    name = "pmwd"

    def __init__(self, mesh_factor: int = 3, *, steps: int = 32, a_start: float = 1 / 16, lpt_order: int = 2):
        self.mesh_factor = check_int(mesh_factor, "mesh_factor", MESH_FACTORS[0], MESH_FACTORS[-1],
                                     what=f"an integer in {MESH_FACTORS}")
        self.steps = check_int(steps, "steps", 1, 10000)
        self.a_start = check_real(a_start, "a_start", 0.01, 0.5)
        self.lpt_order = check_int(lpt_order, "lpt_order", 1, 2, what="1 or 2")
        pmwd_modules()  # MissingDependencyError naming the extra now, not at the first run

    def describe(self) -> dict:
        return {"mesh_factor": self.mesh_factor, "steps": self.steps, "a_start": self.a_start,
                "lpt_order": self.lpt_order, "integrator": "pmwd.nbody (symplectic leapfrog)"}

    def configuration(self, n: int, box_size: float, a_stop: float):
        """The pmwd ``Configuration`` of a run to ``a_stop`` (its ``a_nbody`` has exactly ``steps`` steps)."""
        maxstep = (a_stop - self.a_start) / self.steps
        # the slack keeps pmwd's ceil((a_stop - a_start) / maxstep) at `steps` despite rounding
        return configuration_from_grid(n, box_size, mesh_factor=self.mesh_factor, a_start=self.a_start,
                                       a_stop=a_stop, a_nbody_maxstep=min(maxstep * (1 + 1e-10), a_stop - self.a_start),
                                       lpt_order=self.lpt_order)

    def run(self, ics, cosmology, z):
        a_out = output_scale_factors(z, self.a_start)
        pmwd = pmwd_modules()
        from pmwd.nbody import nbody_init, nbody_step

        jax = require("jax", "pmwd")
        jnp = jax.numpy
        a_stop = float(a_out.max())
        conf = self.configuration(ics.n, ics.box_size, a_stop)
        cosmo = to_pmwd_cosmology(cosmology, conf)
        maxstep = (a_stop - self.a_start) / self.steps
        order = np.argsort(a_out)
        meta = {**self.describe(), "n_mesh": self.mesh_factor * ics.n, "jax_version": jax.__version__,
                "pmwd_version": getattr(pmwd, "__version__", None), "jax_device": str(jax.devices()[0])}
        snaps = [None] * len(z)
        n_steps = 0
        try:
            with pmwd_x64():
                modes = modes_from_initial_conditions(ics, cosmo, conf)
                ptcl, obsvbl = pmwd.lpt(modes, cosmo, conf)
                ptcl, obsvbl = nbody_init(conf.a_nbody[0], ptcl, obsvbl, cosmo, conf)
                a_prev = conf.a_nbody[0]
                for idx in order:
                    num = max(1, math.ceil((a_out[idx] - float(a_prev)) / maxstep - 1e-6))
                    grid = (conf.a_nbody if num == conf.a_nbody_num and len(order) == 1
                            else jnp.linspace(a_prev, a_out[idx], num + 1, dtype=conf.cosmo_dtype))
                    for a0, a1 in zip(grid[:-1], grid[1:]):
                        ptcl, obsvbl = nbody_step(a0, a1, ptcl, obsvbl, cosmo, conf)
                    n_steps += num
                    a_prev = grid[-1]
                    if not (np.isfinite(np.asarray(ptcl.disp)).all() and np.isfinite(np.asarray(ptcl.vel)).all()):
                        raise ComputationError(f"pmwd returned NaN/inf at a = {a_out[idx]:.6g}; more steps or a "
                                               "later a_start may help")
                    snaps[idx] = snapshot_from_particles(ptcl, float(a_out[idx]), cosmology,
                                                         meta={**meta, "steps_taken": n_steps})
        except (InputError, ComputationError, MemoryError):
            raise
        except Exception as exc:
            raise ComputationError(f"pmwd run failed (n={ics.n}, mesh {self.mesh_factor * ics.n}^3, "
                                   f"a_start={self.a_start}): {exc}") from exc
        logger.info("pmwd: %d^3 particles, mesh %d^3, a %.3g -> %.3g in %d steps", ics.n, self.mesh_factor * ics.n,
                    self.a_start, a_stop, n_steps)
        return snaps

    def __repr__(self) -> str:
        return (f"PmwdBackend(mesh_factor={self.mesh_factor}, steps={self.steps}, a_start={self.a_start}, "
                f"lpt_order={self.lpt_order})")


# Registered only where pmwd is installed: elsewhere the registry keeps its placeholder, whose error
# names the extra (find_spec does not import pmwd, so JAX's x64 flag is untouched here).
if importlib.util.find_spec("pmwd") is not None:
    register_backend("pmwd", PmwdBackend)
