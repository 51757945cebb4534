"""Tiles shared across ranks with ``torch.distributed``: one part file per rank, an index, a reader.

Launch one process per rank with ``torchrun`` (or SLURM ``srun``, setting the variables of
torch.distributed's ``env://`` initialisation: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``); every rank calls :func:`predict_distributed` with the same
arguments. The process group is initialised if it is not already (NCCL on CUDA, gloo on CPU).

Work is dealt in whole rows of tiles along axis 0 (:meth:`TilePlan.slab_share`): rank ``r`` computes a
contiguous range of tiles whose output is one slab of rows ``[lo, hi)``, written, like the parts of a
multi-file N-body snapshot, to ``<stem>.<r><suffix>`` (``<stem>_z<z>.<r><suffix>`` for several
redshifts). Each part file is the HDF5 field format of :mod:`emu_backend.io.fields` holding the slab
(datasets ``(3, hi - lo, N1, N2)``), with the full provenance (package version, run configuration,
seed, weights checksum, cosmology) and its ``rank``, ``world_size``, ``rows`` and ``tiles`` in the run
record. One job writes an output at a time: rank 0 takes the lock of the index
(:func:`~emu_backend.io.output_lock.output_lock`, ``<stem>.index.json.lock``) before any rank looks at
a part, and each rank then locks its own part, so a second job on the same output stops on every rank
with :class:`~emu_backend.errors.OutputLockedError` naming the holder. Parts stream and resume exactly like :func:`~emu_backend.inference.streaming.predict_to_file`
(``.partial`` files, data fsynced before the progress record, a done map of tile checksums verified on
resume and before the atomic rename; the run record identifies the input by a SHA-256 of the rows the
rank reads). After a barrier, rank 0 writes the
index ``<stem>.index.json`` (atomically) naming the parts and their rows; :func:`check_parts` verifies a
run is complete and :func:`read_parts` / :func:`assemble_parts` put the box back together.

Each rank opens the input through :func:`~emu_backend.inference.rank_rows.rank_view`, which reads only
the rows of axis 0 its tiles need (its slab plus the periodic padding), so the emulator's check for NaN/inf scans
those rows only; every row is some rank's, and a bad value is reported (same :class:`InputError` and
message, global index) by the rank that reads it and raised on every rank.

Each tile is computed by the same code on the same input block as in a single-process run, so with
``batch_size=1`` the assembled output is bit-identical to :meth:`Emulator.predict` on the same device,
dtype and thread settings. (With ``batch_size > 1`` the batches at rank boundaries differ, which may
change the last bits where the convolution backend's arithmetic depends on the batch.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.distributed as dist

from ..cosmology.params import Cosmology
from ..errors import ComputationError, DomainError, FileFormatError, InputError, OutputLockedError
from ..io.atomic import atomic_path, check_overwrite
from ..io.fields import FieldData
from ..io.jsonfile import read_json
from ..io.output_lock import output_lock
from ..io.output_path import check_writable
from .rank_rows import rank_view
from .streaming import output_paths, prepare_stream, redshift_list, run_stream
from .tile_evidence import DIGESTS
from .tiling import TilePlan

__all__ = ["predict_distributed", "part_path", "index_path", "check_parts", "read_parts", "assemble_parts",
           "rank_and_world", "INDEX_FORMAT"]

log = logging.getLogger(__name__)

INDEX_FORMAT = "emu_backend/field-parts"
INDEX_VERSION = 1
_ERRORS = {cls.__name__: cls for cls in (OutputLockedError, InputError, DomainError, FileFormatError, ComputationError)}
#: Run-record fields that differ between ranks (a rank digests only the input rows it reads).
_PER_RANK = ("rank", "tiles", "rows", "input_sha256")


def part_path(final: Path, rank: int) -> Path:
    """``<stem>.<rank><suffix>`` beside ``final`` (an :func:`output_paths` name)."""
    final = Path(final)
    return final.with_name(f"{final.stem}.{rank}{final.suffix}")


def index_path(final: Path) -> Path:
    """``<stem>.index.json`` beside ``final`` (an :func:`output_paths` name)."""
    final = Path(final)
    return final.with_name(f"{final.stem}.index.json")


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size: from the initialised process group, else from the
    ``RANK`` / ``WORLD_SIZE`` environment variables (torchrun's), else ``(0, 1)``."""

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError as exc:
        raise InputError(f"RANK={os.environ.get('RANK')!r} and WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} "
                         "must be integers") from exc
    if not (world >= 1 and 0 <= rank < world):
        raise InputError(f"RANK={rank} must be in [0, WORLD_SIZE={world})")
    return rank, world


