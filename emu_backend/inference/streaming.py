"""Resumable, bounded-memory emulation of large boxes, from a field file on disk to field files on disk.

:func:`predict_to_file` streams tiles from a memory-mapped ``.npy`` or an HDF5 field file through
:meth:`Emulator.run_plan` into one HDF5 field file per redshift (the format of
:mod:`emu_backend.io.fields`). Each output is created with its whole layout under a temporary name and
renamed to ``<name>.partial``: chunked, pre-allocated datasets (chunks of one tile), a done map (dataset
``tile_sha256``, one SHA-256 per tile of the file's tile range, all zero until the tile is done) and a
progress record (root attribute ``next_tile``). After every batch of tiles the data and the batch's
digests are flushed and fsynced *before* the record is written and fsynced again, so the record never
claims tiles whose data is not on disk: a kill loses at most the batch in flight.

A later call with the same run parameters (root attribute ``run``, JSON, which identifies the input by
a SHA-256 of its content, not by its size and time) continues from ``next_tile``, after re-hashing every
tile the record claims: from the first tile whose data does not match its digest (a record edited
ahead of the data, or data lost or changed on disk) the tiles are recomputed, with a warning naming the
file and the tile. The run restarts on a batch boundary of the full run, so the result is bit-identical
to an uninterrupted run. When every tile is done, every tile of the file is verified against its digest
(a mismatch is a :class:`FileFormatError` naming the file and the tile; the partial file is kept and a
resume recomputes from that tile); then the file is marked ``complete``, fsynced and renamed onto its
final name, so a file with the final name is always complete. Peak memory is set by ``tile_size`` and
``batch_size``, not by the box.

Before anything else, each output is checked for writing and its lock file ``<name>.lock`` taken
(:mod:`emu_backend.io.output_lock`, whatever HDF5's file locking says), so a second run on it raises
:class:`~emu_backend.errors.OutputLockedError`; free disk space is checked before files are created.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from .._version import __version__
from ..checks import check_reals
from ..cosmology.params import QUIJOTE_FIDUCIAL, Cosmology
from ..datatypes.meta import meta_to_json
from ..errors import FileFormatError, InputError
from ..io.atomic import check_overwrite
from ..io.fields import FORMAT, FORMAT_VERSION, field_attributes
from ..io.hdf5_filters import ensure_filters
from ..io.output_lock import output_lock
from ..io.output_path import check_free_space, check_writable, os_errors_as_package_errors
from .domain import TRAINED_CELL_SIZE_MPC_H
from .tile_evidence import TileEvidence, input_digest
from .tiling import TilePlan

__all__ = ["predict_to_file", "output_paths", "PARTIAL_SUFFIX"]

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
_NEW_SUFFIX = ".new"  # a partial file being created, renamed to .partial once its layout is durable


def output_paths(output_path, z) -> list[Path]:
    """Final file names: ``output_path`` for a scalar ``z``, ``<stem>_z<z><suffix>`` per entry of a list."""
    output_path = Path(output_path)
    if output_path.suffix.lower() not in (".h5", ".hdf5"):
        raise InputError(f"output {str(output_path)!r} must end in .h5 or .hdf5")
    if np.ndim(z) == 0:
        return [output_path]
    paths = [output_path.with_name(f"{output_path.stem}_z{v:g}{output_path.suffix}") for v in redshift_list(z)]
    if len(set(paths)) != len(paths):
        raise InputError(f"redshifts {list(z)} give clashing file names {[p.name for p in paths]}")
    return paths


def redshift_list(z) -> list[float]:
    """``z`` (a number or a sequence) as a list of floats, or :class:`InputError` (the check of
    :meth:`Emulator.plan`)."""
    return check_reals(z, "z", -1.0, lo_open=True, item="redshift")


def _partial(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _open_input(path: Path, stack: contextlib.ExitStack):
    """The displacement array-like of a ``.npy`` (memory map) or HDF5 field file, and its attributes."""
    if not path.is_file():
        raise InputError(f"input {str(path)!r} not found")
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False), {}
        except (ValueError, EOFError, OSError) as exc:  # EOFError: an empty file
            raise FileFormatError(f"{str(path)!r}: cannot be read as a .npy array (empty, truncated or not "
                                  f".npy?): {type(exc).__name__}: {exc}") from exc
    if path.suffix.lower() in (".h5", ".hdf5"):

        try:
            f = stack.enter_context(h5py.File(path, "r"))
            ds, attrs = f["displacement"], {k: f.attrs[k] for k in f.attrs}
        except (OSError, KeyError) as exc:
            raise FileFormatError(f"{str(path)!r}: no HDF5 field file with a 'displacement' dataset: {exc}") from exc
        ensure_filters(ds, path, "displacement")  # a compressed input: hdf5plugin loaded when needed
        return ds, attrs
    raise InputError(f"input {str(path)!r} must be a .npy, .h5 or .hdf5 file")


def _emulator_digest(emulator) -> str:
    """SHA-256 of the emulator's kind and weights (its file checksum alone may be empty)."""
    # the layout, precision and compilation change the round-off, so a resume must use the same ones
    # (the default fp32 eager run keeps the digest of earlier versions, so their part files resume)
    key = [emulator.model.kind, getattr(emulator, "memory_format", "contiguous")]
    extra = [getattr(emulator, "precision", "fp32"), getattr(emulator, "compile_mode", None)]
    h = hashlib.sha256("|".join(map(str, key + (extra if extra != ["fp32", None] else []))).encode())
    for net_name, net in sorted(emulator.model.networks.items()):
        for name, tensor in net.state_dict().items():
            h.update(f"{net_name}.{name}".encode())
            h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def _fsync(f) -> None:
    """Flush and fsync an open h5py file or Python file object."""
    f.flush()
    os.fsync(f.fileno() if hasattr(f, "fileno") else f.id.get_vfd_handle())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_record(path: Path) -> tuple[dict, int, bool]:

    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["run"]), int(f.attrs["next_tile"]), bool(f.attrs["complete"])
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise FileFormatError(f"{str(path)!r}: unreadable progress record ({exc}); pass overwrite=True to start over") from exc


