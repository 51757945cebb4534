"""How the network runs on its device: arithmetic precision (TF32, bf16/fp16 autocast) and ``torch.compile``.

Both are inference options of :class:`~emu_backend.inference.Emulator`; neither changes the weights.

Precision
    ``"fp32"`` (default): IEEE float32 convolutions everywhere. On CUDA this *disables* TF32 inside the
    run, which PyTorch otherwise allows for cuDNN convolutions by default.
    ``"tf32"`` (CUDA only): float32 tensors, TF32 tensor-core convolutions and matmuls.
    ``"bf16"`` / ``"fp16"``: ``torch.autocast`` - convolutions in 16 bits (float32 accumulation on
    GPUs), element-wise work in the convolution's output type. The style modulation and demodulation of
    the weights stay in float32 (:mod:`emu_backend.nn.styled_conv` folds them outside autocast).
    The error each adds against float32 on the golden vectors is measured by
    ``benchmarks/bench_precision.py`` and recorded in docs/performance.md.

Compile
    ``None`` (default): eager. ``"default"``, ``"reduce-overhead"`` (CUDA graphs on GPUs),
    ``"max-autotune"``, ``"max-autotune-no-cudagraphs"``: ``torch.compile`` modes, applied to the
    network's forward (the tile shape is fixed within a run, so one compilation serves every tile).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..checks import check_choice
from ..errors import InputError

__all__ = ["PRECISIONS", "COMPILE_MODES", "check_run_options", "precision_context", "compiled", "emulate_precision",
           "round_to"]

log = logging.getLogger(__name__)

#: Inference precisions (see the module docstring).
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")

#: ``torch.compile`` modes accepted by :class:`~emu_backend.inference.Emulator` (``None``: eager).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_run_options(precision: str, compile_mode: str | None, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse a precision or compile mode that this device and dtype cannot run.

    Raises
    ------
    InputError
        Unknown ``precision`` or ``compile_mode``; ``"tf32"`` off CUDA; a 16-bit autocast or TF32
        together with ``dtype`` float64 (they lower float32 only).
    """
    check_choice(precision, "precision", PRECISIONS)
    check_choice(compile_mode, "compile_mode", (None, *COMPILE_MODES))
    if precision == "tf32" and device.type != "cuda":
        raise InputError(f"precision 'tf32' needs a CUDA device, got {device.type!r}; "
                         f"on {device.type} use one of ('fp32', 'bf16', 'fp16')")
    if precision in _AUTOCAST and not torch.amp.is_autocast_available(device.type):
        raise InputError(f"precision {precision!r} runs under torch.autocast, which device type {device.type!r} "
                         f"does not have; use 'fp32' there")
    if precision != "fp32" and dtype != torch.float32:
        raise InputError(f"precision {precision!r} lowers float32 arithmetic; it needs dtype float32, got {dtype}")
    if precision in _AUTOCAST and device.type == "cpu":
        log.info("precision %s on CPU: autocast runs, but it is fast only on CPUs with %s instructions "
                 "(measured in docs/performance.md)", precision, "AVX512-BF16/AMX" if precision == "bf16" else "AVX512-FP16/AMX")


