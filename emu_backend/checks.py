"""Validation of arguments shared by the package (numbers, lists of numbers, choices, point arrays, dtypes):
one message format for every check.

Every function returns the checked value in its canonical Python type or raises
:class:`~emu_backend.errors.InputError` naming the argument, the value and what is allowed. Use these
instead of inline ``isinstance`` tests, so that the same argument is refused with the same words
everywhere (library, adapters, CLI).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np

from .errors import InputError

__all__ = [
    "format_number",
    "check_real",
    "check_reals",
    "check_positive",
    "check_int",
    "check_choice",
    "check_bool",
    "check_points",
    "check_float_dtype",
]


def _is_real(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def _scalar(value):
    """``value`` as a plain number where it is a NumPy one: a 0-d array of numbers as its scalar, and a
    float narrower than float64 as the float64 of its shortest decimal form (``np.float32(0.3)`` ->
    ``0.3``, the number its writer meant, not ``0.30000001192...``); anything else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value[()]
    if isinstance(value, np.floating) and value.dtype.itemsize < 8 and np.isfinite(value):
        return float(str(value))
    return value


def format_number(value, digits: int = 4) -> str:
    """A bound or limit for a message: its shortest form when that has at most ``digits + 2`` significant
    digits, else rounded to ``digits`` (``0.1`` -> ``'0.1'``, ``0.0`` -> ``'0.0'``,
    ``0.10857142857142857`` -> ``'0.1086'``, ``-1/3`` -> ``'-0.3333'``).

    Examples
    --------
    >>> format_number(0.49963), format_number(0.4996323529411765), format_number(2**63 - 1)
    ('0.49963', '0.4996', '9223372036854775807')
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return repr(value)
    if isinstance(value, numbers.Integral) or not math.isfinite(float(value)):
        return repr(value) if not isinstance(value, numbers.Integral) else str(int(value))
    text = repr(float(value))
    mantissa = text.split("e")[0].lstrip("-").replace(".", "").lstrip("0")
    return text if len(mantissa) <= digits + 2 else f"{float(value):.{digits}g}"


def _label(name: str, unit: str | None) -> str:
    return name if unit is None else f"{name} [{unit}]"


def check_real(value, key: str, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False,
               hi_open: bool = False, unit: str | None = None, what: str | None = None) -> float:
    """``value`` as a float if it is a finite real number in the range, else :class:`InputError`.

    Parameters
    ----------
    value : object
        The argument to check: a Python or NumPy number, or a 0-d NumPy array of one (bools are refused).
    key : str
        Its name in the error message.
    lo, hi : float
        Range bounds; ``lo_open`` / ``hi_open`` exclude them.
    unit : str, optional
        Unit shown after the name (``"box_size [Mpc/h] = ..."``).
    what : str, optional
        What is allowed, in words; the message is then ``"<key> must be <what>, got <value>"`` for every
        failure.

    Examples
    --------
    >>> check_real(0.5, "a", 0.0, 1.0)
    0.5
    >>> check_real(2.0, "a", 0.0, 1.0, what="a scale factor in [0, 1]")
    Traceback (most recent call last):
    ...
    emu_backend.errors.InputError: a must be a scale factor in [0, 1], got 2.0
    """
    label = _label(key, unit)
    value = _scalar(value)
    finite = _is_real(value) and math.isfinite(float(value))
    v = float(value) if finite else math.nan
    inside = finite and not ((v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi))
    if inside:
        return v
    if what is not None:
        raise InputError(f"{label} must be {what}, got {value!r}")
    if not finite:
        raise InputError(f"{label} must be a finite number, got {value!r}")
    left = "(" if lo_open or lo == -math.inf else "["
    right = ")" if hi_open or hi == math.inf else "]"
    raise InputError(f"{label} = {value!r} is outside the allowed range {left}{format_number(lo)}, "
                     f"{format_number(hi)}{right}")


def check_reals(values, name: str, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False,
                hi_open: bool = False, unit: str | None = None, item: str = "value") -> list[float]:
    """One real number or a non-empty sequence of them, each checked by :func:`check_real`, as a list.

    Parameters
    ----------
    values : real or sequence of real or 1-d array
        The argument (strings are refused).
    name : str
        Its name in the error message.
    lo, hi, lo_open, hi_open, unit
        As :func:`check_real`, for every entry.
    item : str
        What one entry is, for the message of an empty sequence (``"redshift"``).

    Examples
    --------
    >>> check_reals(0.5, "z"), check_reals([0.0, 1], "z", -1.0, lo_open=True)
    ([0.5], [0.0, 1.0])
    """
    if _is_real(values) or (isinstance(values, np.ndarray) and values.ndim == 0):
        seq = [values.item() if isinstance(values, np.ndarray) else values]
    elif isinstance(values, (Sequence, np.ndarray)) and not isinstance(values, (str, bytes)):
        seq = list(np.ravel(values)) if isinstance(values, np.ndarray) else list(values)
    else:
        raise InputError(f"{name} must be a number or a sequence of numbers, got {values!r}")
    if not seq:
        raise InputError(f"{name} must name at least one {item} (a number or a non-empty sequence), got {values!r}")
    return [check_real(v, name, lo, hi, lo_open=lo_open, hi_open=hi_open, unit=unit) for v in seq]


def check_positive(value, name: str, *, unit: str | None = None, what: str | None = None) -> float:
    """``value`` as a float if it is a finite real number > 0 (or a 0-d array of one), else :class:`InputError`.

    ``unit`` is shown after the name; ``what`` replaces "a finite number > 0" in the message.

    Examples
    --------
    >>> check_positive(2, "box_size")
    2.0
    >>> check_positive(0.0, "box_size", unit="Mpc/h")
    Traceback (most recent call last):
    ...
    emu_backend.errors.InputError: box_size [Mpc/h] must be a finite number > 0, got 0.0
    """
    value = _scalar(value)
    if not _is_real(value) or not math.isfinite(float(value)) or value <= 0:
        raise InputError(f"{_label(name, unit)} must be {what or 'a finite number > 0'}, got {value!r}")
    return float(value)


def check_int(value, name: str, lo: int | None = None, hi: int | None = None, *, what: str | None = None) -> int:
    """``value`` as an int if it is an integer (Python or NumPy, not bool) in ``[lo, hi]``.

    ``what`` replaces the wording of what is allowed ("an integer >= 2", "a non-negative integer") in the
    message.

    Examples
    --------
    >>> check_int(8, "n", 2)
    8
    >>> check_int(-1, "seed", 0)
    Traceback (most recent call last):
    ...
    emu_backend.errors.InputError: seed must be a non-negative integer, got -1
    """
    ok = not isinstance(value, bool) and isinstance(value, numbers.Integral)
    if ok and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        ok = False
    if not ok:
        if what is not None:
            want = what
        elif lo is not None and hi is not None:
            want = f"an integer in [{lo}, {hi}]"
        elif lo == 0:
            want = "a non-negative integer"
        elif lo is not None:
            want = f"an integer >= {lo}"
        elif hi is not None:
            want = f"an integer <= {hi}"
        else:
            want = "an integer"
        raise InputError(f"{name} must be {want}, got {value!r}")
    return int(value)


def check_choice(value, name: str, choices: Iterable):
    """``value`` if it is one of ``choices``, else :class:`InputError` listing them.

    Examples
    --------
    >>> check_choice("cic", "window", ("ngp", "cic", "tsc"))
    'cic'
    """
    choices = tuple(choices)
    if isinstance(value, bool) or value not in choices:
        raise InputError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_bool(value, name: str) -> bool:
    """``value`` if it is a bool (Python or NumPy), else :class:`InputError`."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_points(values, name: str, unit: str) -> np.ndarray:
    """A finite float64 (N, 3) array with N >= 1 from ``values`` (array-like or torch tensor).

    Examples
    --------
    >>> check_points([[0.0, 1.0, 2.0]], "positions", "Mpc/h").shape
    (1, 3)
    """
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor, without importing torch
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a numeric (N, 3) array [{unit}], got {type(values).__name__}") from exc
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"{name} must have shape (N, 3) [{unit}], got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{name} must hold at least one particle, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise InputError(f"{name} must be finite; particle {bad} has {arr[bad].tolist()}")
    return arr


def check_float_dtype(dtype, name: str = "dtype") -> np.dtype:
    """``dtype`` as a NumPy dtype if it is float32 or float64, else :class:`InputError`.

    Examples
    --------
    >>> check_float_dtype("float32")
    dtype('float32')
    """
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise InputError(f"{name} must be float32 or float64, got {dtype!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InputError(f"{name} must be float32 or float64, got {dt}")
    return dt
