"""The simulator interface: snapshots of emulated particle boxes."""

from .snapshot import Snapshot

__all__ = ["Snapshot"]
