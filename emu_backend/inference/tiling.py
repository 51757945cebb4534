"""Periodic tiling of a box for the StyledVNet (SPEC 2.2 and 4.3).

A box of N cells per axis is cut into output tiles of ``tile`` cells (a multiple of 8) with
origins (anchors) at ``0, tile, 2 tile, ...``; each tile's input is the box read periodically from
``anchor - 48`` to ``anchor + size + 48``. Anchors on multiples of 8 keep the network's 2x2x2
resampling phase fixed, so the result does not depend on the tile size. The last tile along an axis
may be smaller; it is computed at the next multiple of 8 and cropped.

Sources and destinations are anything that supports NumPy basic slicing: arrays, memory maps, h5py
datasets. Only contiguous blocks are read, so peak memory depends on the tile, not the box.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..checks import check_int
from ..errors import InputError
from ..nn import CROP

__all__ = ["Tile", "TilePlan", "periodic_read", "check_tile_size", "PAD"]

#: Periodic padding on each side: the cells the network loses per side.
PAD = CROP


def check_tile_size(tile, name: str = "tile size") -> int:
    """``tile`` as an int if it is a positive multiple of 8 (an output tile side), else :class:`InputError`.

    Examples
    --------
    >>> check_tile_size(16)
    16
    """
    what = "a positive multiple of 8"
    if check_int(tile, name, 8, what=what) % 8:
        raise InputError(f"{name} must be {what}, got {tile!r}")
    return int(tile)


def _runs(start: int, length: int, n: int):
    """Contiguous pieces ``(src_lo, src_hi, dst_lo)`` of ``length`` cells read periodically from ``start``."""
    pieces, pos, dst = [], start % n, 0
    while dst < length:
        take = min(n - pos, length - dst)
        pieces.append((pos, pos + take, dst))
        dst += take
        pos = 0
    return pieces


def periodic_read(src, origin, size, out=None) -> np.ndarray:
    """Read a periodic block of a (C, N0, N1, N2) field.

    Parameters
    ----------
    src : array-like
        (C, N0, N1, N2), any object supporting basic slicing (ndarray, memmap, h5py.Dataset).
    origin : sequence of 3 int
        First cell of the block on each axis (may be negative or beyond N: read modulo N).
    size : sequence of 3 int
        Block size per axis (may exceed N: the box repeats).
    out : ndarray, optional
        (C, *size) destination.

    Returns
    -------
    ndarray
        (C, *size).
    """
    shape = src.shape[1:]
    if out is None:
        out = np.empty((src.shape[0], *size), dtype=src.dtype)
    for (a0, b0, d0), (a1, b1, d1), (a2, b2, d2) in itertools.product(
        *(_runs(o, s, n) for o, s, n in zip(origin, size, shape))
    ):
        out[:, d0:d0 + b0 - a0, d1:d1 + b1 - a1, d2:d2 + b2 - a2] = src[:, a0:b0, a1:b1, a2:b2]
    return out


@dataclass(frozen=True)
class Tile:
    """One output tile: cells ``[anchor, anchor + size)`` per axis, computed at ``padded`` cells.

    ``compute_size`` (a multiple of 8, >= size) is the output size the network produces; the input
    read is ``compute_size + 2 * PAD`` per axis starting at ``anchor - PAD``.
    """

    index: int
    anchor: tuple
    size: tuple
    compute_size: tuple

    @property
    def input_origin(self) -> tuple:
        return tuple(a - PAD for a in self.anchor)

    @property
    def input_size(self) -> tuple:
        return tuple(c + 2 * PAD for c in self.compute_size)


@dataclass(frozen=True)
class TilePlan:
    """The tiles covering a periodic box.

    Parameters
    ----------
    shape : tuple of 3 int
        Box cells per axis, each >= 8.
    tile : int
        Output tile size, a positive multiple of 8 (input tiles are ``tile + 96``).

    Examples
    --------
    >>> plan = TilePlan((20, 20, 20), 16)
    >>> len(plan), plan.tiles[-1].size, plan.tiles[-1].compute_size
    (8, (4, 4, 4), (8, 8, 8))
    """

    shape: tuple
    tile: int

    def __post_init__(self):
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or any(n < 8 for n in shape):
            raise InputError(f"box shape must be 3 sizes >= 8 cells, got {self.shape!r}")
        object.__setattr__(self, "tile", check_tile_size(self.tile))
        object.__setattr__(self, "shape", shape)

    @property
    def tiles(self) -> list[Tile]:
        per_axis = [
            [(a, min(self.tile, n - a)) for a in range(0, n, self.tile)] for n in self.shape
        ]
        tiles = []
        for i, combo in enumerate(itertools.product(*per_axis)):
            anchor = tuple(a for a, _ in combo)
            size = tuple(s for _, s in combo)
            compute = tuple(-(-s // 8) * 8 for s in size)
            tiles.append(Tile(i, anchor, size, compute))
        return tiles

    def __len__(self) -> int:
        return int(np.prod([-(-n // self.tile) for n in self.shape]))

    @property
    def tiles_per_row(self) -> int:
        """Tiles sharing one anchor along axis 0 (consecutive in the C-order numbering)."""
        return int(np.prod([-(-n // self.tile) for n in self.shape[1:]]))

    @property
    def n_rows(self) -> int:
        """Rows of tiles along axis 0 (slabs of ``tile`` cells, the last possibly thinner)."""
        return -(-self.shape[0] // self.tile)

    def rows(self, start: int, stop: int) -> tuple[int, int]:
        """Box cells ``[lo, hi)`` along axis 0 covered by tiles ``start .. stop - 1`` (``start < stop``)."""
        if not 0 <= start < stop <= len(self):
            raise InputError(f"tile range [{start}, {stop}) is empty or outside [0, {len(self)})")
        per = self.tiles_per_row
        return (start // per) * self.tile, min(((stop - 1) // per + 1) * self.tile, self.shape[0])

    def slab_share(self, rank: int, world_size: int) -> tuple[int, int]:
        """Tile range ``[start, stop)`` of ``rank`` when whole rows of tiles are dealt to ``world_size`` ranks.

        Rank ``r`` gets rows ``[r R // W, (r + 1) R // W)`` of the ``R`` rows (contiguous, balanced
        to one row), so its output is one slab along axis 0. Needs ``world_size <= n_rows``.

        Examples
        --------
        >>> plan = TilePlan((32, 32, 32), 8)
        >>> [plan.slab_share(r, 3) for r in range(3)], [plan.rows(*plan.slab_share(r, 3)) for r in range(3)]
        ([(0, 16), (16, 32), (32, 64)], [(0, 8), (8, 16), (16, 32)])
        """
        ok = isinstance(world_size, (int, np.integer)) and isinstance(rank, (int, np.integer))
        if not ok or not 1 <= world_size <= self.n_rows or not 0 <= rank < world_size:
            raise InputError(f"rank {rank!r} of world size {world_size!r}: the world size must be in "
                             f"[1, {self.n_rows}] (rows of {self.tile}-cell tiles along axis 0 of {self.shape}); "
                             "use a smaller tile or fewer ranks")
        per, n_rows = self.tiles_per_row, self.n_rows
        return rank * n_rows // world_size * per, (rank + 1) * n_rows // world_size * per

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None):
        """Tiles ``start .. stop - 1`` grouped into batches of equal compute size (C order kept)."""
        batch: list[Tile] = []
        for t in self.tiles[start:stop]:
            if batch and (len(batch) == batch_size or t.compute_size != batch[0].compute_size):
                yield batch
                batch = []
            batch.append(t)
        if batch:
            yield batch
