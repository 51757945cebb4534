"""Training-run files: checksummed checkpoints, the loss log and the exported model.

Layout of a run folder::

    checkpoints/step_0000100.pt   torch.save of {format, step, package_version, config (with the seed),
                                   data (fingerprint), data_description (seed and cosmology of every
                                   sample file), domain, init_weights_checksum, model, optimizer,
                                   scheduler, scaler, best, ...}; the last ``keep`` are kept
    checkpoints/latest.json       {"file", "step", "sha256"}: written after the checkpoint, it is
                                   the completion marker a resume trusts (sha256 of the file's bytes)
    log.csv                       one row per step (train losses) with validation columns on
                                   validation steps; truncated to the checkpoint's step on resume
    model.emu                     the exported best weights (emu_backend.checkpoints.native format)

Both files are written to a temporary name, fsynced and renamed (:func:`~emu_backend.io.atomic_path`),
so a kill at any moment leaves either the previous checkpoint or the new one, never a partial file
that a resume would accept.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
from pathlib import Path

import torch

from .._version import __version__
from ..errors import CheckpointError
from ..io.atomic import atomic_path

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_DIR", "LOG_NAME", "MODEL_NAME", "save_checkpoint",
           "load_latest_checkpoint", "LossLog"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "emu_backend.training_checkpoint"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.json"
LOG_NAME = "log.csv"
MODEL_NAME = "model.emu"


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_bytes(data)


def save_checkpoint(run_dir, payload: dict, step: int, keep: int = 2) -> Path:
    """Write ``payload`` as checkpoint ``step`` (atomically), then mark it as the latest.

    Parameters
    ----------
    run_dir : path
        The run folder.
    payload : dict
        Plain containers and tensors (loadable with ``weights_only=True``); ``format``, ``step`` and
        ``package_version`` (this emu_backend's) are added.
    step : int
        Optimiser steps done.
    keep : int
        Checkpoints kept (older ones are removed after the marker is written).

    Returns
    -------
    Path
        The checkpoint file.
    """

    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "step": int(step), "package_version": __version__, **payload}, buf)
    data = buf.getvalue()
    path = folder / f"step_{int(step):07d}.pt"
    _write_bytes(path, data)
    marker = {"file": path.name, "step": int(step), "sha256": hashlib.sha256(data).hexdigest()}
    _write_bytes(folder / LATEST, json.dumps(marker, indent=1).encode())
    old = sorted(p for p in folder.glob("step_*.pt") if p.name != path.name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        p.unlink(missing_ok=True)
    for p in folder.glob(".*.part"):  # temporaries of an earlier, killed write
        p.unlink(missing_ok=True)
    logger.info("checkpoint %s (%.1f MB)", path, len(data) / 2**20)
    return path


def load_latest_checkpoint(run_dir) -> dict | None:
    """The latest complete checkpoint of a run folder, or None if it has none.

    Raises
    ------
    CheckpointError
        The marker or the checkpoint it names is unreadable, or the checksum does not match.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    marker_path = folder / LATEST
    if not marker_path.is_file():
        return None
    try:
        marker = json.loads(marker_path.read_text())
        path = folder / str(marker["file"])
        expected = str(marker["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{str(marker_path)!r} is unreadable: {exc}") from exc
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} named by {str(marker_path)!r} cannot be read: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CheckpointError(f"checkpoint {str(path)!r}: sha256 {actual[:16]}... does not match the "
                              f"{expected[:16]}... recorded in {LATEST}: the file is corrupt")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad pickles
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be loaded: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a training checkpoint (format {CHECKPOINT_FORMAT!r})")
    return obj


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


class LossLog:
    """The CSV loss log of a run (rank 0 only).

    Rows are appended and flushed as steps finish; :meth:`truncate` (on resume) drops rows past the
    checkpoint step and a trailing partial line left by a kill, rewriting the file atomically.

    Parameters
    ----------
    path : path
    columns : sequence of str
        The first column must be ``step``.
    """

    def __init__(self, path, columns):
        self.path = Path(path)
        self.columns = list(columns)

    def start(self) -> None:
        """Begin a new log (header only), replacing any file there."""
        _write_bytes(self.path, (",".join(self.columns) + "\n").encode())

    def rows(self) -> list[dict]:
        """The complete rows of the file (a trailing line without newline is ignored)."""
        if not self.path.is_file():
            return []
        text = self.path.read_text()
        lines = text.split("\n")[:-1]  # the part after the last newline is incomplete or empty
        if not lines or lines[0].split(",") != self.columns:
            return []
        return [dict(zip(self.columns, r)) for r in csv.reader(lines[1:]) if len(r) == len(self.columns)]

    def truncate(self, step: int) -> None:
        """Keep the rows with ``step <= step``; rewrite atomically."""
        keep = [r for r in self.rows() if int(r["step"]) <= step]
        out = io.StringIO()
        out.write(",".join(self.columns) + "\n")
        for r in keep:
            out.write(",".join(r[c] for c in self.columns) + "\n")
        _write_bytes(self.path, out.getvalue().encode())

    def append(self, row: dict) -> None:
        """Append one row (missing columns empty) and flush it."""
        line = ",".join(_fmt(row.get(c)) for c in self.columns) + "\n"
        with open(self.path, "a") as fh:
            fh.write(line)
            fh.flush()
