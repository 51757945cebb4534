"""What the subcommands of ``emu-backend`` share: exit codes, the untrained-weights banner, argument
types and the emulator's flags.

Examples
--------
>>> float_list("0, 0.5 1")
[0.0, 0.5, 1.0]
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence

from ..inference.default import SHIPPED_WEIGHTS_NOTE
from ..pipelines.steps import LONG_STEP_S, PROGRESS_LOGGER, STEP_SECONDS

__all__ = ["EXIT_OK", "EXIT_THRESHOLD_MISSED", "EXIT_ERROR", "EXIT_INTERRUPTED", "BANNER", "float_list",
           "with_banner", "on_terminal", "add_emulator_arguments", "add_memory_argument", "SpelledAs", "key_as_written",
           "DeferredNotes", "cli_message"]

#: Exit status: success; ``validate`` only: a threshold missed; bad input (any package error, usage
#: errors); interrupted (Ctrl-C).
EXIT_OK, EXIT_THRESHOLD_MISSED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

BANNER = "\n".join([
    "!" * 78,
    "!!" + "UNTRAINED EMULATOR WEIGHTS: the default network is RANDOM.".center(74) + "!!",
    "!!" + "These outputs are NOT PHYSICAL. Pass --weights PATH for real ones.".center(74) + "!!",
    "!" * 78,
])


def float_list(text: str) -> list[float]:
    """Argument type: numbers separated by commas or spaces (``"0,1"``, ``"0 1"``)."""
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas or spaces, got {text!r}") from None


def with_banner(lines: Sequence[str], untrained: bool) -> str:
    """The report lines, between two :data:`BANNER` when the emulator ran untrained (random) weights."""
    return "\n".join([BANNER, *lines, BANNER] if untrained else lines)


def on_terminal() -> bool:
    """Whether progress bars should be drawn: stderr is a terminal."""
    return sys.stderr.isatty()


class SpelledAs(argparse.Action):
    """``store`` that also remembers which of the option's names was written (see :func:`key_as_written`),
    so that a value given by an alias (``--tile``) is named that way in error messages."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        spelled = dict(getattr(namespace, "spelled_as", None) or {})
        spelled[self.dest] = option_string
        namespace.spelled_as = spelled


def key_as_written(args: argparse.Namespace, dest: str) -> str:
    """The config key of the flag written for ``dest``: ``--tile`` -> ``"tile"``; ``dest`` if none."""
    option = (getattr(args, "spelled_as", None) or {}).get(dest)
    return option.lstrip("-").replace("-", "_") if option else dest


def add_memory_argument(p, default: bool | None = None) -> None:
    """``--ignore-memory-check`` (dest ``check_memory``, False when given; else ``default``): run although
    the estimated peak memory exceeds the available memory (:mod:`emu_backend.inference.memory`)."""
    p.add_argument("--ignore-memory-check", dest="check_memory", action="store_false", default=default,
                   help="run even when the estimated peak memory exceeds the available memory")


def add_emulator_arguments(p, *, tile_size_default: int | None = None, batch_size_default: int | None = None,
                           device_default: str | None = None, tile_size_help: str | None = None,
                           device_help: str = "torch device, e.g. cpu, cuda (default cpu)",
                           extrapolation_default: bool | None = None) -> None:
    """The emulator's flags, named as the library's arguments (old names kept as aliases).

    ``--weights``, ``--tile-size`` (alias ``--tile``), ``--batch-size`` (alias ``--batch``),
    ``--device`` and ``--allow-extrapolation``; the defaults are the subcommand's (None: taken from
    its config).
    """
    p.add_argument("--weights", metavar="PATH", help="emulator checkpoint (default: shipped weights)")
    p.add_argument("--tile-size", "--tile", dest="tile_size", type=int, default=tile_size_default, metavar="T",
                   action=SpelledAs,
                   help=tile_size_help or "emulator output cells per tile side, a multiple of 8 (default: automatic)")
    p.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=batch_size_default, metavar="B",
                   action=SpelledAs, help=f"tiles per network call (default {batch_size_default or 1})")
    p.add_argument("--device", default=device_default, help=device_help)
    p.add_argument("--allow-extrapolation", dest="allow_extrapolation", action="store_true",
                   default=extrapolation_default,
                   help="let the emulator run outside its training domain (with a warning)")


class DeferredNotes(logging.Filter):
    """A filter for the command line's log handler that holds back the shipped weights' note (logged by
    :func:`~emu_backend.inference.default.default_emulator` each time it loads) so that
    :meth:`print_once` prints it once, after the command's result; a command that fails prints only
    its error. It also keeps the short steps' progress lines (:mod:`emu_backend.pipelines.steps`) out of
    a batch log unless ``verbose``."""

    def __init__(self, verbose: bool = False):
        super().__init__()
        self.notes: list[str] = []
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == PROGRESS_LOGGER and record.levelno == logging.INFO and not self.verbose:
            return getattr(record, STEP_SECONDS, 0.0) >= LONG_STEP_S  # batch logs: the long steps only
        if record.msg is SHIPPED_WEIGHTS_NOTE or record.msg == SHIPPED_WEIGHTS_NOTE:
            text = record.getMessage()
            if text not in self.notes:
                self.notes.append(text)
            return False
        return True

    def print_once(self) -> None:
        """Print the held notes (each once) to stderr and forget them."""
        for text in self.notes:
            print(f"note: {cli_message(text)}", file=sys.stderr)
        self.notes.clear()


#: Python keywords in the library's messages -> the command line's flags (:func:`cli_message`).
_KEYWORD_TO_FLAG = (
    (re.compile(r"\b\w+=\w+ \((--[\w-]+(?: [A-Z]+)?)\)"), r"\1"),  # "overwrite=True (--overwrite)" -> "--overwrite"
    (re.compile(r"\ballow_extrapolation=True\b"), "--allow-extrapolation"),
    (re.compile(r"\boverwrite=True\b"), "--overwrite"),
)


def cli_message(text: str) -> str:
    """A library message as a command-line user reads it: the Python keyword it names
    (``allow_extrapolation=True``, ``overwrite=True``, ``weights=PATH``) becomes the flag.

    Examples
    --------
    >>> cli_message("omega_m = 0.6 is outside the training range [0.1, 0.5] (pass allow_extrapolation=True to run anyway)")
    'omega_m = 0.6 is outside the training range [0.1, 0.5] (pass --allow-extrapolation to run anyway)'
    >>> cli_message("'x.h5' already exists; pass overwrite=True (--overwrite) to replace it")
    "'x.h5' already exists; pass --overwrite to replace it"
    """
    for pattern, flag in _KEYWORD_TO_FLAG:
        text = pattern.sub(flag, text)
    return text
