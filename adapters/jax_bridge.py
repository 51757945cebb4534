"""Calling a torch computation from JAX: ``jax.custom_vjp`` over ``jax.pure_callback``.

:func:`torch_callable` turns a function of torch tensors into a function of JAX arrays that works under
``jax.jit``, ``jax.grad`` / ``jax.vjp`` (reverse mode, through the custom VJP) and ``jax.vmap`` (the callback
then runs once per batch element, one after the other). Forward mode (``jax.jvp``, ``jax.jacfwd``) is refused
by JAX for ``custom_vjp`` functions, and so are second derivatives (the backward pass is itself a callback).

* Forward: a host callback runs the torch function under ``torch.no_grad()``; no torch graph is kept.
* Forward under differentiation (``jax.grad``, ``jax.vjp``, ``jax.value_and_grad``: JAX's ``custom_vjp``
  forward rule): the callback runs the torch function with grad enabled on copies of the inputs and keeps
  that one graph for the backward (one per :func:`torch_callable`, replaced by the next).
* Backward: the residuals are the inputs. A second callback takes the kept graph when its inputs equal the
  residuals exactly and returns ``torch.autograd.grad(outputs, inputs, cotangents)``; otherwise (a
  ``vmap``, whose forwards all run before the backwards) it recomputes the torch forward with grad enabled.
  So a gradient costs one torch forward and one backward, not two forwards (a sampler's every step); the
  same numbers either way (the same operations on the same inputs).

dtypes: the outputs have JAX's default float dtype at trace time (float32, or float64 under
``jax_enable_x64`` / ``jax.enable_x64(True)``, see :func:`jax_float_dtype`); the gradient of each input
has that input's dtype. The torch function receives the inputs in their JAX dtype and computes in its own
(e.g. the emulator's); outputs and gradients are cast to the JAX dtypes on the way back.

What is copied. JAX hands a host callback its operands on the CPU (JAX 0.10: ``jax.Array``s, older JAX:
NumPy arrays). float32 operands are wrapped by DLPack (or ``torch.from_numpy``) without a copy; float64
ones cross as uint32 pairs (an exact bitcast, see ``_encode`` below) and are viewed back as float64 by NumPy,
again without a copy. The tensors share JAX's buffers and are never written. A torch device other than
the CPU costs one host-to-device copy of every input and one device-to-host copy of every output (XLA does
not give a callback device buffers). A cast (JAX float32 in, float64 emulator) is one copy. The torch
results come back as NumPy views of the tensors (no copy on the CPU), which XLA copies once into its own
output buffer.
"""

from __future__ import annotations

import functools
import inspect
import logging
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..errors import InputError, require

__all__ = ["JAX_EXTRA", "jax_module", "jax_float_dtype", "to_torch", "to_numpy", "torch_callable", "concrete_float"]

logger = logging.getLogger(__name__)

#: The pyproject extra that installs JAX for these adapters.
JAX_EXTRA = "jax"


def jax_module():
    """The ``jax`` module (:class:`~emu_backend.errors.MissingDependencyError` naming the ``jax`` extra)."""
    return require("jax", JAX_EXTRA)


def jax_float_dtype() -> np.dtype:
    """JAX's default float dtype here and now: float64 where x64 is enabled (globally or in this thread's
    ``jax.enable_x64`` context), else float32."""
    jax = jax_module()
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def concrete_float(value) -> float | None:
    """``float(value)`` for a concrete scalar, None for a JAX tracer (inside ``jit``, ``grad``, ``vmap``)."""
    jax = jax_module()
    try:
        return float(value)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError, TypeError):
        return None


def to_torch(array, device=None, dtype=None) -> torch.Tensor:
    """A torch view of a host array that JAX passed to a callback (no copy when device and dtype agree).

    Parameters
    ----------
    array : jax.Array or numpy.ndarray
        On the CPU. The tensor shares its buffer: it must not be written to.
    device, dtype : optional
        Where and in which dtype the tensor is wanted (a copy when they differ).
    """
    if isinstance(array, np.ndarray):
        with warnings.catch_warnings():  # JAX's buffers are read-only; the tensor is never written
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(array)
    else:
        tensor = torch.from_dlpack(array)
    return tensor.to(device=device, dtype=dtype)


