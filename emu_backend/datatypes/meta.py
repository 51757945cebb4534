"""Provenance records: JSON (de)serialisation of the ``meta`` dicts that every output carries, and
read-only array views for the frozen data types."""

from __future__ import annotations

import json
from pathlib import PurePath

import numpy as np

from ..cosmology.params import Cosmology
from ..errors import InputError

__all__ = ["meta_to_json", "meta_from_json", "readonly"]


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, Cosmology):
        return obj.to_dict()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable: {obj!r}")


def meta_to_json(meta: dict) -> str:
    """Serialise a provenance dict to JSON (NumPy scalars/arrays and paths converted).

    Raises
    ------
    InputError
        If some value cannot be represented in JSON.
    """
    try:
        return json.dumps(dict(meta), default=_json_default, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise InputError(f"meta must be a JSON-serialisable dict: {exc}") from exc


def meta_from_json(text: str | bytes) -> dict:
    """Inverse of :func:`meta_to_json`; raises ``ValueError`` on malformed text."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def readonly(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array`` (the frozen data types store these)."""
    view = array.view()
    view.flags.writeable = False
    return view