class _Group:
    """The process group of a run: joined (or created from ``env://``) on entry, created ones destroyed on exit."""

    def __init__(self, device):
        self.device = device
        self.created = False

    def __enter__(self):

        self.rank, self.world = rank_and_world()
        if self.world > 1 and not dist.is_initialized():
            missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
            if missing:
                raise InputError(f"WORLD_SIZE={self.world} but {', '.join(missing)} unset: launch with torchrun, "
                                 "or set them for env:// initialisation (see docs/performance.md)")
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend=backend, init_method="env://")
            self.created = True
            log.info("rank %d of %d joined a %s process group", self.rank, self.world, backend)
        return self

    def __exit__(self, *exc):

        if self.created and dist.is_initialized():
            dist.destroy_process_group()

    def agree(self, fn: Callable[[], object]):
        """Run ``fn`` on every rank; if it raised on any rank, raise on every rank (no rank left waiting)."""

        error, result = None, None
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - reported to every rank, re-raised here
            error = exc
        status = (type(error).__name__, str(error)) if error is not None else None
        statuses = [status]
        if self.world > 1 and dist.is_initialized():
            statuses = [None] * self.world
            dist.all_gather_object(statuses, status)
        if error is not None:
            raise error
        failed = [(r, s) for r, s in enumerate(statuses) if s is not None]
        if failed:
            r, (name, msg) = failed[0]
            raise _ERRORS.get(name, ComputationError)(f"rank {r} failed: {msg}")
        return result


def predict_distributed(emulator, input_path, output_path, omega_m: float, z, *, cosmology=None,
                        box_size: float | None = None, velocity: bool = True, tile_size: int = 128,
                        batch_size: int = 1, overwrite: bool = False, resume: bool = True,
                        progress: bool = False, on_batch: Callable[[int, int], None] | None = None) -> list[Path]:
    """Emulate a box on disk across the ranks of a ``torch.distributed`` job; one part file per rank.

    Every rank calls this with the same arguments (and an emulator with the same weights on its own
    device, e.g. ``f"cuda:{LOCAL_RANK}"``). Without a process group or ``WORLD_SIZE`` it runs as a
    single rank (world size 1).

    Parameters
    ----------
    emulator : Emulator
    input_path : str or Path
        z = 0 linear displacement (3, N0, N1, N2) [Mpc/h], ``.npy`` or HDF5 field file, readable by
        every rank (a shared file system).
    output_path : str or Path
        ``.h5``/``.hdf5`` name giving, per redshift (see :func:`output_paths`), the parts
        :func:`part_path` and the index :func:`index_path`.
    omega_m, z, cosmology, box_size, velocity, tile_size, batch_size, overwrite, resume, progress, on_batch
        As in :func:`~emu_backend.inference.streaming.predict_to_file`. The world size must not exceed
        the rows of tiles along axis 0, ``ceil(N0 / tile_size)``.

    Returns
    -------
    list of Path
        The index files, one per redshift (on every rank), for :func:`read_parts`.

    Raises
    ------
    InputError
        Bad arguments, an existing index without ``overwrite``, a partial part from a different run
        (including another world size); raised on every rank when any rank finds it.
    ComputationError
        Another rank failed while computing.

    Examples
    --------
    Run with ``torchrun --nproc-per-node 2 script.py``, where ``script.py`` holds::

        emu = Emulator.from_checkpoint("model.emu")
        [index] = predict_distributed(emu, "lin.h5", "out/nonlin.h5", 0.3, 0.0, tile_size=128)
        # out/nonlin.0.h5, out/nonlin.1.h5, out/nonlin.index.json; read_parts(index).displacement
    """
    finals = output_paths(output_path, z)
    zs = redshift_list(z)
    indexes = [index_path(f) for f in finals]
    with _Group(emulator.device) as group, contextlib.ExitStack() as stack:
        rank, world = group.rank, group.world
        parts = [part_path(f, rank) for f in finals]

        def lock_job():
            # One job per output: rank 0 holds the index's lock for the whole job, and no rank looks at
            # a part before every rank knows it did. Locking the parts alone would let two jobs started
            # together each take some parts and both fail; this way exactly one proceeds.
            if rank == 0:
                for idx in indexes:
                    check_writable(idx)
                    stack.enter_context(output_lock(idx))

        group.agree(lock_job)

        def prepare():
            if not overwrite:
                for p in indexes:
                    check_overwrite(p, False)
            return prepare_stream(stack, emulator, input_path, parts, omega_m, zs, cosmology=cosmology,
                                  box_size=box_size, velocity=velocity, tile_size=tile_size, batch_size=batch_size,
                                  overwrite=overwrite, resume=resume, part=(rank, world),
                                  accept_complete=resume and not overwrite,
                                  view=lambda src: rank_view(src, tile_size, rank, world))

        job = group.agree(prepare)
        log.info("rank %d of %d: tiles [%d, %d), rows [%d, %d)", rank, world, *job.tiles, *job.rows)
        group.agree(lambda: run_stream(stack, job, progress=progress and rank == 0, on_batch=on_batch))

        def write_index():
            if rank != 0:
                return None
            for zi, final, idx in zip(zs, finals, indexes):
                _write_index(idx, job, zi, [part_path(final, r) for r in range(world)], world)
                check_parts(idx)
            return None

        group.agree(write_index)
    return indexes


