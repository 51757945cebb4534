"""Progress of the long steps of a job (``run``, ``validate``): a bar on stderr in a terminal, log lines
elsewhere.

Every step logs ``<job>: step i/N <name> ...`` when it starts (DEBUG) and ``... done in S s`` when it
ends (INFO, with the seconds in the record's attribute :data:`STEP_SECONDS`), on the logger
:data:`PROGRESS_LOGGER`. The command line shows the steps that took :data:`LONG_STEP_S` or longer when
stderr is not a terminal (batch logs, pipes); in a notebook, configure logging to see them. With ``progress=True`` and stderr a terminal a tqdm bar
counts the steps instead.

Examples
--------
>>> steps = Steps("demo", ["one", "two"], progress=False)
>>> with steps("one"):
...     pass
>>> with steps("two"):
...     pass
>>> steps.close()
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Sequence

from tqdm.auto import tqdm

__all__ = ["PROGRESS_LOGGER", "STEP_SECONDS", "LONG_STEP_S", "Steps", "TileLog"]

#: Name of the logger of the step lines.
PROGRESS_LOGGER = "emu_backend.progress"
#: Attribute of a step's log record holding its duration [s].
STEP_SECONDS = "step_seconds"
#: Steps at least this long [s] are worth a line in a batch log.
LONG_STEP_S = 2.0

logger = logging.getLogger(PROGRESS_LOGGER)


class Steps:
    """The named steps of one job, reported as they run.

    Parameters
    ----------
    job : str
        Name of the job in the lines and on the bar (``"run"``).
    names : sequence of str
        The steps, in order (their count is the bar's total).
    progress : bool
        Draw a bar when stderr is a terminal.
    """

    def __init__(self, job: str, names: Sequence[str], progress: bool):
        self.job = job
        self.total = len(names)
        self.done = 0
        show = bool(progress) and sys.stderr.isatty()
        self._bar = tqdm(total=self.total, desc=job, unit="step", disable=not show, file=sys.stderr, leave=False)

    @contextlib.contextmanager
    def __call__(self, name: str):
        """A context that reports the step ``name`` starting and ending."""
        t0 = time.perf_counter()
        self._bar.set_postfix_str(name, refresh=True)
        logger.debug("%s: step %d/%d %s ...", self.job, self.done + 1, self.total, name)
        yield
        self.done += 1
        self._bar.update(1)
        seconds = time.perf_counter() - t0
        logger.info("%s: step %d/%d %s done in %.1f s", self.job, self.done, self.total, name, seconds,
                    extra={STEP_SECONDS: seconds})

    def close(self) -> None:
        """Remove the bar."""
        self._bar.close()


class TileLog:
    """An ``on_batch(next_tile, n_tiles)`` callback (the streamed runs of ``predict``) that logs the tiles
    done as steps of :data:`PROGRESS_LOGGER`: one line per :data:`LONG_STEP_S` seconds or more of work
    (so a batch log gets a line every few seconds, not one per tile), and one for the last tile.

    Parameters
    ----------
    job : str
        Name of the job in the lines (``"predict"``).

    Examples
    --------
    >>> log = TileLog("demo")
    >>> for tile in (1, 2, 3):
    ...     log(tile, 3)
    """

    def __init__(self, job: str):
        self.job = job
        self._t0 = self._last = time.perf_counter()
        self._last_tile = 0

    def __call__(self, next_tile: int, n_tiles: int) -> None:
        now = time.perf_counter()
        if next_tile < self._last_tile:  # the next output (one stream per redshift) starts again
            self._t0 = self._last = now
        seconds = now - self._last
        if seconds >= LONG_STEP_S or next_tile >= n_tiles:
            logger.info("%s: tile %d/%d, %.1f s (%.1f s since the last line)", self.job, next_tile, n_tiles,
                        now - self._t0, seconds, extra={STEP_SECONDS: now - self._t0})
            self._last = now
        self._last_tile = next_tile
