"""The arrays of an emulator run, checked: the input field, the caller's destinations and the
network's output tiles.

The input (:func:`as_field`, :func:`check_field`, :func:`check_finite_field`) is an array-like of
shape (3, N0, N1, N2), floating point and finite; a torch tensor is read on the host, except a
``meta`` tensor, which holds no values. The output tiles (:func:`check_finite_tiles`) must be
finite: a finite but absurd input (1e38 Mpc/h) makes the network overflow, which is named by tile.

Each destination (:func:`check_destinations`) must have the run's shape (or hold the run's rows, for
a slab), a floating-point dtype (an integer array would truncate every value), be writable, and be
its own storage: two destinations that share memory (one array for the displacement and the
velocity) lose one of them, and a destination that shares the input's memory overwrites cells that
later tiles still read. Memory is compared with ``numpy.shares_memory`` for arrays, by file for
memory maps and by file and name for h5py datasets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import ComputationError, InputError

__all__ = ["as_field", "check_field", "check_finite_field", "check_finite_tiles", "check_destinations", "SCAN_ROWS"]

#: Rows along axis 0 of one block of the finiteness scan of the input.
SCAN_ROWS = 64
#: Work bound of numpy's exact overlap test; past it two arrays are taken to share memory.
_MAX_WORK = 100_000


def as_field(dis):
    """The linear displacement as an array-like: a torch tensor's values on the host (CPU or CUDA;
    a ``meta`` tensor holds none and is refused); anything else as given."""
    if isinstance(dis, torch.Tensor):
        if dis.device.type == "meta":
            raise InputError(f"linear displacement is a tensor on the 'meta' device, which holds shapes but no "
                             f"values (shape {tuple(dis.shape)}); pass a CPU or CUDA tensor or an array")
        if dis.dtype == torch.bfloat16:  # NumPy has no bfloat16
            dis = dis.float()
        return dis.detach().resolve_conj().cpu().numpy()
    return dis


def check_field(dis) -> tuple:
    """The shape of the input field after checking it is (3, N0, N1, N2), every N >= 8, floating point."""
    shape = tuple(getattr(dis, "shape", ()))
    if len(shape) != 4 or shape[0] != 3 or any(n < 8 for n in shape[1:]):
        raise InputError(f"linear displacement must have shape (3, N0, N1, N2) with every N >= 8, got {shape}")
    try:
        dtype = np.dtype(getattr(dis, "dtype", np.float64))
    except TypeError:
        raise InputError(f"linear displacement must be a floating-point array, got {type(dis).__name__} with "
                         f"dtype {getattr(dis, 'dtype', None)}") from None
    if dtype.kind != "f":
        raise InputError(f"linear displacement must be floating point, got dtype {dtype}")
    return shape


def check_finite_field(dis, shape: tuple) -> None:
    """InputError naming the first NaN or inf of the input, read ``SCAN_ROWS`` rows at a time."""
    for i in range(0, shape[1], SCAN_ROWS):  # chunked, so a memory map is not read whole
        block = np.asarray(dis[:, i:i + SCAN_ROWS])
        if not np.isfinite(block).all():
            bad = np.argwhere(~np.isfinite(block))[0]
            bad[1] += i
            raise InputError(f"linear displacement holds a non-finite value {block[tuple(bad - [0, i, 0, 0])]} at index {tuple(int(b) for b in bad)}")


def check_finite_tiles(batch, zi: float, x: np.ndarray, fields) -> None:
    """ComputationError naming the first tile of ``batch`` whose network output is not finite.

    ``fields``: ``(name, tensor or None)`` pairs of (B, 3, n, n, n) outputs; ``x``: the batch's input
    tiles [Mpc/h]; ``zi``: the redshift.
    """
    for name, t in fields:
        if t is None:
            continue
        finite = torch.isfinite(t).flatten(1).all(1)
        if bool(finite.all()):
            continue
        i = int((~finite).nonzero()[0, 0])
        tile = batch[i]
        cells = " x ".join(f"[{a}, {a + s})" for a, s in zip(tile.anchor, tile.size))
        raise ComputationError(
            f"the emulator's {name} is not finite in tile {tile.index} (cells {cells}) at z = {zi:g}: the input is "
            f"finite but far outside the training data (max |linear displacement| in the tile = "
            f"{float(np.abs(x[i]).max()):.3g} Mpc/h)")


def _is_dataset(arr) -> bool:
    return hasattr(arr, "id") and hasattr(arr, "file") and hasattr(arr, "name")


def _file_of(arr):
    """The file behind a memory map or an h5py dataset, or None."""
    name = getattr(arr, "filename", None)
    if name is None and _is_dataset(arr):
        name = getattr(arr.file, "filename", None)
    return None if not name else Path(name).resolve()


def _share(a, b) -> bool:
    """Whether writing into ``a`` may change ``b``."""
    if a is b:
        return True
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        try:
            if np.shares_memory(a, b, max_work=_MAX_WORK):
                return True
        except np.exceptions.TooHardError:
            return True
    fa, fb = _file_of(a), _file_of(b)
    if _is_dataset(a) and _is_dataset(b):  # h5py datasets: one file, one name
        return fa is not None and fa == fb and a.name == b.name
    return (isinstance(a, np.memmap) and isinstance(b, np.memmap) and fa is not None and fa == fb)


def _read_only(arr) -> bool:
    flags = getattr(arr, "flags", None)
    if isinstance(arr, np.ndarray) and flags is not None:
        return not flags.writeable
    mode = getattr(getattr(arr, "file", None), "mode", None)  # h5py: the file's mode, "r" or "r+"
    return mode == "r"


def check_destinations(shape: tuple, n_z: int, velocity: bool, out, source=None, rows=None, offset: int = 0):
    """``out`` checked against a run, or None for in-memory outputs allocated by the caller.

    Parameters
    ----------
    shape : tuple of 4 int
        ``(3, N0, N1, N2)``, the input (and output) field shape.
    n_z : int
        Number of redshifts: one ``(displacement, velocity)`` pair each.
    velocity : bool
        Whether velocities are written (else the velocity entry may be None).
    out : sequence of pairs or None
        The caller's destinations.
    source : array-like, optional
        The input field, which no destination may share memory with.
    rows : (int, int), optional
        The box rows ``[lo, hi)`` along axis 0 the computed tiles cover; ``out`` then holds rows
        ``[offset, offset + M)``.
    offset : int

    Returns
    -------
    list of pairs or None

    Raises
    ------
    InputError
        A wrong shape, a non-floating dtype, a read-only array, or a destination that shares memory
        with another one or with the input.
    """
    if out is None:
        return None
    if not isinstance(out, Sequence) or len(out) != n_z:
        raise InputError(f"out must be a list of one (displacement, velocity) pair per redshift ({n_z}), got {out!r}")
    lo, hi = (0, shape[1]) if rows is None else rows
    for i, pair in enumerate(out):
        got = tuple(None if a is None else tuple(getattr(a, "shape", ())) for a in pair) if isinstance(pair, Sequence) else pair
        ok = isinstance(pair, Sequence) and len(pair) == 2
        for g in (got[:2] if velocity else got[:1]) if ok else ():
            ok = ok and g is not None and len(g) == 4 and g[0] == 3 and g[2:] == shape[2:] \
                and offset <= lo and hi <= offset + g[1] and (rows is not None or g[1] == shape[1])
        if not ok:
            want = shape if rows is None else f"(3, M, {shape[2]}, {shape[3]}) holding rows [{lo}, {hi}) from row {offset}"
            raise InputError(f"out[{i}] must be a (displacement, velocity) pair of arrays of shape {want}, got shapes {got!r}")
    named = [(f"out[{i}] {name}", arr) for i, pair in enumerate(out)
             for name, arr in zip(("displacement", "velocity"), pair[:2 if velocity else 1])]
    for label, arr in named:
        dtype = getattr(arr, "dtype", None)
        try:
            kind = np.dtype(dtype).kind
        except TypeError:
            kind = "?"
        if kind != "f":
            raise InputError(f"{label} must be a floating-point array, got dtype {dtype} (an integer array would "
                             f"truncate the values)")
        if _read_only(arr):
            raise InputError(f"{label} is read-only; give a writable array")
        if source is not None and _share(arr, source):
            raise InputError(f"{label} shares memory with the input linear displacement: later tiles would read "
                             f"overwritten cells; write into another array")
    for j, (label, arr) in enumerate(named):
        for other, arr2 in named[j + 1:]:
            if _share(arr, arr2):
                raise InputError(f"{label} and {other} share memory: one would overwrite the other; give each "
                                 f"output its own array")
    return out
