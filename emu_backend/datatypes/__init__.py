"""The data types every layer above passes around: particle snapshots, halo catalogues and the
provenance records they carry.

They sit below everything that makes, reads, writes or compares them (ICs, I/O, inference, the
simulator, validation), so the direction of the data shows in the imports.
"""

from .halos import HaloCatalog
from .meta import meta_from_json, meta_to_json
from .snapshot import Snapshot, check_matching_snapshots, lagrangian_grid, wrap_positions

__all__ = [
    "Snapshot",
    "HaloCatalog",
    "check_matching_snapshots",
    "lagrangian_grid",
    "wrap_positions",
    "meta_to_json",
    "meta_from_json",
]
