"""The ``emu-backend`` console script (also ``python -m emu_backend``).

Every subcommand is a module of this package with the same shape: ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``handle(args) -> int``, which builds the frozen config of a library
function (:mod:`emu_backend.pipelines`) from the flags and calls it. This module only builds the
parser from :data:`SUBCOMMANDS`, sets up logging and turns errors into exit codes: errors of the
package (:class:`~emu_backend.errors.EmuBackendError`) print ``error: <message>`` to stderr and exit
with status 2, and so do the operating system's, the allocators' and the device's (``OSError``,
``MemoryError``, torch's ``OutOfMemoryError``), first turned into the package's errors by
:func:`~emu_backend.errors.from_system_error` (``-vv`` logs the traceback); Ctrl-C exits with 130,
SIGTERM (a batch system's cancel) with 143, both after releasing the output locks.

Examples
--------
>>> build_parser().prog
'emu-backend'
>>> list(SUBCOMMANDS)
['run', 'validate', 'make-training-set', 'predict', 'train', 'reconstruct', 'lightcone', 'trees']
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from .._version import __version__
from ..errors import EmuBackendError, from_system_error
from ..pipelines.steps import PROGRESS_LOGGER
from . import lightcone, make_training_set, predict, reconstruct, run, train, trees, validate
from ._common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, DeferredNotes, cli_message, on_terminal

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

logger = logging.getLogger(__name__)

#: Exit status after SIGTERM, as a shell reports a process it ended (128 + 15).
EXIT_TERMINATED = 128 + signal.SIGTERM

#: Subcommands: name -> module (``NAME``, ``HELP``, ``add_arguments``, ``handle``), in the order of ``--help``.
SUBCOMMANDS = {module.NAME: module for module in (run, validate, make_training_set, predict, train, reconstruct,
                                                       lightcone, trees)}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="emu-backend",
        description="Field-level neural-network emulator of cosmological N-body simulations.",
    )
    parser.add_argument("--version", action="version", version=f"emu_backend {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v INFO, -vv DEBUG)")
        module.add_arguments(p)
        p.set_defaults(handler=module.handle)
    return parser


def _setup_logging(verbosity: int, notes: DeferredNotes) -> None:
    """Log to the current stderr at WARNING (default), INFO (-v) or DEBUG (-vv); ``notes`` holds back the
    shipped weights' note, printed once after the result."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_emu_backend_cli", False)]:
        root.removeHandler(old)  # a previous main() call in the same process (tests, notebooks)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._emu_backend_cli = True
    handler.addFilter(notes)
    root.addHandler(handler)
    root.setLevel(level)
    # the steps of long jobs: a bar in a terminal, else their log lines (batch logs, pipes)
    quiet_batch = verbosity <= 0 and not on_terminal()
    logging.getLogger(PROGRESS_LOGGER).setLevel(logging.INFO if quiet_batch else logging.NOTSET)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emu-backend`` console script; returns the exit code.

    With no subcommand, ``emu-backend`` prints help; ``emu-backend run`` with no other argument runs
    the embedded default (Quijote fiducial, n = 32, seed 42, z = 0 and 1).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, --version, usage errors (argparse exits 2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_ERROR
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_OK
    notes = DeferredNotes(verbose=args.verbose > 0)
    _setup_logging(args.verbose, notes)
    with _sigterm_as_interrupt():
        try:
            try:
                code = args.handler(args)
                notes.print_once()
                return code
            except (OSError, MemoryError, RuntimeError, ValueError) as exc:  # ValueError: h5py's, with an errno
                error = from_system_error(exc)
                if error is None:
                    raise
                raise error from exc
        except EmuBackendError as exc:
            logger.debug("error details", exc_info=True)
            print(f"error: {cli_message(str(exc))}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, _Terminated)
            print("terminated" if terminated else "interrupted", file=sys.stderr)
            return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's cancel or time limit), raised like Ctrl-C so that ``finally`` blocks run:
    output locks are released and partial files closed, ready to resume."""


def _raise_terminated(signum, frame):
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a subcommand runs in the main thread, SIGTERM raises :class:`_Terminated`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