def _mismatch(path: Path, recorded: dict, wanted: dict) -> str | None:
    diff = [f"{k}: recorded {recorded.get(k)!r}, now {wanted[k]!r}" for k in wanted if recorded.get(k) != wanted[k]]
    return f"{str(path)!r} was written by a different run ({'; '.join(diff)})" if diff else None


def predict_to_file(emulator, input_path, output_path, omega_m: float, z, *, cosmology: Cosmology | None = None,
                    box_size: float | None = None, velocity: bool = True, tile_size: int = 128,
                    batch_size: int = 1, overwrite: bool = False, resume: bool = True,
                    progress: bool = False, on_batch: Callable[[int, int], None] | None = None) -> list[Path]:
    """Emulate a box stored on disk into HDF5 field files, resumably and with bounded memory.

    Parameters
    ----------
    emulator : Emulator
    input_path : str or Path
        z = 0 linear displacement (3, n, n, n) [Mpc/h]: a ``.npy`` (memory-mapped) or an HDF5 field
        file (dataset ``displacement``; its ``box_size``, ``cosmology`` and ``meta`` attributes are used).
    output_path : str or Path
        ``.h5``/``.hdf5`` name. A scalar ``z`` writes exactly this file; a list writes one file per
        redshift named ``<stem>_z<z><suffix>`` (see :func:`output_paths`).
    omega_m : float
        Matter density.
    z : float or list of float
        Output redshift(s).
    cosmology : Cosmology, optional
        Recorded in the outputs. Default: the input file's, else ``QUIJOTE_FIDUCIAL`` with ``omega_m``.
    box_size : float, optional
        Box side [Mpc/h]. Default: the input file's, else ``n`` times the trained cell size.
    velocity, tile_size, batch_size, progress
        As in :meth:`Emulator.predict`.
    overwrite : bool
        Replace existing final outputs, and discard partial files instead of resuming them.
    resume : bool
        Continue partial files left by an interrupted run with the same parameters (input path and
        SHA-256 of its content, omega_m, redshifts, tile and batch size, velocity, box size,
        emulator weights, dtype, device). A mismatch raises :class:`InputError` naming the fields.
        The tiles a partial file claims are verified against their digests first; from the first one
        that fails, the tiles are recomputed (see the module docstring).
    on_batch : callable, optional
        Called as ``on_batch(next_tile, n_tiles)`` after each batch is flushed to disk.

    Returns
    -------
    list of Path
        The final files, one per redshift, readable by :func:`emu_backend.io.fields.read_fields`.

    Raises
    ------
    InputError
        Existing outputs without ``overwrite``; a partial file from a different run (including an
        input whose content changed), or any partial file with ``resume=False``; bad arguments (as
        in :meth:`Emulator.predict`); an output that cannot be written (a folder, under a file, no
        permission).
    OutputLockedError
        Another run is writing one of the outputs (its lock file ``<name>.lock`` names it).
    FileFormatError
        An unreadable partial file, or a written tile that no longer matches its digest before the
        final rename (the partial file is kept; run again to recompute from that tile).
    ResourceError
        Less free disk space than the files to create, or the disk filled up while writing.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from emu_backend.inference import Emulator, ZdepConvention
    >>> from emu_backend.io.fields import read_fields
    >>> from emu_backend.nn import StyledVNet
    >>> d = Path(tempfile.mkdtemp())
    >>> np.save(d / "lin.npy", np.zeros((3, 8, 8, 8), np.float32))
    >>> emu = Emulator(ZdepConvention(StyledVNet(2, width=4)))
    >>> [p] = predict_to_file(emu, d / "lin.npy", d / "out.h5", 0.3, 1.0, tile_size=8, velocity=False)
    >>> read_fields(p).displacement.shape
    (3, 8, 8, 8)
    """
    finals = output_paths(output_path, z)
    zs = redshift_list(z)
    with os_errors_as_package_errors(finals[0]), contextlib.ExitStack() as stack:
        job = prepare_stream(stack, emulator, input_path, finals, omega_m, zs, cosmology=cosmology,
                             box_size=box_size, velocity=velocity, tile_size=tile_size, batch_size=batch_size,
                             overwrite=overwrite, resume=resume)
        run_stream(stack, job, progress=progress, on_batch=on_batch)
    return finals