def to_numpy(tensor: torch.Tensor, dtype) -> np.ndarray:
    """A torch result as a NumPy array of ``dtype`` for JAX (a view on the CPU when the dtype agrees)."""
    return np.asarray(tensor.detach().to("cpu").numpy(), dtype=dtype)


# float64 crosses the callback boundary as pairs of uint32: JAX converts a callback's operands under the
# x64 setting of the thread that runs it, and XLA may run it on a thread without the caller's thread-local
# jax.enable_x64(True), where float64 operands would silently arrive rounded to float32 (observed with JAX
# 0.10 inside pmwd's jitted programs). A bitcast is exact and the NumPy views keep it copy-free.
def _encode(jax, x):
    return jax.lax.bitcast_convert_type(x, np.uint32) if x.dtype == np.float64 else x


def _decode(jax, x, dtype):
    return jax.lax.bitcast_convert_type(x, np.float64) if dtype == np.float64 else x


def _wire(shape, dtype):
    """Shape and dtype of an array of ``shape``, ``dtype`` on the callback's wire."""
    return (tuple(shape) + (2,), np.dtype(np.uint32)) if dtype == np.float64 else (tuple(shape), np.dtype(dtype))


def _host_in(array, dtype, device) -> torch.Tensor:
    if dtype == np.float64:  # uint32 pairs back to float64: NumPy views, no copy
        raw = np.asarray(array)
        return to_torch(raw.view(np.float64).reshape(raw.shape[:-1]), device)
    return to_torch(array, device)


def _host_out(tensor: torch.Tensor, dtype) -> np.ndarray:
    out = to_numpy(tensor, dtype)
    return np.ascontiguousarray(out).view(np.uint32).reshape(out.shape + (2,)) if dtype == np.float64 else out


def _pure_callback(jax, callback, result, *args):
    """``jax.pure_callback`` batched sequentially under ``vmap`` (``vmap_method`` from JAX 0.4.34 on)."""
    if "vmap_method" in inspect.signature(jax.pure_callback).parameters:
        return jax.pure_callback(callback, result, *args, vmap_method="sequential")
    return jax.pure_callback(callback, result, *args, vectorized=False)  # pragma: no cover - JAX < 0.4.34


def _call_host(jax, host_fn, in_dtypes, out_specs, *args):
    """Run ``host_fn(*tensors) -> tensors`` in a callback: float64 on the wire as uint32 pairs."""
    def callback(*wire):
        outs = host_fn(*(_host_in(a, d, None) for a, d in zip(wire, in_dtypes)))
        return tuple(_host_out(o, d) for o, (_, d) in zip(outs, out_specs))

    result = tuple(jax.ShapeDtypeStruct(*_wire(s, d)) for s, d in out_specs)
    wire = _pure_callback(jax, callback, result, *(_encode(jax, a) for a in args))
    return tuple(_decode(jax, w, d) for w, (_, d) in zip(wire, out_specs))


def _host_forward(torch_fn, device, *inputs):
    with torch.no_grad():
        return torch_fn(*(t.to(device) for t in inputs))


class _KeptGraph:
    """The torch graph of a :func:`torch_callable`'s last forward under differentiation: its input copies
    (the leaves) and outputs, until its backward takes it."""

    def __init__(self):
        self.inputs, self.outs = None, None

    def take(self, tensors) -> tuple | None:
        """The kept (leaves, outputs), handed over once, if the leaves equal ``tensors`` exactly; else None."""
        inputs = self.inputs
        if inputs is None or len(inputs) != len(tensors) or not all(
                a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.detach(), b.to(a.device))
                for a, b in zip(inputs, tensors)):
            return None
        found, self.inputs, self.outs = (inputs, self.outs), None, None
        return found


