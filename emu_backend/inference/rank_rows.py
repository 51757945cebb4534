"""The rows of a box's input that one rank of a distributed run reads, and a view limited to them.

:func:`read_rows` lists the rows along axis 0 that a rank's tiles read (its slab of output rows plus
the periodic padding); :func:`rank_view` wraps the input so that only those rows are ever read, which
keeps the emulator's NaN/inf scan of the input to the rank's own rows (see
:mod:`emu_backend.inference.distributed`).
"""

from __future__ import annotations

import numpy as np

from ..errors import ComputationError, InputError
from .tiling import TilePlan

__all__ = ["rank_view", "read_rows"]


def read_rows(shape, tile_size: int, rank: int, world_size: int) -> np.ndarray:
    """Rows along axis 0 (sorted, modulo ``N0``) of a (3, N0, N1, N2) input that ``rank`` reads: the
    periodic input blocks (output rows plus the padding, :attr:`Tile.input_origin` /
    :attr:`Tile.input_size`) of its tiles :meth:`TilePlan.slab_share`.

    Examples
    --------
    >>> read_rows((3, 256, 8, 8), 16, 0, 2).tolist() == sorted([*range(0, 128 + 48), *range(256 - 48, 256)])
    True
    """

    plan = TilePlan(tuple(shape[1:]), tile_size)
    start, stop = plan.slab_share(rank, world_size)
    n0, per = int(shape[1]), plan.tiles_per_row
    rows = np.zeros(n0, bool)
    for t in plan.tiles[start:stop:per]:  # one tile per row of tiles: the blocks along axis 0 repeat
        o, size = t.input_origin[0], t.input_size[0]
        rows[np.arange(o, o + size) % n0] = True
    return np.flatnonzero(rows)


class _RowView:
    """Read-only view of a (C, N0, N1, N2) array-like that reads only the rows ``rows`` of axis 0.

    Slices along axis 0 read those rows from the source and fill the others with zeros. The only
    whole-array pass over the input, :meth:`Emulator.plan`'s check for NaN/inf, therefore scans the
    rank's own rows (each row is read by some rank, so a bad value anywhere is still found, with its
    global index); the tiles a rank computes read nothing outside ``rows`` by construction. ``rows``
    (sorted) is kept as an attribute: the digest of the input that identifies a resumed run
    (:func:`~emu_backend.inference.tile_evidence.input_digest`) hashes those rows only.
    """

    def __init__(self, src, rows: np.ndarray):
        self.src, self.shape, self.dtype, self.ndim = src, tuple(src.shape), src.dtype, 4
        self.rows = np.asarray(rows)
        self.mask = np.zeros(self.shape[1], bool)
        self.mask[rows] = True

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        key = (key if isinstance(key, tuple) else (key,)) + (slice(None),) * (4 - (len(key) if isinstance(key, tuple) else 1))
        if len(key) != 4 or not all(isinstance(k, slice) and k.step in (None, 1) for k in key):
            raise ComputationError(f"internal: a rank's input view supports contiguous slices only, got {key!r}")
        lo, hi, _ = key[1].indices(self.shape[1])
        hi = max(lo, hi)
        mask = self.mask[lo:hi]
        if mask.all():
            return np.asarray(self.src[key])
        sizes = [len(range(*k.indices(n))) for k, n in zip(key, self.shape)]
        out = np.zeros((sizes[0], hi - lo, *sizes[2:]), dtype=self.dtype)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):  # contiguous runs of the rank's rows
            out[:, a:b] = self.src[(key[0], slice(lo + a, lo + b), *key[2:])]
        return out


def rank_view(src, tile_size: int, rank: int, world_size: int):
    """``src`` as seen by ``rank``: only the rows it reads (:func:`read_rows`); ``src`` itself when
    those are all rows, or when the shape or tile size is invalid (the emulator's checks report it)."""
    shape = tuple(getattr(src, "shape", ()))
    if len(shape) != 4 or world_size == 1:
        return src
    try:
        rows = read_rows(shape, tile_size, rank, world_size)
    except (InputError, TypeError, ValueError):
        return src
    return src if len(rows) == shape[1] else _RowView(src, rows)