def _write_index(idx: Path, job, z: float, parts: list[Path], world: int) -> None:

    plan = TilePlan(job.shape[1:], job.tile_size)
    entries = []
    for r, p in enumerate(parts):
        tiles = plan.slab_share(r, world)
        entries.append({"rank": r, "file": p.name, "tiles": list(tiles), "rows": list(plan.rows(*tiles))})
    run = {k: v for k, v in job.run.items() if k not in _PER_RANK}
    meta = dict(job.meta, config={k: v for k, v in job.meta["config"].items() if k not in _PER_RANK})
    index = {"format": INDEX_FORMAT, "format_version": INDEX_VERSION, "world_size": world,
             "shape": list(job.shape), "z": z, "a": 1.0 / (1.0 + z), "box_size": job.box_size,
             "velocity": job.velocity, "cosmology": json.loads(job.header["cosmology"]), "meta": meta,
             "run": dict(run, z=z), "parts": entries}
    with atomic_path(idx, overwrite=True) as tmp:
        tmp.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    log.info("wrote %s (%d parts)", idx, world)


def _load_index(path) -> dict:
    index = read_json(path, "part index", missing=InputError)
    try:
        ok = index["format"] == INDEX_FORMAT and len(index["shape"]) == 4 and isinstance(index["run"], dict)
        index["parts"] = [{"rank": int(e["rank"]), "file": str(e["file"]), "rows": [int(v) for v in e["rows"]],
                           "tiles": [int(v) for v in e["tiles"]]} for e in index["parts"]]
        ok = ok and len(index["parts"]) > 0 and all(len(e["rows"]) == len(e["tiles"]) == 2 for e in index["parts"])
        for key in ("box_size", "a", "velocity", "cosmology", "meta"):
            index[key]
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{str(path)!r}: not a part index of format {INDEX_FORMAT!r} ({exc!r})") from exc
    if not ok:
        raise FileFormatError(f"{str(path)!r}: not a part index of format {INDEX_FORMAT!r}")
    return index