@dataclass
class StreamJob:
    """A checked streaming run, between :func:`prepare_stream` and :func:`run_stream` (internal seam,
    shared with :mod:`emu_backend.inference.distributed`)."""

    emulator: object
    src: object
    shape: tuple
    omega_m: float
    velocity: bool
    tile_size: int
    batch_size: int
    box_size: float
    tiles: tuple  # [start, stop) of this job
    rows: tuple  # box rows [lo, hi) along axis 0 held by the files
    n_tiles: int
    run: dict
    header: dict  # root attributes of new files (less run/next_tile/complete/z/a)
    meta: dict
    evidence: TileEvidence | None = None  # the done map of each file
    plan: object = None  # the checked RunPlan of Emulator.plan, run without checking again
    todo: list = field(default_factory=list)  # (z, final, partial, start or None)
    finals: list = field(default_factory=list)


def check_not_input(input_path, finals) -> None:
    """Refuse an output file that is the input file (same path, or a link to it): writing it would
    destroy the input, ``overwrite`` or not.

    Raises
    ------
    InputError
        Naming the output and the input.
    """
    source = Path(input_path).resolve()
    for final in finals:
        target = Path(final).resolve()
        same = target == source or (target.exists() and source.exists() and os.path.samefile(target, source))
        if same:
            raise InputError(f"output {str(final)!r} is the input file {str(input_path)!r}: writing it would "
                             "destroy the input; choose another output path")


