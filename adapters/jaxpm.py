"""The ``"jaxpm"`` simulator backend: particle-mesh N-body runs with JaxPM (JAX).

Same interface as the ZA/2LPT/emulator backends: our :class:`InitialConditions` in, one
:class:`Snapshot` per requested redshift out. Importing this module registers the backend; without
the extra ``jaxpm`` (``pip install 'emu_backend[jaxpm]'``) ``get_backend("jaxpm")`` raises
:class:`MissingDependencyError`. jax, jax_cosmo and jaxpm are imported only when a run starts.

What a run does (JaxPM's documented recipe: ``lpt`` then ``odeint(make_ode_fn(mesh_shape), ...)``)

1. Our z = 0 linear density contrast ``ics.density`` (n^3) is Fourier-interpolated onto the PM mesh
   of ``N = mesh_factor * n`` cells per side (modes of the n-grid kept exactly, Nyquist planes
   dropped, as in :mod:`emu_backend.ics.lpt`).
2. ``jaxpm.pm.lpt(cosmo, delta, particles, a=a_start, order=lpt_order)`` gives 2LPT displacement and
   momentum at ``a_start`` with JaxPM's kernels (exact ``-1/k^2``, 4-point finite-difference gradient).
3. ``jax.experimental.ode.odeint(jaxpm.pm.make_ode_fn(mesh_shape), ...)`` (adaptive Dopri5, ``rtol``,
   ``atol``) integrates the particles to every output ``a`` with CIC painting/reading on the mesh.

JaxPM 0.1.x paints and reads exactly one particle per mesh cell (``cic_paint``/``cic_read`` reshape
the positions to the mesh shape), so a mesh finer than our particle grid is run with ``N^3``
particles that sample the same (band-limited) linear field; the snapshot returns the ``n^3`` of them
that sit on our Lagrangian grid (every ``mesh_factor``-th along each axis), in our id order. The
cost therefore grows as ``mesh_factor^3`` in particles as well as in mesh cells.

Units (JaxPM works in mesh cells and ``H0 = 1``; conversions live only here)

* positions: mesh cells, ``x [Mpc/h] = x_cells * L / N``;
* momenta: ``p = a^2 dx/dt / H0`` in cells (``make_ode_fn``: ``dx/da = p / (a^3 E)``,
  ``dp/da = 1.5 Omega_m F / (a^2 E)``), so the peculiar velocity ``a dx/dt`` is
  ``v [km/s] = 100 * p * (L / N) / a`` (``H0 = 100 km/s per Mpc/h``);
* cosmology: ``jax_cosmo.Cosmology(Omega_c = omega_m - omega_b, Omega_b, h, n_s, sigma8,
  Omega_k = 0, w0 = -1, wa = 0)``; sigma8 is unused (the amplitude comes from the ICs).

Growth: JaxPM's ``lpt`` uses jax_cosmo's growth ODE (matter + Lambda, no radiation, like our closed
form in :mod:`emu_backend.cosmology.growth`), tabulated on 128 log-spaced ``a`` from 1e-3 and
linearly interpolated: it agrees with our hypergeometric ``D`` to ~1e-4 and clips ``D`` at 1
(``a_start < 1`` here). Its second-order factor is ``-3/7 D^2`` without our ``Omega_m^(-1/143)``.

Force compensation (``compensate=True``): JaxPM's force is smoothed twice by the CIC window (paint
and read), which at the trained cell size leaves P(k) at k = 1 h/Mpc about 9% (mesh factor 2) or 4%
(mesh factor 3) low against a finer mesh (docs/training_data.md). With ``compensate`` the painted
density is divided by the squared CIC window in Fourier space (``jaxpm.kernels.cic_compensation``)
before the force is computed, which brings mesh factor 3 to ~1% up to k = 1 h/Mpc. The ODE is then
JaxPM's ``make_ode_fn`` recomposed from its public pieces with that one extra factor.

JAX and torch in one process: nothing here changes a global JAX flag (float32 throughout; x64 stays
as the user set it) or any torch setting. Before JAX is first imported, the adapter sets the
environment default ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (only if unset) so that JAX on a GPU
does not reserve 75% of the device memory that torch also needs.

Several GPUs: JaxPM distributes the mesh with jaxDecomp (pencil-decomposed FFTs, ``sharding=`` and
``halo_size=`` arguments of ``lpt``/``make_ode_fn``); this backend runs on one device (JAX's
default). Users who outgrow one GPU should call JaxPM with a ``jax.sharding.NamedSharding`` directly
(see JaxPM's multi-GPU notebooks) and build snapshots with :meth:`Snapshot.from_displacement`.
A runnable example is in ``docs/adapters/jaxpm.md``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import scipy.fft

from ..checks import check_bool, check_int, check_real
from ..datatypes.snapshot import Snapshot
from ..errors import ComputationError, InputError, require
from ..simulator.backends import Backend, output_scale_factors, register_backend

__all__ = ["JaxPMBackend", "MESH_FACTORS", "to_jax_cosmo", "upsample_density"]

logger = logging.getLogger(__name__)

#: Allowed PM mesh cells per particle per side.
MESH_FACTORS = (1, 2, 3, 4)
#: H0 in km/s per Mpc/h.
_H0_KM_S_PER_MPC_H = 100.0


def _jax_modules():
    """Import jax, jax_cosmo and jaxpm lazily (extra ``jaxpm``)."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    jax = require("jax", "jaxpm")
    jc = require("jax_cosmo", "jaxpm")
    pm = require("jaxpm.pm", "jaxpm")
    ode = require("jax.experimental.ode", "jaxpm")
    return jax, jc, pm, ode


