"""One writer per output: a lock file of its own beside every output, whatever HDF5's file locking says.

:func:`output_lock` creates ``<output>.lock`` (for a folder output, ``<folder>/.emu_backend.lock``) with
``O_CREAT | O_EXCL``, so exactly one process gets it, and records its owner in it as JSON: process id,
host, user, start time (UTC), command line and a random token; the file is fsynced. The lock is taken
before the output, or any partial file of an earlier run, is looked at, and released (the file
removed) when the block exits, on success, error or Ctrl-C alike.

A second run finds the file and raises :class:`~emu_backend.errors.OutputLockedError` naming the output,
the lock file and its owner. A lock is *stale* when its owner ran on this host and that process no
longer exists (``os.kill(pid, 0)`` finds none, or the process with that id started at another time: the
id was reused); a stale lock is taken over atomically (renamed aside, checked to be the one judged
stale, then created anew with ``O_EXCL``) with a warning. A lock from another host is never broken:
the error says how to check that its owner is gone and remove it by hand. A SIGKILL or a crash leaves
the lock file behind; a run on the same host takes it over.

Examples
--------
>>> import tempfile, os
>>> out = os.path.join(tempfile.mkdtemp(), "out.h5")
>>> with output_lock(out) as lock:
...     read_lock(lock)["pid"] == os.getpid()
True
>>> os.path.exists(out + ".lock")
False
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import json
import logging
import os
import shlex
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputLockedError, from_system_error

__all__ = ["output_lock", "lock_path", "read_lock", "check_unlocked", "LOCK_SUFFIX", "FOLDER_LOCK_NAME"]

logger = logging.getLogger(__name__)

#: Suffix of a file output's lock file: ``out.h5`` -> ``out.h5.lock``.
LOCK_SUFFIX = ".lock"
#: Name of a folder output's lock file, inside the folder.
FOLDER_LOCK_NAME = ".emu_backend.lock"
_COMMAND_WIDTH = 300
_ATTEMPTS = 5  # rounds of create / judge / take over before giving up on a lock that keeps changing hands


def lock_path(path, *, folder: bool = False) -> Path:
    """The lock file of an output: ``<path>.lock`` beside a file, ``<path>/.emu_backend.lock`` in a folder."""
    path = Path(path)
    return path / FOLDER_LOCK_NAME if folder else path.with_name(path.name + LOCK_SUFFIX)


def _process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _owner(output: Path, command: str | None) -> dict:
    command = shlex.join(sys.argv) if command is None else str(command)
    return {"pid": os.getpid(), "host": socket.gethostname(), "user": _user(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": command[:_COMMAND_WIDTH], "output": str(output), "pid_start": _process_start(os.getpid()),
            "token": uuid.uuid4().hex}


def _read(lock: Path) -> tuple[bytes | None, dict | None]:
    """The raw bytes of a lock file (None if it is gone) and its owner record (None if unreadable)."""
    try:
        raw = lock.read_bytes()
    except FileNotFoundError:
        return None, None
    try:
        owner = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return raw, None
    ok = isinstance(owner, dict) and isinstance(owner.get("pid"), int) and owner["pid"] > 0 and isinstance(
        owner.get("host"), str)
    return raw, owner if ok else None


def read_lock(lock) -> dict | None:
    """The owner record of a lock file (pid, host, user, started, command, output, ...), or None when the
    file is missing or unreadable."""
    return _read(Path(lock))[1]


def _is_stale(owner: dict) -> bool:
    """Whether the owner of a lock ran on this host and no longer runs (a reused process id included)."""
    if owner["host"] != socket.gethostname():
        return False
    pid = owner["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    except OSError:
        return False
    recorded, now = owner.get("pid_start"), _process_start(pid)
    return recorded is not None and now is not None and recorded != now


def _describe(owner: dict) -> str:
    return (f"pid {owner['pid']} on host {owner['host']} (user {owner.get('user', '?')}), started "
            f"{owner.get('started', '?')}, command {owner.get('command', '?')!r}")


def _locked_error(output: Path, lock: Path, owner: dict | None) -> OutputLockedError:
    if owner is None:
        return OutputLockedError(
            f"output {str(output)!r} is locked: the lock file {str(lock)!r} exists but cannot be read (a run "
            f"killed while creating it?); if no run is writing {str(output)!r}, delete the lock file")
    if owner["host"] == socket.gethostname():
        advice = "that process is still running on this host; wait for it to finish or write elsewhere"
    else:
        advice = (f"wait for it to finish or write elsewhere; if that run is gone (check on {owner['host']}: "
                  f"ps -p {owner['pid']}), delete the lock file")
    return OutputLockedError(f"output {str(output)!r} is locked by another run: {_describe(owner)}; lock file "
                             f"{str(lock)!r}; {advice}")


def check_unlocked(path, *, folder: bool = False) -> None:
    """Raise :class:`OutputLockedError` if a live run holds the lock of output ``path`` (a quick check
    that takes no lock: :func:`output_lock` is what excludes other writers)."""
    path = Path(path)
    lock = lock_path(path, folder=folder)
    raw, owner = _read(lock)
    if raw is not None and (owner is None or not _is_stale(owner)):
        raise _locked_error(path, lock, owner)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _create(lock: Path, data: bytes) -> bool:
    """Create ``lock`` holding ``data`` if no such file exists (``O_EXCL``); False if one does."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        lock.unlink(missing_ok=True)
        raise
    _fsync_dir(lock.parent)
    return True