def prepare_stream(stack: contextlib.ExitStack, emulator, input_path, finals, omega_m, zs, *,
                   cosmology=None, box_size=None, velocity=True, tile_size=128, batch_size=1,
                   overwrite=False, resume=True, part=None, accept_complete=None, view=None) -> StreamJob:
    """Check everything and decide, per redshift, to start, resume or skip; writes nothing.

    ``part``: ``(rank, world_size)`` of one part of a multi-file run: the files hold the slab of
    rows of the rank's tiles (:meth:`TilePlan.slab_share`); rank, world size, tiles and rows join the
    run record (compared on resume). ``accept_complete``: keep existing final files that are complete
    and from the same run (default: only when some partial file of this call is being resumed).
    ``view``: called on the opened input array; what it returns is checked and read instead (the
    distributed path passes the rows a rank reads, so that a rank scans only its slab for NaN).
    The lock of every file of ``finals`` is taken first and held until ``stack`` closes.
    """

    check_not_input(input_path, finals)
    for final in finals:  # before the input, any partial file or any compute is looked at
        check_writable(final)
        stack.enter_context(output_lock(final))
    input_path = Path(input_path).resolve()
    src, in_attrs = _open_input(input_path, stack)
    parsed = field_attributes(input_path, in_attrs)  # the raw attributes go into the input digest
    if view is not None:
        src = view(src)
    shape = tuple(getattr(src, "shape", ()))
    n = shape[1] if len(shape) == 4 else 0
    if box_size is None:
        box_size = parsed.get("box_size", n * TRAINED_CELL_SIZE_MPC_H)
    # Check the arguments (shape, domain, ...) before any file is touched.
    rp = emulator.plan(src, omega_m, zs, velocity=velocity, tile_size=tile_size, batch_size=batch_size,
                       box_size=box_size)
    if cosmology is None:
        cosmology = parsed.get("cosmology") or QUIJOTE_FIDUCIAL.clone(omega_m=rp.omega_m)
    if not isinstance(cosmology, Cosmology):
        raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
    if abs(cosmology.omega_m - rp.omega_m) > 1e-12:
        raise InputError(f"omega_m = {omega_m!r} differs from the cosmology's omega_m = {cosmology.omega_m!r}")
    n_tiles = len(rp.tiles)
    share = (0, n_tiles) if part is None else rp.tiles.slab_share(*part)
    rows = rp.tiles.rows(*share)
    in_meta = parsed.get("meta", {})
    run = {"input": str(input_path), "input_sha256": input_digest(src, in_attrs), "shape": list(shape),
           "omega_m": rp.omega_m, "zs": list(rp.zs), "tile_size": tile_size,
           "batch_size": batch_size, "velocity": bool(velocity), "box_size": float(box_size),
           "emulator_sha256": _emulator_digest(emulator), "dtype": str(emulator.dtype),
           "device": emulator.device.type}
    if part is not None:
        run.update(rank=part[0], world_size=part[1], tiles=list(share), rows=list(rows))
    meta = {"package": "emu_backend", "package_version": __version__, "input": str(input_path),
            "omega_m": rp.omega_m, "tile_size": tile_size, "batch_size": batch_size,
            "model_kind": emulator.model.kind, "checksum": emulator.checksum,
            "emulator_sha256": run["emulator_sha256"], "source": emulator.source,
            "untrained": emulator.untrained, "dtype": str(emulator.dtype), "seed": in_meta.get("seed"),
            "precision": getattr(emulator, "precision", "fp32"), "compile_mode": getattr(emulator, "compile_mode", None),
            "config": dict(run)}
    header = {"box_size": np.float64(box_size), "cosmology": json.dumps(cosmology.to_dict(), sort_keys=True),
              "meta": meta_to_json(meta), "format": FORMAT, "format_version": np.int32(FORMAT_VERSION),
              "n_tiles": np.int64(n_tiles)}
    plan = TilePlan(shape[1:], tile_size)
    job = StreamJob(emulator, src, shape, rp.omega_m, bool(velocity), tile_size, batch_size, float(box_size),
                    share, rows, n_tiles, run, header, meta, finals=list(finals), plan=rp,
                    evidence=TileEvidence(tuple(plan.tiles[share[0]:share[1]]), rows[0], bool(velocity),
                                          tuple(b[0].index for b in plan.batches(batch_size, *share))))

    # Decide, for every redshift, whether to start, resume or skip -- before changing anything.
    partials = [_partial(p) for p in finals]
    resuming = resume and not overwrite and any(p.exists() for p in partials)
    if accept_complete is not None:
        resuming = accept_complete
    for zi, final, part_path in zip(rp.zs, finals, partials):
        want = dict(run, z=zi)
        if part_path.exists() and not overwrite:
            if not resume:
                raise InputError(f"{str(part_path)!r} exists (an interrupted run); pass resume=True to continue "
                                 "it or overwrite=True to start over")
            recorded, next_tile, _ = _read_record(part_path)
            if (msg := _mismatch(part_path, recorded, want)) is not None:
                raise InputError(msg + "; pass the same parameters to resume or overwrite=True to start over")
            job.todo.append((zi, final, part_path, job.evidence.resume_start(part_path, next_tile)))
        elif final.exists() and not overwrite:
            recorded, next_tile, complete = _read_record(final) if resuming else ({}, 0, False)
            if not (resuming and complete and _mismatch(final, recorded, want) is None):
                check_overwrite(final, False)
            log.info("%s is already complete (interrupted between renames)", final)
        else:
            job.todo.append((zi, final, part_path, None))
    new = [final for _, final, _, start in job.todo if start is None]
    if new:  # a partial file is allocated in full when it is created
        per_file = 3 * (rows[1] - rows[0]) * int(np.prod(shape[2:])) * 4 * (2 if velocity else 1)
        check_free_space(new[0].resolve().parent, len(new) * per_file, f"{len(new)} file(s) such as {str(new[0])!r}")
    return job