def _cuda_fp32_precision(value: str) -> contextlib.AbstractContextManager:
    """Temporarily set the CUDA convolution and matmul float32 precision (``"ieee"`` or ``"tf32"``)."""
    cudnn_conv = torch.backends.cudnn.conv
    matmul = torch.backends.cuda.matmul

    @contextlib.contextmanager
    def ctx():
        old = (cudnn_conv.fp32_precision, matmul.fp32_precision)
        cudnn_conv.fp32_precision, matmul.fp32_precision = value, value
        try:
            yield
        finally:
            cudnn_conv.fp32_precision, matmul.fp32_precision = old

    return ctx()


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """The context a network call runs in for ``precision`` on ``device`` (flags restored on exit).

    Parameters
    ----------
    precision : {"fp32", "tf32", "bf16", "fp16"}
    device : torch.device
        Any device type torch knows, ``meta`` included (FLOP counts, memory plans); a 16-bit
        ``precision`` needs one with autocast.

    Raises
    ------
    InputError
        ``"bf16"``/``"fp16"`` on a device type without autocast (``meta``).

    Examples
    --------
    >>> x, w = torch.randn(1, 2, 5, 5, 5), torch.randn(2, 2, 3, 3, 3)
    >>> with precision_context("bf16", torch.device("cpu")):
    ...     torch.nn.functional.conv3d(x, w).dtype
    torch.bfloat16
    """
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(_cuda_fp32_precision("tf32" if precision == "tf32" else "ieee"))
        if precision in _AUTOCAST:
            check_run_options(precision, None, device, torch.float32)
            stack.enter_context(torch.autocast(device.type, dtype=_AUTOCAST[precision]))
        yield


def compiled(net: torch.nn.Module, mode: str | None) -> Callable:
    """``net`` itself (``mode`` None) or its ``torch.compile``-d forward with that mode.

    The compiled callable shares ``net``'s parameters (no copy): the state dict, saving and moving the
    network are unaffected. Compilation happens on the first call (tens of seconds) and again for
    each new tile shape.
    """
    if mode is None:
        return net
    return torch.compile(net, mode=mode, dynamic=False)


def round_to(t: torch.Tensor, precision: str) -> torch.Tensor:
    """``t`` (float32) rounded to the values ``precision`` can hold, returned as float32.

    ``"fp16"`` and ``"bf16"`` through a cast (so fp16 overflows to inf as on a GPU); ``"tf32"`` keeps
    10 mantissa bits (round to nearest, ties away from zero in magnitude); ``"fp32"`` is the identity.
    """
    if check_choice(precision, "precision", PRECISIONS) == "fp32":
        return t
    if precision in _AUTOCAST:
        return t.to(_AUTOCAST[precision]).to(t.dtype)
    bits = t.contiguous().view(torch.int32)  # tf32
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32).reshape(t.shape)


class _RoundedConvolutions(TorchFunctionMode):
    def __init__(self, precision: str):
        super().__init__()
        self.precision = precision

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in (F.conv3d, F.conv_transpose3d, torch.conv3d, torch.conv_transpose3d):
            return func(*args, **kwargs)
        # operands (input, weight, bias) rounded; the product summed in float32, as tensor cores do
        args = [round_to(a, self.precision) if isinstance(a, torch.Tensor) else a for a in args]
        kwargs = {k: round_to(v, self.precision) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        out = func(*args, **kwargs)
        # autocast returns the 16-bit result; TF32 keeps a float32 result
        return out if self.precision == "tf32" else round_to(out, self.precision)


@contextlib.contextmanager
def emulate_precision(precision: str) -> Iterator[None]:
    """Estimate on any device the round-off a GPU ``precision`` adds to float32 convolutions.

    Inside the context every 3-D (transposed) convolution rounds its input, weight and bias to
    ``precision`` (:func:`round_to`), sums in float32 and, for ``"bf16"``/``"fp16"``, rounds its
    output too, as autocast on tensor cores does; the element-wise work stays float32 (autocast would
    round after some of it too, so this is a slight under-estimate). Used to measure the error of
    ``"tf32"`` and ``"fp16"`` on a CPU, where the first does not exist and the second is ~100x slower
    (docs/performance.md); checked against real bf16 autocast in tests/test_acceleration.py.

    Examples
    --------
    >>> x, w = torch.full((1, 1, 1, 1, 1), 1 + 2.0**-12), torch.ones(1, 1, 1, 1, 1)
    >>> F.conv3d(x, w).item()
    1.000244140625
    >>> with emulate_precision("fp16"):
    ...     F.conv3d(x, w).item()
    1.0
    """
    check_choice(precision, "precision", PRECISIONS)
    with _RoundedConvolutions(precision):
        yield
