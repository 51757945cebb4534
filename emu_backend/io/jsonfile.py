"""Reading a small JSON record (a manifest, a part index) with our errors for a missing or broken file."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import FileFormatError, InputError

__all__ = ["read_json"]


def read_json(path, what: str, *, missing=FileFormatError):
    """Parse the JSON file ``path``.

    Parameters
    ----------
    path : str or Path
        The file.
    what : str
        What the file is, for messages (e.g. ``"training-set manifest"``).
    missing : type
        The error raised when ``path`` is not a file: :class:`FileFormatError` when the file belongs to
        a folder we wrote, :class:`InputError` when the caller named it.

    Returns
    -------
    object
        The parsed JSON value (its structure is the caller's to check).

    Raises
    ------
    FileFormatError
        Unreadable or not JSON (and, by default, missing).
    InputError
        Missing, with ``missing=InputError``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.json"
    >>> _ = p.write_text('{"format": 1}')
    >>> read_json(p, "manifest")
    {'format': 1}
    """
    if missing not in (FileFormatError, InputError):
        raise ValueError(f"missing must be FileFormatError or InputError, got {missing!r}")
    path = Path(path)
    if not path.is_file():
        raise missing(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FileFormatError(f"{what} {str(path)!r} is not valid JSON: {exc}") from exc