def _take_over(lock: Path, raw: bytes, owner: dict) -> None:
    """Remove the stale lock ``raw`` atomically: rename it aside, and put it back if what was renamed
    is not the lock judged stale (another process took it over in between)."""
    aside = lock.with_name(f"{lock.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:  # another process removed it first
        return
    try:
        if aside.read_bytes() == raw:
            logger.warning("taking over the stale lock %s of %s: that process no longer runs", lock,
                           _describe(owner))
            return
        with contextlib.suppress(FileExistsError):  # a fresh lock: put it back unless yet another was made
            os.link(aside, lock)
    finally:
        aside.unlink(missing_ok=True)


@contextlib.contextmanager
def output_lock(path, *, folder: bool = False, command: str | None = None) -> Iterator[Path]:
    """Hold the lock of output ``path`` for the block; yields the lock file's path.

    Parameters
    ----------
    path : str or Path
        The output: a file (lock file ``<path>.lock`` beside it) or, with ``folder``, a folder (lock file
        ``<path>/.emu_backend.lock``). Missing folders are created, and removed again on exit if they
        are still empty (the run failed before writing anything).
    folder : bool
        ``path`` is a folder output.
    command : str, optional
        Recorded as the owner's command line; default the process's ``sys.argv``.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    OutputLockedError
        Another live run holds the lock (the message names the lock file, the owner's pid, host, user,
        start time and command), or the lock file is unreadable.
    InputError, ResourceError
        The lock file cannot be created (see :func:`~emu_backend.errors.from_system_error`).
    """
    path = Path(path)
    lock = lock_path(path, folder=folder)
    owner = _owner(path, command)
    data = (json.dumps(owner, sort_keys=True) + "\n").encode("utf-8")
    made = []  # the folders created here, deepest first
    try:
        made = _make_folder(lock.parent)
        for _ in range(_ATTEMPTS):
            if _create(lock, data):
                break
            raw, holder = _read(lock)
            if raw is None:  # released in between: try again
                continue
            if holder is None or not _is_stale(holder):
                raise _locked_error(path, lock, holder)
            _take_over(lock, raw, holder)
        else:
            raise OutputLockedError(f"output {str(path)!r}: its lock file {str(lock)!r} kept changing hands over "
                                    f"{_ATTEMPTS} attempts; another run is starting on it")
    except BaseException as exc:
        _remove_empty(made)
        if isinstance(exc, OSError):
            raise from_system_error(exc, lock) from exc
        raise
    logger.debug("locked %s (%s)", path, lock)
    try:
        yield lock
    finally:
        _release(lock, owner["token"])
        _remove_empty(made)


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, deepest first."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    if missing:
        missing[0].mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed or empty-handed run created, deepest first, while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _release(lock: Path, token: str) -> None:
    raw, holder = _read(lock)
    if holder is not None and holder.get("token") == token:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        logger.debug("released %s", lock)
    elif raw is not None:
        logger.warning("the lock %s is no longer this run's (%s); left in place", lock,
                       _describe(holder) if holder else "unreadable")
