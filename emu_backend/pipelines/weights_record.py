"""What a job records about the emulator's weights (``run.json``, the run's figure, the CLI summary).

The shipped weights are described once, in ``emu_backend/data/default_zdep.json``
(:func:`~emu_backend.inference.default.default_weights_card`); this module only quotes it.

Examples
--------
>>> weights_record("my.emu", "0123456789abcdef", False)["label"]
'my.emu (sha256 0123456789ab...)'
"""

from __future__ import annotations

from ..inference.default import default_weights_card

__all__ = ["weights_record", "CHECKSUM_PREFIX"]

#: Hex digits of the weights' checksum shown in labels.
CHECKSUM_PREFIX = 12


def weights_record(weights, checksum: str | None, untrained: bool) -> dict:
    """The emulator's weights as recorded by a job.

    Parameters
    ----------
    weights : str or None
        The weights file the user passed; None: the shipped default.
    checksum : str or None
        The checksum the loaded weights carry.
    untrained : bool
        The random stand-in of a build without shipped weights.

    Returns
    -------
    dict
        ``label`` (a path, or ``"demo weights, see docs/shipped_weights.md"``, with the checksum prefix),
        ``path`` (None for the shipped weights), ``checksum``; for the shipped weights also ``summary``,
        ``doc`` and ``accuracy`` (their measured errors against held-out PM runs, by redshift).
    """
    prefix = f" (sha256 {checksum[:CHECKSUM_PREFIX]}...)" if checksum else ""
    if untrained:
        return {"label": "UNTRAINED random weights, not physical", "path": None, "checksum": checksum}
    if weights is not None:
        return {"label": f"{weights}{prefix}", "path": str(weights), "checksum": checksum}
    card = default_weights_card() or {}
    doc = card.get("doc", "docs/shipped_weights.md")
    return {"label": f"{card.get('label', 'shipped weights')}, see {doc}{prefix}", "path": None, "checksum": checksum,
            "summary": card.get("summary"), "doc": doc, "accuracy": card.get("accuracy")}
