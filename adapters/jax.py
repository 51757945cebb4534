"""JAX adapter: the differentiable emulator as JAX functions (``jit``, ``grad``, ``vmap``), for numpyro,
blackjax or pmwd pipelines.

Both functions wrap the torch computation of :mod:`emu_backend.differentiable` in a ``jax.custom_vjp``
whose forward and backward passes are host callbacks (:mod:`emu_backend.adapters.jax_bridge`): the
backward recomputes the torch forward with grad enabled and returns ``torch.autograd.grad`` of it, so
JAX's gradients are torch's exact gradients (tile by tile, memory bounded by the tile).

* :func:`jax_forward_model`: a :class:`~emu_backend.differentiable.ForwardModel` as ``f(noise, **params)``,
  white noise and cosmological parameters -> the model's output field(s);
* :func:`jax_emulator`: the emulator alone, ``g(linear_displacement, omega_m) -> (displacement, velocity)``
  (used by the pmwd adapter's differentiable ``emulator_nbody``).

jax is imported only when a function runs (:class:`~emu_backend.errors.MissingDependencyError` naming the
extra ``jax`` without it); nothing here changes a global JAX or torch setting. Limits: reverse mode and
``vmap`` only (``jax.jvp`` / ``jax.hessian`` are refused by JAX for ``custom_vjp`` functions); each call
leaves JAX for the host (a device-to-host copy on a GPU). See docs/adapters/jax.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from ..checks import check_bool, check_positive, check_reals
from ..differentiable import PARAMETERS, ForwardModel, default_tile_size, emulated_fields
from ..errors import InputError
from ..inference import Emulator, ZdepConvention, default_emulator
from ..inference.tiling import check_tile_size
from .jax_bridge import concrete_float, jax_float_dtype, jax_module, torch_callable

__all__ = ["jax_forward_model", "jax_emulator"]

logger = logging.getLogger(__name__)


def _as_scalar(jnp, value, name: str, dtype):
    arr = jnp.asarray(value, dtype=dtype)
    if arr.ndim != 0:
        raise InputError(f"{name} must be a scalar (0-d array or float), got shape {tuple(arr.shape)}")
    return arr


def jax_forward_model(fm: ForwardModel) -> Callable:
    """The forward model ``fm`` as a JAX function ``f(noise, **params)`` equal to ``fm(noise, **params)``.

    Parameters
    ----------
    fm : ForwardModel
        Grid, box, redshift(s), emulator, output kind and default cosmology of the model.

    Returns
    -------
    callable
        ``f(noise, *, omega_m=None, omega_b=None, h=None, n_s=None, sigma8=None)``:

        * ``noise`` : array, shape (N, N, N) -- unit white noise (N = ``fm.grid``);
        * each parameter: a float or 0-d array (omitted or None: ``fm.cosmology``'s value);
        * returns an array per redshift (a list when ``fm`` was built with a sequence of z), of shape
          (3, N, N, N) [Mpc/h] / [km/s] for ``"displacement"`` / ``"velocity"``, (n_mesh,)*3 overdensity for
          ``"density"`` / ``"rsd_density"``, in JAX's default float dtype (float32, or float64 with x64).

        Differentiable (``jax.grad``, ``jax.vjp``) with respect to ``noise`` and to every parameter passed;
        works under ``jax.jit`` and ``jax.vmap`` (batch elements run one after the other).

    Notes
    -----
    The torch computation runs in the emulator's dtype on its device; the noise enters it in JAX's dtype
    (zero-copy on the CPU) and the parameters as float64. Outputs and gradients are cast to JAX's dtypes.
    Argument errors (shape, unknown parameter names) raise :class:`InputError` at trace time; the domain
    check (Omega_m, z, cell size) raises :class:`DomainError` at once where the parameters are concrete,
    and inside the callback (a JAX runtime error quoting it) where they are traced.

    Examples
    --------
    >>> import jax, jax.numpy as jnp  # doctest: +SKIP
    >>> f = jax_forward_model(ForwardModel(8, 8 * 1000 / 512, 0.5, emulator=emu, output="density"))  # doctest: +SKIP
    >>> g = jax.grad(lambda x, om: jnp.sum(f(x, omega_m=om) ** 2), argnums=(0, 1))  # doctest: +SKIP
    >>> dnoise, dom = g(jnp.zeros((8, 8, 8)), 0.3)  # doctest: +SKIP
    """
    if not isinstance(fm, ForwardModel):
        raise InputError(f"fm must be a ForwardModel, got {type(fm).__name__}")
    jax = jax_module()
    jnp = jax.numpy
    grid = (fm.grid,) * 3
    shape = (3, *grid) if fm.output in ("displacement", "velocity") else (fm.n_mesh,) * 3
    shapes = [shape] * len(fm.zs)

    def f(noise, **params):
        unknown = set(params) - set(PARAMETERS)
        if unknown:
            raise InputError(f"unknown cosmological parameters {sorted(unknown)}; the forward model takes {PARAMETERS}")
        names = tuple(k for k in PARAMETERS if params.get(k) is not None)
        dtype = jax_float_dtype()
        x = jnp.asarray(noise, dtype=dtype)
        if tuple(x.shape) != grid:
            raise InputError(f"noise must have shape {grid}, got {tuple(x.shape)}")
        values = [_as_scalar(jnp, params[k], k, dtype) for k in names]
        concrete = {k: concrete_float(v) for k, v in zip(names, values)}
        if all(v is not None for v in concrete.values()):
            fm.parameters(**concrete)  # InputError / DomainError now rather than inside the callback

        def run(noise_t, *param_ts):
            out = fm(noise_t, **dict(zip(names, param_ts)))
            return (out,) if fm.single else tuple(out)

        outs = torch_callable(run, shapes, device=fm.device)(x, *values)
        return outs[0] if fm.single else list(outs)

    f.__doc__ = (f"JAX twin of {fm.output!r} ForwardModel(grid={fm.grid}, box_size={fm.box_size}, z={fm.zs}): "
                 "f(noise, **params); see emu_backend.adapters.jax.jax_forward_model.")
    return f


def _emulator_fields(emu: Emulator, box_size: float, zs: tuple, tile_size: int | None, velocity: bool,
                     allow_extrapolation: bool, recompute: bool, single: bool):
    """The torch function ``(psi, omega_m) -> (displacement[, velocity])`` behind :func:`jax_emulator`."""

    def run(psi, omega_m):
        om = omega_m.to(device=emu.device, dtype=torch.float64)
        n = int(psi.shape[-1])
        emu.model.domain.check(float(om.detach()), zs, box_size, n, allow_extrapolation)
        fields = emulated_fields(emu.model.net, psi.to(device=emu.device, dtype=emu.dtype), om, zs,
                                 tile_size=tile_size or default_tile_size(n), velocity=velocity, recompute=recompute)
        dis, vel = [f[0] for f in fields], [f[1] for f in fields]
        stacked = (dis, vel) if velocity else (dis,)
        return tuple(f[0] if single else torch.stack(f) for f in stacked)

    return run


def jax_emulator(box_size: float, z, *, emulator: Emulator | None = None, tile_size: int | None = None,
                 velocity: bool = True, allow_extrapolation: bool | None = None, recompute: bool = True) -> Callable:
    """The map2map_zdep emulator as a JAX function of the z = 0 linear displacement and Omega_m.

    Parameters
    ----------
    box_size : float
        Box side [Mpc/h] (the emulator's domain check compares ``box_size / N`` with its trained cell).
    z : float or sequence of float
        Output redshift(s).
    emulator : Emulator, optional
        A map2map_zdep :class:`~emu_backend.inference.Emulator` (default: the shipped one); its dtype and
        device are the computation's.
    tile_size : int, optional
        Output tile side, a multiple of 8 (default: N rounded up to 8, at most 32); sets the peak memory of
        the backward pass, not the result (beyond round-off).
    velocity : bool
        Also return the velocities.
    allow_extrapolation : bool, optional
        Run outside the training domain; None: the emulator's own setting.
    recompute : bool
        Recompute each tile's activations in the backward pass (bounded memory).

    Returns
    -------
    callable
        ``g(linear_displacement, omega_m) -> (displacement, velocity)``:

        * ``linear_displacement`` : array, shape (3, N, N, N) -- z = 0 linear (ZA) displacement [Mpc/h] on
          the particle grid (N >= 8);
        * ``omega_m`` : float or 0-d array;
        * ``displacement`` [Mpc/h] and ``velocity`` [km/s] (peculiar, ``a dx/dt``), each (3, N, N, N) for a
          scalar ``z`` and (len(z), 3, N, N, N) for a sequence, in JAX's default float dtype; ``velocity``
          is None when ``velocity=False``.

        Differentiable with respect to the displacement and to Omega_m (through the style and ``D(z, Om)``,
        exact derivatives); works under ``jax.jit`` and ``jax.vmap``.

    Examples
    --------
    >>> g = jax_emulator(16 * 1000 / 512, 0.0, emulator=emu)  # doctest: +SKIP
    >>> dis, vel = g(jnp.zeros((3, 16, 16, 16)), 0.3)  # doctest: +SKIP
    """
    box = check_positive(box_size, "box_size", unit="Mpc/h")
    single = not isinstance(z, Sequence) and getattr(z, "ndim", 0) == 0
    zs = tuple(check_reals(z, "z", -1.0, lo_open=True, item="redshift"))
    tile = None if tile_size is None else check_tile_size(tile_size, "tile_size")
    velocity = check_bool(velocity, "velocity")
    recompute = check_bool(recompute, "recompute")
    if emulator is None:
        emulator = default_emulator(allow_extrapolation=bool(allow_extrapolation))
    if not isinstance(emulator, Emulator) or not isinstance(emulator.model, ZdepConvention):
        raise InputError("emulator must be an Emulator of the map2map_zdep convention (ZdepConvention), got "
                         f"{type(getattr(emulator, 'model', emulator)).__name__}")
    allow = emulator.allow_extrapolation if allow_extrapolation is None else check_bool(allow_extrapolation,
                                                                                          "allow_extrapolation")
    run = _emulator_fields(emulator, box, zs, tile, velocity, allow, recompute, single)
    jax = jax_module()
    jnp = jax.numpy

    def g(linear_displacement, omega_m):
        dtype = jax_float_dtype()
        x = jnp.asarray(linear_displacement, dtype=dtype)
        if x.ndim != 4 or x.shape[0] != 3 or len(set(x.shape[1:])) != 1 or x.shape[1] < 8:
            raise InputError(f"linear_displacement must have shape (3, N, N, N) with N >= 8, got {tuple(x.shape)}")
        om = _as_scalar(jnp, omega_m, "omega_m", dtype)
        n = int(x.shape[1])
        value = concrete_float(om)
        if value is not None:
            emulator.model.domain.check(value, zs, box, n, allow)  # DomainError now, not in the callback
        shape = (3, n, n, n) if single else (len(zs), 3, n, n, n)
        outs = torch_callable(run, [shape] * (2 if velocity else 1), device=emulator.device)(x, om)
        return (outs[0], outs[1]) if velocity else (outs[0], None)

    return g
