"""Validation of scalar arguments shared by the package: one message format for every check.

Every function returns the checked value in its canonical Python type or raises
:class:`~emu_backend.errors.InputError` naming the argument, the value and what is allowed. Use these
instead of inline ``isinstance`` tests, so that the same argument is refused with the same words
everywhere (library, adapters, CLI).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import numpy as np

from .errors import InputError

__all__ = ["check_real", "check_positive", "check_int", "check_choice", "check_bool", "check_points"]


def _is_real(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def check_real(value, key: str, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False,
               hi_open: bool = False) -> float:
    """``value`` as a float if it is a finite real number in the range, else :class:`InputError`.

    Parameters
    ----------
    value : object
        The argument to check (bools are refused).
    key : str
        Its name in the error message.
    lo, hi : float
        Range bounds; ``lo_open`` / ``hi_open`` exclude them.

    Examples
    --------
    >>> check_real(0.5, "a", 0.0, 1.0)
    0.5
    """
    if not _is_real(value) or not math.isfinite(float(value)):
        raise InputError(f"{key} must be a finite number, got {value!r}")
    v = float(value)
    if (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
        raise InputError(f"{key} = {value!r} is outside the allowed range "
                         f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")
    return v


def check_positive(value, name: str) -> float:
    """``value`` as a float if it is a finite real number > 0, else :class:`InputError`.

    Examples
    --------
    >>> check_positive(2, "box_size")
    2.0
    """
    if not _is_real(value) or not math.isfinite(float(value)) or value <= 0:
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_int(value, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int if it is an integer (Python or NumPy, not bool) in ``[lo, hi]``.

    Examples
    --------
    >>> check_int(8, "n", 2)
    8
    """
    ok = not isinstance(value, bool) and isinstance(value, numbers.Integral)
    if ok and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        ok = False
    if not ok:
        if lo is not None and hi is not None:
            want = f"an integer in [{lo}, {hi}]"
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
