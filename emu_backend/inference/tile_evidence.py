"""Evidence that a resumable run's output holds what it claims: a digest of the input, one per tile.

:func:`input_digest` identifies the input of a run by its content (what the run reads), so a resume
refuses an input replaced by another of the same size and time. :class:`TileEvidence` keeps, in each
output file of :mod:`emu_backend.inference.streaming`, a done map (dataset :data:`DIGESTS`): one
SHA-256 per tile of the file's tile range, of the tile's cells as stored, a row of zeros until the tile
is done. A resume re-hashes the tiles the progress record claims and restarts from the first one that
fails (on a batch boundary of the full run); a finished file is verified whole before it is renamed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import FileFormatError
from .tiling import Tile

__all__ = ["DIGESTS", "TileEvidence", "input_digest"]

log = logging.getLogger(__name__)

#: The done map's dataset: (tiles of the file, 32) uint8.
DIGESTS = "tile_sha256"
_DIGEST_BLOCK_BYTES = 64 << 20  # input read in blocks of about this size for its digest
_READ_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError)  # what h5py raises for damaged files


def input_digest(src, attrs: dict) -> str:
    """SHA-256 (hex) of what a run reads: the dtype, shape and values of ``src`` and the attributes it uses.

    Parameters
    ----------
    src : array-like
        (C, N0, N1, N2) input (ndarray, memory map, h5py dataset), read in blocks of rows along axis 0
        (bounded memory). An array-like with a ``rows`` attribute (a rank's view,
        :func:`~emu_backend.inference.rank_rows.rank_view`) is hashed over those rows only, the ones
        it reads.
    attrs : dict
        The input file's attributes; its ``box_size``, ``cosmology`` and ``meta`` go into the outputs
        and so into the digest.

    Examples
    --------
    >>> a = np.zeros((3, 8, 8, 8), np.float32)
    >>> input_digest(a, {}) == input_digest(a.copy(), {}) != input_digest(a + 1, {})
    True
    """
    shape = tuple(src.shape)
    h = hashlib.sha256(f"{np.dtype(src.dtype).str} {shape}".encode())
    for key in ("box_size", "cosmology", "meta"):
        if key in attrs:
            h.update(f"|{key}={attrs[key]}".encode())
    rows = getattr(src, "rows", None)
    rows = np.arange(shape[1]) if rows is None else np.asarray(rows)
    row_bytes = int(np.prod(shape, dtype=np.int64)) // max(1, shape[1]) * np.dtype(src.dtype).itemsize
    step = max(1, _DIGEST_BLOCK_BYTES // max(1, row_bytes))
    starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)  # runs of consecutive rows
    for a, b in zip(starts, [*starts[1:], len(rows)]):
        lo, hi = int(rows[a]), int(rows[b - 1]) + 1
        h.update(f"|rows {lo} {hi}".encode())
        for i in range(lo, hi, step):
            h.update(np.ascontiguousarray(src[:, i:min(i + step, hi)]))
    return h.hexdigest()


@dataclass(frozen=True)
class TileEvidence:
    """The done map of one output file: its tiles, where they sit in the file, and their digests.

    Parameters
    ----------
    tiles : tuple of Tile
        The tiles of the file's range ``[first, first + len(tiles))`` (consecutive indices).
    row0 : int
        Box row along axis 0 of the file's first row (a slab of a distributed run starts above 0).
    velocity : bool
        The file holds velocities (hashed with the displacement).
    batch_starts : tuple of int
        First tile of each batch of the full run over the range: the tiles a resume may start from.
    """

    tiles: tuple
    row0: int
    velocity: bool
    batch_starts: tuple

    @property
    def first(self) -> int:
        return self.tiles[0].index

    @property
    def stop(self) -> int:
        return self.tiles[-1].index + 1

    def create(self, f: h5py.File) -> None:
        """Add the empty done map to a new file (pre-allocated: later writes are raw data only)."""
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        f.create_dataset(DIGESTS, shape=(len(self.tiles), 32), dtype=np.uint8, fillvalue=0, dcpl=dcpl)

    def digest(self, f: h5py.File, tile: Tile) -> np.ndarray:
        """SHA-256 (32 uint8) of ``tile``'s cells as stored in ``f``, with its index."""
        (a0, a1, a2), (s0, s1, s2) = tile.anchor, tile.size
        cells = (slice(None), slice(a0 - self.row0, a0 - self.row0 + s0), slice(a1, a1 + s1), slice(a2, a2 + s2))
        h = hashlib.sha256(f"tile {tile.index}".encode())
        for name in ("displacement", "velocity")[:2 if self.velocity else 1]:
            h.update(np.ascontiguousarray(f[name][cells]))
        return np.frombuffer(h.digest(), np.uint8)

    def record(self, f: h5py.File, batch: list) -> None:
        """Write the digests of ``batch`` (consecutive tiles, just written to ``f``) into its done map."""
        i0 = batch[0].index - self.first
        f[DIGESTS][i0:i0 + len(batch)] = np.stack([self.digest(f, t) for t in batch])

    def first_bad(self, f: h5py.File, stop: int) -> int | None:
        """First tile of ``[first, stop)`` whose cells in ``f`` do not match its recorded digest (a
        tile not done has a digest of zeros, which never matches), or None."""
        n = stop - self.first
        if f[DIGESTS].shape != (len(self.tiles), 32):
            raise ValueError(f"done map {DIGESTS!r} of shape {f[DIGESTS].shape}, expected ({len(self.tiles)}, 32)")
        for tile, recorded in zip(self.tiles[:n], f[DIGESTS][:n]):
            if not np.array_equal(recorded, self.digest(f, tile)):
                return tile.index
        return None

    def resume_start(self, path: Path, next_tile: int) -> int:
        """The tile a resume of ``path`` starts from: its record ``next_tile``, lowered to the first
        tile that fails its digest, then to a batch boundary of the full run (so the batches, hence the
        values, are those of an uninterrupted run).

        A mismatch is recomputed, not refused: tiles are a pure function of the input, whose content
        the run record pins, so recomputing them restores exactly what an uninterrupted run writes,
        while a refusal would only make the caller start over with ``overwrite=True``. The mismatch is
        logged as a warning naming the file and the tile.

        Raises
        ------
        FileFormatError
            The file's data or done map cannot be read.
        """
        claimed = min(max(int(next_tile), self.first), self.stop)
        try:
            with h5py.File(path, "r") as f:
                bad = self.first_bad(f, claimed)
        except _READ_ERRORS as exc:
            raise FileFormatError(f"{str(path)!r}: unreadable tile data or done map ({exc}); pass overwrite=True "
                                  "to start over") from exc
        limit = claimed if bad is None else bad
        start = max(b for b in (*self.batch_starts, self.stop) if b <= limit)
        if bad is not None:
            log.warning("%s: tile %d does not match its recorded checksum (the progress record claims tiles up to "
                        "%d): recomputing from tile %d", path, bad, claimed, start)
        elif start != next_tile:
            log.warning("%s: progress record next_tile = %d is not a batch boundary of tiles [%d, %d]: resuming "
                        "from tile %d", path, next_tile, self.first, self.stop, start)
        return start

    def check_done(self, path: Path) -> None:
        """Verify every tile of a finished file against its digest, reading the file afresh.

        Raises
        ------
        FileFormatError
            A tile does not match (the message names the file and the tile), or the file is unreadable.
        """
        try:
            with h5py.File(path, "r") as f:
                bad = self.first_bad(f, self.stop)
        except _READ_ERRORS as exc:
            raise FileFormatError(f"{str(path)!r}: unreadable after writing ({exc})") from exc
        if bad is not None:
            raise FileFormatError(f"{str(path)!r}: tile {bad} does not match the checksum recorded when it was "
                                  "written (changed on disk?); not renamed. Run again to recompute from that tile")