def check_parts(index) -> dict:
    """Check that every part named by an index is complete, from the same run, and that the parts'
    rows tile the box; returns the index (a dict).

    Parameters
    ----------
    index : str or Path
        A ``<stem>.index.json`` written by :func:`predict_distributed`.

    Raises
    ------
    FileFormatError
        A missing, partial, unreadable or foreign part, a part whose done map lacks a tile's checksum,
        or rows that do not cover ``[0, N0)`` once. (The checksums themselves were verified against the
        data before each part got its final name.)
    """

    idx_path = Path(index)
    index = _load_index(idx_path)
    shape, expect_lo = tuple(index["shape"]), 0
    for entry in sorted(index["parts"], key=lambda e: e["rows"][0]):
        p = idx_path.parent / entry["file"]
        (lo, hi), (t0, t1) = entry["rows"], entry["tiles"]
        if lo != expect_lo:
            raise FileFormatError(f"{str(idx_path)!r}: part {entry['file']!r} starts at row {lo}, expected {expect_lo}")
        expect_lo = hi
        if not p.is_file():
            raise FileFormatError(f"part {str(p)!r} of {str(idx_path)!r} is missing")
        try:
            with h5py.File(p, "r") as f:
                run, complete, next_tile = json.loads(f.attrs["run"]), bool(f.attrs["complete"]), int(f.attrs["next_tile"])
                shapes = {k: f[k].shape for k in ("displacement", "velocity") if k in f}
                undone = np.flatnonzero(~f[DIGESTS][...].any(axis=1)) if DIGESTS in f else []
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise FileFormatError(f"part {str(p)!r}: unreadable ({exc})") from exc
        want = (3, hi - lo, *shape[2:])
        same_run = isinstance(run, dict) and all(run.get(k) == v for k, v in index["run"].items()) and run.get("rows") == [lo, hi]
        if not (complete and next_tile == t1 and same_run and shapes.get("displacement") == want
                and (not index["velocity"] or shapes.get("velocity") == want)):
            raise FileFormatError(f"part {str(p)!r} is incomplete or from another run (complete={complete}, "
                                  f"next tile {next_tile} of [{t0}, {t1}), shapes {shapes}, expected {want})")
        if len(undone):
            raise FileFormatError(f"part {str(p)!r}: tile {t0 + int(undone[0])} has no checksum in its done map "
                                  f"({len(undone)} of [{t0}, {t1}) missing)")
    if expect_lo != shape[1]:
        raise FileFormatError(f"{str(idx_path)!r}: parts cover rows [0, {expect_lo}) of {shape[1]}")
    return index


def assemble_parts(index, displacement_out, velocity_out=None) -> dict:
    """Copy the parts of a checked index into destinations (arrays, memory maps, HDF5 datasets).

    Parameters
    ----------
    index : str or Path
    displacement_out : array-like
        (3, N0, N1, N2) destination [Mpc/h].
    velocity_out : array-like, optional
        (3, N0, N1, N2) destination [km/s] (the run must have velocities).

    Returns
    -------
    dict
        The index.
    """

    idx_path = Path(index)
    index = check_parts(idx_path)
    shape = tuple(index["shape"])
    names = [("displacement", displacement_out)]
    if velocity_out is not None:
        if not index["velocity"]:
            raise InputError(f"{str(idx_path)!r} holds no velocities")
        names.append(("velocity", velocity_out))
    for name, dst in names:
        if tuple(getattr(dst, "shape", ())) != shape:
            raise InputError(f"{name} destination must have shape {shape}, got {getattr(dst, 'shape', None)}")
    for entry in index["parts"]:
        lo, hi = entry["rows"]
        with h5py.File(idx_path.parent / entry["file"], "r") as f:
            for name, dst in names:
                for i in range(lo, hi, 64):  # blocks of rows: bounded memory
                    dst[:, i:min(i + 64, hi)] = f[name][:, i - lo:min(i + 64, hi) - lo]
    return index


def read_parts(index):
    """The whole box of a distributed run, in memory.

    Parameters
    ----------
    index : str or Path
        A ``<stem>.index.json`` written by :func:`predict_distributed`.

    Returns
    -------
    FieldData
        Displacement (3, N0, N1, N2) [Mpc/h] and velocity [km/s] (or None), with the run's box size,
        scale factor, cosmology and provenance (for non-cubic boxes use :func:`assemble_parts`).
    """

    idx_path = Path(index)
    index = _load_index(idx_path)
    shape = tuple(index["shape"])
    dis = np.empty(shape, np.float32)
    vel = np.empty(shape, np.float32) if index["velocity"] else None
    assemble_parts(idx_path, dis, vel)
    return FieldData(dis, vel, box_size=index["box_size"], a=index["a"],
                     cosmology=Cosmology.from_dict(index["cosmology"]), meta=index["meta"])
