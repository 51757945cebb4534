"""Halo merger trees from multi-redshift runs (see docs/merger_trees.md).

FoF halos at every output time (:func:`find_output_halos`), linked between output times by shared Lagrangian
particle IDs (:func:`link_halos`, vectorised over a sparse contingency table), written in the consistent-trees
format that ytree loads (:func:`write_consistent_trees`), and summarised as mass accretion histories,
formation redshifts and progenitor counts in bins of final mass (:func:`tree_statistics`).
"""

from .ctrees import TREE_FILE_NAME, load_with_ytree, write_consistent_trees
from .halos import OutputHalos, find_output_halos
from .links import LinkConfig, MergerTrees, link_halos
from .statistics import (
    TreeStatistics,
    compare_statistics,
    formation_redshifts,
    main_branch_masses,
    match_final_halos,
    progenitor_counts,
    tree_statistics,
)

__all__ = [
    "OutputHalos",
    "find_output_halos",
    "LinkConfig",
    "MergerTrees",
    "link_halos",
    "write_consistent_trees",
    "load_with_ytree",
    "TREE_FILE_NAME",
    "TreeStatistics",
    "tree_statistics",
    "compare_statistics",
    "formation_redshifts",
    "main_branch_masses",
    "progenitor_counts",
    "match_final_halos",
]
