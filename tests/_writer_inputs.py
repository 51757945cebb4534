"""The bad-input table's cases for outputs: paths that cannot be written, outputs locked by another run,
a full disk and too little free space.

:func:`reliability_cases` adds rows to the table of ``tests/test_bad_inputs.py`` (and so to
docs/reliability.md); it takes that module's ``Case`` class. The calls get its ``ctx`` (a temporary
``dir``, a width-2 model file ``dir/model.emu`` and an ``emu``). A lock "of another host" is a lock file
naming a host that is not this one; a full disk is a file-size limit (``RLIMIT_FSIZE``) lowered for
one call (Python ignores SIGXFSZ, so the write fails with EFBIG, as it fails with ENOSPC on a full disk).
"""

import contextlib
import json
import resource
from pathlib import Path

import numpy as np

from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.errors import InputError, OutputLockedError, ResourceError
from emu_backend.inference.streaming import predict_to_file
from emu_backend.io.fields import write_fields
from emu_backend.io.output_lock import lock_path
from emu_backend.io.output_path import check_free_space
from emu_backend.training.make_set import make_training_set
from emu_backend.training.trainer import TrainConfig, train

LOCKED_BY = r"is locked by another run: pid 4242 on host node042\.cluster \(user alice\).*delete the lock file"


def _folder(ctx) -> Path:
    folder = Path(ctx.dir) / "writers"
    if not folder.is_dir():
        folder.mkdir()
        np.save(folder / "lin.npy", np.zeros((3, 8, 8, 8), np.float32))
        (folder / "a_file").write_text("not a folder\n")
        (folder / "folder.h5").mkdir()
    return folder


def _locked(path: Path, folder: bool = False) -> Path:
    """``path`` with a lock file of a run on another host (never broken automatically)."""
    if folder:
        path.mkdir(exist_ok=True)
    owner = {"pid": 4242, "host": "node042.cluster", "user": "alice", "started": "2024-05-06T07:08:09+00:00",
             "command": "emu-backend predict lin.npy out.h5 ...", "token": "t"}
    lock_path(path, folder=folder).write_text(json.dumps(owner))
    return path


def _predict(ctx, out, *extra) -> list:
    folder = _folder(ctx)
    return ["predict", str(folder / "lin.npy"), str(out), "--omega-m", "0.3", "--z", "0", "--weights",
            str(Path(ctx.dir) / "model.emu"), "--tile", "8", "--no-velocity", *extra]


def _predict_in_place(ctx) -> list:
    """``predict IN IN --overwrite`` (refused before the input is opened: its content does not matter)."""
    src = _folder(ctx) / "in_place.h5"
    src.write_bytes(b"")
    args = _predict(ctx, src, "--overwrite")
    args[1] = str(src)
    return args


def _run(out) -> list:
    return ["run", "--backend", "za", "-n", "8", "--z", "0", "--no-plot", "--out", str(out)]


@contextlib.contextmanager
def _file_size_limit(n_bytes: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _predict_on_full_disk(ctx):
    folder = _folder(ctx)
    with _file_size_limit(4096):  # the 8^3 output needs 6 kB of data
        return predict_to_file(ctx.emu, folder / "lin.npy", folder / "full.h5", 0.3, 0.0, tile_size=8,
                               velocity=False)


def reliability_cases(case) -> list:
    """Rows of the bad-input table: ``case`` is ``tests/test_bad_inputs.py``'s ``Case``."""
    return [
        case("predict-output-is-folder", "CLI", "predict into an output path that is a folder",
             lambda c: _predict(c, _folder(c) / "folder.h5"), InputError,
             r"output '.*folder\.h5' is a folder; give a file name"),
        case("predict-output-under-file", "CLI", "predict into a path under a regular file",
             lambda c: _predict(c, _folder(c) / "a_file" / "out.h5"), InputError,
             r"cannot write '.*a_file/out\.h5': '.*a_file' is a file, not a folder"),
        case("run-out-is-file", "CLI", "run --out naming a regular file",
             lambda c: _run(_folder(c) / "a_file"), InputError, r"output folder '.*a_file' is a file; give a folder"),
        case("run-out-under-file", "CLI", "run --out under a regular file",
             lambda c: _run(_folder(c) / "a_file" / "run"), InputError,
             r"cannot write '.*a_file/run': '.*a_file' is a file, not a folder"),
        case("predict-output-is-input", "CLI", "predict IN IN --overwrite: the output is the input file",
             lambda c: _predict_in_place(c), InputError,
             r"output '.*in_place\.h5' is the input file '.*in_place\.h5': writing it would destroy the input"),
        case("predict-locked", "CLI", "predict into an output another run (on another host) is writing",
             lambda c: _predict(c, _locked(_folder(c) / "locked.h5")), OutputLockedError,
             r"output '.*locked\.h5' " + LOCKED_BY),
        case("predict-locked-overwrite", "CLI", "the same with --overwrite (never deletes a file being written)",
             lambda c: _predict(c, _locked(_folder(c) / "locked.h5"), "--overwrite"), OutputLockedError,
             r"output '.*locked\.h5' " + LOCKED_BY),
        case("run-locked", "CLI", "run --out into a folder another run is writing",
             lambda c: [*_run(_locked(_folder(c) / "locked_run", folder=True)), "--overwrite"], OutputLockedError,
             r"output '.*locked_run' " + LOCKED_BY),
        case("make-set-locked", "API", "make_training_set into a folder another run is writing",
             lambda c: make_training_set(_locked(_folder(c) / "locked_set", folder=True), [QUIJOTE_FIDUCIAL],
                                         grid=8, z=[0.0], backend="2lpt"), OutputLockedError,
             r"output '.*locked_set' " + LOCKED_BY),
        case("train-locked", "API", "train into a run folder another run is writing (before any file is read)",
             lambda c: train(TrainConfig(width=2, crop=8, steps=1), [_folder(c) / "no_sample.h5"], [],
                             _locked(_folder(c) / "locked_train", folder=True)), OutputLockedError,
             r"output '.*locked_train' " + LOCKED_BY),
        case("write-fields-to-folder", "API", "write_fields to a path that is a folder",
             lambda c: write_fields(_folder(c) / "folder.h5", np.zeros((3, 2, 2, 2), np.float32), box_size=1.0,
                                    a=1.0, cosmology=QUIJOTE_FIDUCIAL), InputError,
             r"output '.*folder\.h5' is a folder; give a file name"),
        case("predict-full-disk", "API", "predict_to_file when the disk fills up (a 4 kB file-size limit)",
             _predict_on_full_disk, ResourceError,
             r"'.*full\.h5': file too large: over the file system's or the process's file-size limit \(EFBIG\)"),
        case("disk-space", "API", "check_free_space: 1 EB to write (the writers' pre-flight check)",
             lambda c: check_free_space(c.dir, 10**18, "out.h5"), ResourceError,
             r"not enough disk space for out\.h5: needs 1e\+09 GB in '.*', [0-9.e+]+ GB free"),
    ]