def to_jax_cosmo(cosmology):
    """Our flat LambdaCDM :class:`Cosmology` as a ``jax_cosmo.Cosmology`` (w0 = -1, wa = 0, Omega_k = 0)."""
    _, jc, _, _ = _jax_modules()
    sigma8 = cosmology.sigma8 if cosmology.sigma8 is not None else math.nan
    return jc.Cosmology(Omega_c=cosmology.omega_cdm, Omega_b=cosmology.omega_b, h=cosmology.h,
                        n_s=cosmology.n_s, sigma8=sigma8, Omega_k=0.0, w0=-1.0, wa=0.0)


def upsample_density(density: np.ndarray, factor: int) -> np.ndarray:
    """Fourier-interpolate a periodic ``(n, n, n)`` field onto ``(f n)^3`` points (Nyquist planes dropped).

    Point ``f (i, j, k)`` of the output equals point ``(i, j, k)`` of the input (up to the dropped
    Nyquist modes); the output has no power above the input's Nyquist frequency.
    """
    n = density.shape[0]
    big = factor * n
    dk = scipy.fft.rfftn(np.asarray(density, dtype=np.float64))
    if n % 2 == 0:  # Nyquist planes: not representable symmetrically on the finer mesh
        dk[n // 2, :, :] = 0.0
        dk[:, n // 2, :] = 0.0
        dk[:, :, n // 2] = 0.0
    out = np.zeros((big, big, big // 2 + 1), dtype=np.complex128)
    lo, hi = (n + 1) // 2, n // 2  # frequencies 0..lo-1 and -hi..-1
    for i_src, i_dst in ((slice(0, lo), slice(0, lo)), (slice(n - hi, n), slice(big - hi, big))):
        for j_src, j_dst in ((slice(0, lo), slice(0, lo)), (slice(n - hi, n), slice(big - hi, big))):
            out[i_dst, j_dst, : n // 2 + 1] = dk[i_src, j_src, :]
    return scipy.fft.irfftn(out, s=(big, big, big)) * float(factor) ** 3


def _compensated_ode_fn(mesh_shape):
    """JaxPM's N-body ODE with the painted density divided by the squared CIC window (see module notes)."""
    jax, jc, pm, _ = _jax_modules()
    from jaxpm.kernels import cic_compensation, fftk

    jnp = jax.numpy

    def nbody_ode(state, a, cosmo):
        pos, vel = state
        delta_k = pm.fft3d(pm.cic_paint(jnp.zeros(mesh_shape), pos))
        delta_k = delta_k * cic_compensation(fftk(delta_k)) ** 2
        forces = pm.pm_forces(pos, mesh_shape=mesh_shape, delta=delta_k) * 1.5 * cosmo.Omega_m
        e = jnp.sqrt(jc.background.Esqr(cosmo, a))
        return vel / (a**3 * e), forces / (a**2 * e)

    return nbody_ode


class JaxPMBackend(Backend):
    """Particle-mesh N-body with JaxPM: 2LPT at ``a_start``, then an adaptive ODE solve to each output.

    Parameters
    ----------
    mesh_factor : int
        PM mesh cells per particle per side, in 1..4 (mesh ``N = mesh_factor * n``; see the module
        notes for how JaxPM's one-particle-per-cell painting is handled).
    a_start : float
        Scale factor of the LPT initial conditions, in [0.01, 0.5]; every output must be later.
    lpt_order : {1, 2}
        Order of the LPT initial conditions (JaxPM's ``lpt(order=...)``).
    rtol, atol : float
        Relative and absolute tolerances of ``jax.experimental.ode.odeint`` (adaptive Dopri5), each in
        [1e-7, 1e-1]; ``atol`` applies to positions and momenta in mesh cells.
    mxstep : int
        Largest number of ODE steps between two output times, in [10, 100000]. Beyond it
        ``odeint`` stops stepping and extrapolates without an error; float32 runs at the allowed
        tolerances take far fewer (``meta["force_evaluations"]`` counts the PM force evaluations,
        six per Dopri5 step including rejected ones).
    compensate : bool
        Divide the painted density by the squared CIC window before the force (module notes); off
        by default to stay JaxPM's own scheme, on in ``make-training-set``.

    Examples
    --------
    >>> JaxPMBackend(mesh_factor=2).describe()["mesh_factor"]
    2
    """

    name = "jaxpm"

    def __init__(self, mesh_factor: int = 2, *, a_start: float = 0.1, lpt_order: int = 2,
                 rtol: float = 1e-4, atol: float = 1e-4, mxstep: int = 10000, compensate: bool = False):
        self.mesh_factor = check_int(mesh_factor, "mesh_factor", MESH_FACTORS[0], MESH_FACTORS[-1],
                                     what=f"an integer in {MESH_FACTORS}")
        self.a_start = check_real(a_start, "a_start", 0.01, 0.5)
        self.lpt_order = check_int(lpt_order, "lpt_order", 1, 2, what="1 or 2")
        self.rtol = check_real(rtol, "rtol", 1e-7, 1e-1)
        self.atol = check_real(atol, "atol", 1e-7, 1e-1)
        self.mxstep = check_int(mxstep, "mxstep", 10, 100000)
        self.compensate = check_bool(compensate, "compensate")
        _jax_modules()  # MissingDependencyError naming the extra now, not at the first run

    def describe(self) -> dict:
        return {"mesh_factor": self.mesh_factor, "a_start": self.a_start, "lpt_order": self.lpt_order,
                "rtol": self.rtol, "atol": self.atol, "mxstep": self.mxstep, "compensate": self.compensate,
                "solver": "jax.experimental.ode.odeint"}

    def run(self, ics, cosmology, z):
        a_out = output_scale_factors(z, self.a_start)
        jax, _, pm, ode = _jax_modules()
        import jaxpm

        n, m, box = ics.n, self.mesh_factor, ics.box_size
        big = m * n
        cell = box / big  # Mpc/h per mesh cell
        order = np.argsort(a_out)
        times = np.concatenate([[self.a_start], a_out[order]]).astype(np.float32)
        delta = upsample_density(ics.density, m).astype(np.float32)
        grid = np.stack(np.meshgrid(*(np.arange(big, dtype=np.float32),) * 3, indexing="ij"), axis=-1)
        try:
            x32 = jax.enable_x64(False)  # float32 even where e.g. ``import pmwd`` switched x64 on globally
        except (AttributeError, TypeError):  # older jax: no context manager; float32 is then the default

            x32 = contextlib.nullcontext()
        try:
            with x32:
                pos_t, mom_t, n_evals = self._integrate(jax, pm, ode, cosmology, delta, grid, times)
            pos_t = np.asarray(pos_t)[1:, ::m, ::m, ::m].astype(np.float64)  # (T, n, n, n, 3) cells
            mom_t = np.asarray(mom_t)[1:, ::m, ::m, ::m].astype(np.float64)
        except (InputError, MemoryError):
            raise
        except Exception as exc:
            raise ComputationError(f"JaxPM run failed (n={n}, mesh {big}^3, a_start={self.a_start}): {exc}") from exc
        if not (np.isfinite(pos_t).all() and np.isfinite(mom_t).all()):
            raise ComputationError(f"JaxPM returned NaN/inf (rtol={self.rtol}, atol={self.atol}, mxstep={self.mxstep});"
                                   " a tighter tolerance or a larger mxstep may help")
        logger.info("JaxPM: %d^3 particles, mesh %d^3, a %.3g -> %.3g, %d force evaluations", big, big,
                    self.a_start, float(a_out.max()), n_evals)
        q = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float64) * (box / n),) * 3, indexing="ij"))
        meta = {**self.describe(), "n_mesh": big, "force_evaluations": n_evals, "jax_version": jax.__version__,
                "jaxpm_version": getattr(jaxpm, "__version__", None) or _dist_version("jaxpm"),
                "jax_device": str(jax.devices()[0])}
        snaps = [None] * len(z)
        for slot, idx in enumerate(order):
            a = float(a_out[idx])
            x = np.moveaxis(pos_t[slot], -1, 0) * cell  # (3, n, n, n) Mpc/h, not wrapped
            vel = np.moveaxis(mom_t[slot], -1, 0) * (_H0_KM_S_PER_MPC_H * cell / a)  # km/s
            snaps[idx] = Snapshot.from_displacement(x - q, vel, 1.0 / (1.0 + float(z[idx])), box, cosmology,
                                                    meta=dict(meta))
        return snaps

    def _integrate(self, jax, pm, ode, cosmology, delta, grid, times):
        """LPT at ``a_start`` then the adaptive ODE solve; returns positions, momenta (T+1, N, N, N, 3)
        in mesh units and the number of force evaluations."""
        jnp = jax.numpy
        big = grid.shape[0]
        cosmo = to_jax_cosmo(cosmology)
        particles = jnp.asarray(grid)
        dx, p, _ = pm.lpt(cosmo, jnp.asarray(delta), particles, a=self.a_start, order=self.lpt_order)
        jaxpm_ode = (_compensated_ode_fn if self.compensate else pm.make_ode_fn)((big, big, big))
        n_evals = [0]

        def ode_fn(state, a, cosmo_):  # JaxPM's ODE, counting force evaluations for the provenance
            jax.debug.callback(lambda: n_evals.__setitem__(0, n_evals[0] + 1))
            return jaxpm_ode(state, a, cosmo_)

        pos_t, mom_t = ode.odeint(ode_fn, [particles + dx, p], jnp.asarray(times), cosmo,
                                  rtol=self.rtol, atol=self.atol, mxstep=self.mxstep)
        return pos_t, mom_t, n_evals[0]

    def __repr__(self) -> str:
        return (f"JaxPMBackend(mesh_factor={self.mesh_factor}, a_start={self.a_start}, lpt_order={self.lpt_order}, "
                f"rtol={self.rtol}, atol={self.atol})")


def _dist_version(name: str):

    try:
        return version(name)
    except PackageNotFoundError:  # pragma: no cover
        return None


register_backend("jaxpm", JaxPMBackend)
