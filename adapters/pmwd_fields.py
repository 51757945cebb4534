"""Conversions between pmwd's linear modes and particles and our ICs and snapshots.

Conventions (units, growth normalisation ``D_1(a=1)``, Fourier modes, x64) are stated in
:mod:`emu_backend.adapters.pmwd_convert`. In short: pmwd's linear modes at ``a=None`` are
``rfftn(delta_0) * cell_vol / D_1(a=1)`` of our z = 0 density; ``Particles.disp`` is in [L]
(Mpc/h) from the nearest mesh point ``pmid``; ``Particles.vel = a^2 dx/dt`` in [H_0 L]
(100 km/s), our ``v = a dx/dt`` in km/s.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.fft

from ..checks import check_real
from ..cosmology.params import Cosmology
from ..datatypes.snapshot import A_MAX, Snapshot
from ..errors import InputError
from ..ics.conditions import InitialConditions
from .jax_bridge import jax_float_dtype
from .pmwd_convert import (
    check_grid,
    check_lcdm,
    grid_from_configuration,
    jax_module,
    length_unit_mpc_h,
    pmwd_growth_today,
    pmwd_modules,
    pmwd_version,
    pmwd_x64,
    velocity_unit_km_s,
)

__all__ = [
    "initial_conditions_from_modes",
    "modes_from_initial_conditions",
    "particles_from_fields",
    "particles_from_snapshot",
    "snapshot_from_particles",
    "lagrangian_displacement",
    "lagrangian_displacement_jax",
]

logger = logging.getLogger(__name__)


# -- linear modes <-> our initial conditions --------------------------------------------------
def initial_conditions_from_modes(modes, cosmo, conf, *, white_noise: bool = False,
                                  seed: int | None = None) -> InitialConditions:
    """Our z = 0 :class:`InitialConditions` from pmwd modes.

    Parameters
    ----------
    modes : array, shape (n, n, n) real or (n, n, n//2+1) complex
        ``white_noise=False``: pmwd's linear modes at ``a=None`` (``linear_modes(..., a=None)``):
        complex Fourier modes [L^3] or real overdensity (``real=True``).
        ``white_noise=True``: pmwd white noise (``white_noise(seed, conf)``, Fourier or real);
        pmwd's ``linear_modes`` is applied first.
    cosmo : pmwd.Cosmology
        Flat LambdaCDM with tables (``boltzmann``); its ``Omega_m`` sets ``D_1(a=1)``.
    conf : pmwd.Configuration
        Cubic 3D grid.
    white_noise : bool
        Whether ``modes`` is white noise.
    seed : int, optional
        Recorded in the ICs.

    Returns
    -------
    InitialConditions
        ``density = D_1(1) irfftn(modes) / cell_vol`` (z = 0); the displacement is
        ``i k delta_k / k^2`` with the Nyquist planes dropped.
    """
    pmwd = pmwd_modules()
    spec = grid_from_configuration(conf)
    check_lcdm(cosmo)
    n = spec.n
    arr = np.asarray(modes)
    if arr.shape == (n, n, n // 2 + 1) and np.iscomplexobj(arr):
        complex_modes = True
    elif arr.shape == (n, n, n) and np.isrealobj(arr) and arr.dtype.kind == "f":
        complex_modes = False
    else:
        raise InputError(f"modes must be complex of shape {(n, n, n // 2 + 1)} or real of shape {(n, n, n)} "
                         f"for this configuration, got {arr.dtype} {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError("modes contain NaN or inf")
    if white_noise:
        with pmwd_x64():
            arr = np.asarray(pmwd.linear_modes(modes, cosmo, conf))
        complex_modes = True
    if complex_modes:
        delta = scipy.fft.irfftn(arr.astype(np.complex128), s=(n, n, n)) / float(conf.ptcl_cell_vol)
    else:
        delta = arr.astype(np.float64)
    delta *= pmwd_growth_today(float(cosmo.Omega_m))
    prov = {"source": "pmwd_modes", "white_noise": bool(white_noise), "pmwd_version": pmwd_version()}
    return InitialConditions.from_linear_density(delta, spec.box_size, seed=seed, provenance=prov)


def modes_from_initial_conditions(ics: InitialConditions, cosmo, conf):
    """pmwd linear Fourier modes at ``a=None`` [L^3] of our z = 0 ICs (input of ``pmwd.lpt``).

    ``modes = rfftn(ics.density) * cell_vol / D_1(a=1)``, complex of ``conf.float_dtype``'s
    precision, shape ``(n, n, n//2+1)``; ``conf`` must have our grid (n and box).
    """
    if not isinstance(ics, InitialConditions):
        raise InputError(f"ics must be InitialConditions, got {type(ics).__name__}")
    spec = grid_from_configuration(conf)
    check_grid(spec, ics.n, ics.box_size, "ics")
    check_lcdm(cosmo)
    modes = scipy.fft.rfftn(ics.density.astype(np.float64))
    modes *= float(conf.ptcl_cell_vol) / pmwd_growth_today(float(cosmo.Omega_m))
    cdtype = np.complex64 if np.dtype(conf.float_dtype) == np.float32 else np.complex128
    jax = jax_module()
    with pmwd_x64():
        return jax.numpy.asarray(modes.astype(cdtype))


# -- Snapshot <-> Particles ---------------------------------------------------------------------
def particles_from_fields(displacement, velocity, a: float, conf):
    """pmwd ``Particles`` (pmid, disp [L], canonical vel [H_0 L]) of fields on our Lagrangian grid, in JAX.

    Differentiable (``jax.grad``, ``jax.jit``) with respect to both fields: the conversion is
    ``disp = disp_grid + displacement / (conf.L / conf.Mpc_SI)`` and ``vel = a v / (conf.V / 1e3)``, with
    ``pmid`` and ``disp_grid`` from ``Particles.gen_grid(conf)`` (C order of the Lagrangian ``(i, j, k)``).
    Displacements are not wrapped (pmwd wraps ``pmid + disp`` where it paints).

    Parameters
    ----------
    displacement : array, shape (3, n, n, n)
        Displacement from the Lagrangian grid [Mpc/h].
    velocity : array, shape (3, n, n, n)
        Peculiar velocity ``a dx/dt`` [km/s].
    a : float
        Scale factor of the fields, in (0, 1.5].
    conf : pmwd.Configuration
        Cubic grid of ``n^3`` particles.

    Returns
    -------
    pmwd.Particles
        In ``conf.float_dtype`` (computed in float64 first: the fields are converted under ``pmwd_x64()``).
    """
    pmwd = pmwd_modules()
    spec = grid_from_configuration(conf)
    a = check_real(a, "a", 0.0, A_MAX, lo_open=True)
    n = spec.n
    jnp = jax_module().numpy
    with pmwd_x64():
        dtype = jnp.float64
        dis, vel = (jnp.asarray(f).astype(dtype) for f in (displacement, velocity))
        for name, f in (("displacement", dis), ("velocity", vel)):
            if tuple(f.shape) != (3, n, n, n):
                raise InputError(f"{name} must have shape {(3, n, n, n)} for this configuration, got {tuple(f.shape)}")
        grid = pmwd.Particles.gen_grid(conf)
        disp = grid.disp.astype(dtype) + dis.reshape(3, -1).T / length_unit_mpc_h(conf)
        return pmwd.Particles(conf, grid.pmid, disp, vel=vel.reshape(3, -1).T * (a / velocity_unit_km_s(conf)))


def particles_from_snapshot(snapshot: Snapshot, conf):
    """pmwd ``Particles`` (pmid, disp [L], canonical vel [H_0 L]) of our snapshot, in Lagrangian order.

    ``pmid`` and the Lagrangian offsets come from ``Particles.gen_grid(conf)``; ``disp`` adds our
    displacement (minimal image) converted to [L]; ``vel = a v / (conf.V / 1e3 km/s)``
    (:func:`particles_from_fields`).
    """
    if not isinstance(snapshot, Snapshot):
        raise InputError(f"snapshot must be a Snapshot, got {type(snapshot).__name__}")
    spec = grid_from_configuration(conf)
    check_grid(spec, snapshot.grid, snapshot.box_size, "snapshot")
    return particles_from_fields(snapshot.displacement_field(), snapshot.velocity_field(), snapshot.a, conf)


def lagrangian_displacement_jax(ptcl):
    """Displacements [Mpc/h] of pmwd ``Particles`` from their Lagrangian grid points, as a JAX array.

    Differentiable with respect to ``ptcl.disp``. Computed in JAX's float dtype at the call (float64
    under ``pmwd_x64()``; :func:`lagrangian_displacement` is this in float64 as NumPy).

    Parameters
    ----------
    ptcl : pmwd.Particles
        ``n^3`` particles in ``Particles.gen_grid(ptcl.conf)`` order.

    Returns
    -------
    jax.Array, shape (n^3, 3)
        ``(pmid - pmid_grid) * cell_size + disp - disp_grid``, pmid differences taken modulo the
        mesh (minimal image), converted from [L] to Mpc/h.
    """
    pmwd = pmwd_modules()
    if not isinstance(ptcl, pmwd.Particles):
        raise InputError(f"ptcl must be pmwd.Particles, got {type(ptcl).__name__}")
    conf = ptcl.conf
    n = grid_from_configuration(conf).n
    if len(ptcl) != n**3:
        raise InputError(f"ptcl has {len(ptcl)} particles, the configuration's grid {n}^3 = {n**3}")
    jnp = jax_module().numpy
    dtype = jnp.promote_types(ptcl.disp.dtype, jax_float_dtype())  # float64 under x64
    with pmwd_x64():
        grid = pmwd.Particles.gen_grid(conf)
        mesh = jnp.asarray(conf.mesh_shape, dtype=jnp.int64)
        dpmid = ptcl.pmid.astype(jnp.int64) - grid.pmid.astype(jnp.int64)
        dpmid = dpmid - mesh * jnp.round(dpmid / mesh).astype(jnp.int64)  # pmid may be wrapped or not
        dis = dpmid.astype(dtype) * float(conf.cell_size) + (ptcl.disp.astype(dtype) - grid.disp.astype(dtype))
        return dis * length_unit_mpc_h(conf)


def lagrangian_displacement(ptcl) -> np.ndarray:
    """Displacements [Mpc/h] of pmwd ``Particles`` from their Lagrangian grid points, float64 NumPy.

    Parameters
    ----------
    ptcl : pmwd.Particles
        ``n^3`` particles in ``Particles.gen_grid(ptcl.conf)`` order.

    Returns
    -------
    ndarray, shape (n^3, 3), float64
        :func:`lagrangian_displacement_jax` computed under ``pmwd_x64()``.
    """
    with pmwd_x64():
        return np.asarray(lagrangian_displacement_jax(ptcl), dtype=np.float64)


def snapshot_from_particles(ptcl, a: float, cosmology: Cosmology, *, meta: dict | None = None) -> Snapshot:
    """Our :class:`Snapshot` of pmwd ``Particles`` on a Lagrangian grid (``gen_grid`` order).

    Parameters
    ----------
    ptcl : pmwd.Particles
        ``n^3`` particles with ``vel``, in the order of ``Particles.gen_grid(ptcl.conf)`` (as made by
        ``lpt`` and kept by ``nbody``).
    a : float
        Scale factor of the particles (pmwd's Particles do not carry it), in (0, 1.5].
    cosmology : Cosmology
        Our cosmology of the run.
    meta : dict, optional
        Provenance.

    Returns
    -------
    Snapshot
        Positions ``q + disp`` [Mpc/h], ``v = vel (conf.V / 1e3) / a`` [km/s], ids ``0..n^3-1``.
    """
    pmwd = pmwd_modules()
    if not isinstance(ptcl, pmwd.Particles):
        raise InputError(f"ptcl must be pmwd.Particles, got {type(ptcl).__name__}")
    a = check_real(a, "a", 0.0, A_MAX, lo_open=True)
    conf = ptcl.conf
    spec = grid_from_configuration(conf)
    n = spec.n
    if ptcl.vel is None:
        raise InputError("ptcl.vel is None: pmwd Particles without velocities cannot become a Snapshot")
    dis = lagrangian_displacement(ptcl)
    vel = np.asarray(ptcl.vel, dtype=np.float64) * (velocity_unit_km_s(conf) / a)
    if not (np.isfinite(dis).all() and np.isfinite(vel).all()):
        raise InputError("ptcl has NaN or inf displacements or velocities")
    return Snapshot.from_displacement(dis.T.reshape(3, n, n, n), vel.T.reshape(3, n, n, n), a, spec.box_size,
                                      cosmology, meta=meta)
