"""Validation of scalar arguments shared by the package: one message format for every range check."""

from __future__ import annotations

import math
import numbers

from .errors import InputError

__all__ = ["check_real", "check_positive", "check_matching_snapshots"]


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
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
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
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) or value <= 0:
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_matching_snapshots(snap, ref, name: str, ref_name: str, *, box_rtol: float, a_rtol: float) -> None:
    """Check that ``snap`` and ``ref`` are :class:`~emu_backend.simulator.Snapshot` objects of one grid,
    box size (within ``box_rtol``) and time (scale factor within ``a_rtol``), for comparing them.

    Raises
    ------
    InputError
        Naming ``name`` / ``ref_name`` and the values that differ.
    """
    from .simulator.snapshot import Snapshot

    for key, s in ((name, snap), (ref_name, ref)):
        if not isinstance(s, Snapshot):
            raise InputError(f"{key} must be a Snapshot, got {type(s).__name__}")
    if snap.grid != ref.grid or not math.isclose(snap.box_size, ref.box_size, rel_tol=box_rtol):
        raise InputError(f"{name} has n = {snap.grid}, L = {snap.box_size} Mpc/h; {ref_name} has "
                         f"n = {ref.grid}, L = {ref.box_size} Mpc/h")
    if not math.isclose(snap.a, ref.a, rel_tol=a_rtol):
        raise InputError(f"{name} is at a = {snap.a:.6g} (z = {snap.z:.4g}), {ref_name} at a = {ref.a:.6g} "
                         f"(z = {ref.z:.4g})")
