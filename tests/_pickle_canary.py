"""A harmless stand-in for a hostile class, referenced by the malicious pickles of
``tests/test_untrusted_files.py``: importing this module, or instantiating :class:`Canary`, leaves a
trace (a line appended to the file named by ``$EMU_PICKLE_CANARY``, and an environment variable), so a
test can tell whether a loader imported or ran anything a file named.
"""

import os

_FLAG_ENV = "EMU_PICKLE_CANARY"


def _mark(event: str) -> None:
    os.environ[f"{_FLAG_ENV}_{event.upper()}"] = "1"
    if os.environ.get(_FLAG_ENV):
        with open(os.environ[_FLAG_ENV], "a", encoding="utf-8") as fh:
            fh.write(event + "\n")


_mark("imported")


class Canary:
    """Instantiated by a full unpickler from ``_pickle_canary.Canary`` with no arguments."""

    def __init__(self):
        _mark("instantiated")