def _host_forward_kept(torch_fn, device, kept: _KeptGraph, *inputs):
    # copies: the callback's operands are JAX's buffers, which XLA may reuse once the callback returns
    leaves = [t.to(device).clone().requires_grad_(True) for t in inputs]
    with torch.enable_grad():
        outs = tuple(torch_fn(*leaves))
    kept.inputs, kept.outs = leaves, outs
    return tuple(o.detach() for o in outs)


def _grads(outs, inputs, cotangents, n_inputs):
    pairs = [(o, c.to(o.device, o.dtype)) for o, c in zip(outs, cotangents) if o.requires_grad]
    return (torch.autograd.grad([o for o, _ in pairs], inputs, [c for _, c in pairs], allow_unused=True)
            if pairs else [None] * n_inputs)


def _host_backward(torch_fn, device, n_inputs, kept: _KeptGraph, *tensors):
    found = kept.take(tensors[:n_inputs])
    if found is not None:
        inputs, outs = found
        grads = _grads(outs, inputs, tensors[n_inputs:], n_inputs)
        return tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors[:n_inputs]))
    inputs = [t.to(device).requires_grad_(True) for t in tensors[:n_inputs]]
    with torch.enable_grad():
        grads = _grads(torch_fn(*inputs), inputs, tensors[n_inputs:], n_inputs)
    return tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors[:n_inputs]))


def torch_callable(torch_fn: Callable[..., Sequence[torch.Tensor]], out_shapes: Sequence[Sequence[int]], *,
                   device=None) -> Callable:
    """A JAX function (``jit``, ``grad``, ``vmap``) that runs ``torch_fn`` on the host.

    Parameters
    ----------
    torch_fn : callable
        ``torch_fn(*tensors) -> sequence of tensors``, differentiable in torch. It receives one tensor per
        JAX argument (on ``device``, in the argument's dtype, sharing the argument's buffer on the CPU:
        never write to it) and must return tensors of the shapes ``out_shapes``, in that order. It is
        called once per forward evaluation (with grad enabled when JAX differentiates it, its graph kept
        for the backward) and once more per backward pass whose forward's graph was not kept (module
        docstring).
    out_shapes : sequence of tuple of int
        Shapes of the outputs.
    device : torch.device or str, optional
        Where the inputs are placed (default: the CPU, where JAX's callback operands live).

    Returns
    -------
    callable
        ``f(*arrays) -> tuple of arrays``: float JAX arrays of any shape in, one array per output shape out,
        of :func:`jax_float_dtype` at trace time. Its VJP gives each input a gradient of the input's dtype.

    Examples
    --------
    >>> import jax, jax.numpy as jnp  # doctest: +SKIP
    >>> square = torch_callable(lambda x: (x ** 2,), [(3,)])  # doctest: +SKIP
    >>> jax.grad(lambda x: square(x)[0].sum())(jnp.arange(3.0))  # doctest: +SKIP
    Array([0., 2., 4.], dtype=float32)
    """
    jax = jax_module()
    shapes = tuple(tuple(int(d) for d in s) for s in out_shapes)
    where = torch.device("cpu") if device is None else torch.device(device)

    kept = _KeptGraph()

    def forward(host, *args):
        dtype = jax_float_dtype()
        return _call_host(jax, host, [a.dtype for a in args], [(s, dtype) for s in shapes], *args)

    @jax.custom_vjp
    def call(*args):
        return forward(functools.partial(_host_forward, torch_fn, where), *args)

    def call_fwd(*args):
        return forward(functools.partial(_host_forward_kept, torch_fn, where, kept), *args), args

    def call_bwd(args, cotangents):
        dtypes = [a.dtype for a in args] + [c.dtype for c in cotangents]
        return _call_host(jax, functools.partial(_host_backward, torch_fn, where, len(args), kept), dtypes,
                          [(a.shape, a.dtype) for a in args], *args, *cotangents)

    call.defvjp(call_fwd, call_bwd)

    def apply(*args):
        arrays = tuple(jax.numpy.asarray(a) for a in args)
        for i, a in enumerate(arrays):
            if not np.issubdtype(a.dtype, np.floating):
                raise InputError(f"argument {i} of a torch callable must be a float array, got {a.dtype}")
        return call(*arrays)

    return apply