def run_stream(stack: contextlib.ExitStack, job: StreamJob, *, progress: bool = False,
               on_batch: Callable[[int, int], None] | None = None) -> list[Path]:
    """Create or reopen the partial files of ``job``, stream its tiles into them, verify, then rename them."""

    files, starts = [], []
    for zi, final, part, start in job.todo:
        if start is None:
            _create_partial(job, zi, part)
            start = job.tiles[0]
        files.append(stack.enter_context(h5py.File(part, "r+")))
        starts.append(start)
    for final in job.finals:
        _fsync_dir(final.resolve().parent)
    if not files:
        return job.finals
    start, stop = min(starts), job.tiles[1]
    log.info("streaming tiles [%d, %d) of %d (%d^3) into %d file(s), from tile %d", job.tiles[0], stop,
             job.n_tiles, job.tile_size, len(files), start)
    out = [(f["displacement"], f["velocity"] if job.velocity else None) for f in files]

    bar = tqdm(total=stop - job.tiles[0], initial=start - job.tiles[0], desc="tiles", unit="tile",
               disable=not (progress and sys.stderr.isatty()))
    plan = dataclasses.replace(job.plan, zs=tuple(t[0] for t in job.todo))
    for batch in job.emulator.run_plan(job.src, plan, out, start_tile=start, stop_tile=stop,
                                       out_offset=job.rows[0]):
        next_tile = batch[-1].index + 1
        for f in files:  # the data and its evidence durable first ...
            job.evidence.record(f, batch)
            _fsync(f)
        for f in files:  # ... then the record that claims them
            f.attrs["next_tile"] = np.int64(next_tile)
            _fsync(f)
        bar.update(len(batch))
        log.debug("tiles done up to %d of [%d, %d)", next_tile, job.tiles[0], stop)
        if on_batch is not None:
            on_batch(next_tile, job.n_tiles)
    bar.close()
    for f, (_, _, part, _) in zip(files, job.todo):
        f.close()
        job.evidence.check_done(part)
    for _, final, part, _ in job.todo:
        with h5py.File(part, "r+") as f:
            f.attrs["complete"] = True
            _fsync(f)
        os.replace(part, final)
        _fsync_dir(final.parent)
        log.info("wrote %s", final)
    return job.finals


def _create_partial(job: StreamJob, z: float, part: Path) -> None:
    """Create ``part`` with its attributes, pre-allocated datasets and an empty done map, durably: it is
    written under a temporary name, fsynced, then renamed, so a kill never leaves a half-made ``part``."""
    lo, hi = job.rows
    out_shape = (3, hi - lo) + tuple(job.shape[2:])
    part.parent.mkdir(parents=True, exist_ok=True)
    tmp = part.with_name(part.name + _NEW_SUFFIX)
    try:  # through a Python file: a failed write (full disk) raises OSError instead of crashing HDF5's close
        with open(tmp, "w+b") as fh:
            with h5py.File(fh, "w") as f:
                attrs = dict(job.header, a=np.float64(1.0 / (1.0 + z)), z=np.float64(z),
                             run=json.dumps(dict(job.run, z=z), sort_keys=True), next_tile=np.int64(job.tiles[0]),
                             complete=False)
                for key, value in attrs.items():
                    f.attrs[key] = value
                chunks = (1,) + tuple(min(job.tile_size, s) for s in out_shape[1:])
                for name, units in (("displacement", "Mpc/h"), ("velocity", "km/s"))[:2 if job.velocity else 1]:
                    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                    dcpl.set_chunk(chunks)
                    # all chunks placed now: later writes are raw data only
                    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
                    f.create_dataset(name, shape=out_shape, dtype=np.float32, chunks=chunks, fillvalue=0.0, dcpl=dcpl)
                    f[name].attrs["units"] = units
                job.evidence.create(f)
            _fsync(fh)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a file that failed to be made (a full disk) is not left behind
        raise
    os.replace(tmp, part)
    _fsync_dir(part.parent)
