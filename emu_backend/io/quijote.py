"""Quijote simulations: cosmology, seed, linear P(k), initial conditions, snapshots and FoF halos.

:class:`QuijoteSimulation` reads one simulation wherever :class:`~emu_backend.io.quijote_layout.QuijoteLayout`
finds its files (the download layout ``DOWNLOAD/Snapshots/<set>/<i>`` with the halos in
``DOWNLOAD/Halos/FoF_id|FoF/<set>/<i>``, a set folder, or one simulation folder; see docs/quijote.md).
Particles are placed on the Lagrangian grid by the simulation's ID map, derived from and verified on its
initial conditions (:func:`~emu_backend.io.gadget_particles.lagrangian_map_from_ics`), never by assuming
that IDs are grid indices. Every reader converts to Mpc/h, km/s, Msun/h; a missing or bad file raises
:class:`~emu_backend.errors.FileFormatError` naming it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cosmology.params import QUIJOTE_FIDUCIAL, Cosmology
from ..datatypes.halos import HaloCatalog
from ..datatypes.snapshot import Snapshot
from ..errors import FileFormatError
from .gadget_hdf5 import read_gadget_hdf5_particles
from .gadget_particles import header_cosmology, lagrangian_map_from_ics, particles_to_snapshot
from .lagrangian_map import LagrangianMap
from .quijote_layout import COSMO_PARAMS_FILE, LH_FILE, QuijoteLayout
from .quijote_params import (
    PK_FILE,
    latin_hypercube_cosmology,
    read_cosmo_params,
    read_latin_hypercube,
    read_linear_power,
    read_seed,
)
from .quijote_particles import linear_displacement_from_ics, read_particles
from .subfind import FoFGroups, read_fof_groups

__all__ = [
    "QUIJOTE_FIDUCIAL",
    "LH_FILE",
    "PK_FILE",
    "read_latin_hypercube",
    "latin_hypercube_cosmology",
    "read_cosmo_params",
    "read_seed",
    "read_linear_power",
    "halo_catalog_from_fof",
    "QuijoteSimulation",
    "read_particles",
    "read_gadget_hdf5_particles",
    "particles_to_snapshot",
    "lagrangian_map_from_ics",
    "LagrangianMap",
    "QuijoteLayout",
    "linear_displacement_from_ics",
    "read_fof_groups",
    "FoFGroups",
]

logger = logging.getLogger(__name__)

def halo_catalog_from_fof(groups: FoFGroups, box_size: float, particle_mass: float, *, linking_length: float = 0.2,
                          n_particles: int | None = None) -> HaloCatalog:
    """A :class:`~emu_backend.datatypes.halos.HaloCatalog` of a FoF catalogue read from files.

    Sorted by mass (descending, file order among equals); positions wrapped into ``[0, box_size)``;
    ``n_particles`` is GroupLen; ``min_particles`` the smallest GroupLen (Quijote kept >= 20).

    Parameters
    ----------
    groups : FoFGroups
        From :func:`~emu_backend.io.subfind.read_fof_groups`.
    box_size : float
        Box side [Mpc/h].
    particle_mass : float
        Mass of one particle [Msun/h] (the snapshot's); GroupMass must be GroupLen times it.
    linking_length : float
        ``b`` of the catalogue.
    n_particles : int, optional
        Particles of the snapshot; with ``groups.member_index`` it gives ``particle_halo`` (the halo of
        each particle in Lagrangian order, -1 outside halos).

    Raises
    ------
    FileFormatError
        GroupMass differs from GroupLen x ``particle_mass`` by more than 1e-3: the catalogue is not of
        this simulation.
    """
    where = groups.files[0] if groups.files else "FoF catalogue"
    if groups.n_groups:
        ratio = groups.mass / (groups.length * float(particle_mass))
        if np.abs(ratio - 1.0).max() > 1e-3:
            raise FileFormatError(
                f"FoF catalogue {where!r}: GroupMass is {ratio.min():.6g}..{ratio.max():.6g} times GroupLen x the "
                f"snapshot's particle mass {particle_mass:.6g} Msun/h: not a catalogue of this simulation")
    order = np.argsort(-groups.mass, kind="stable")  # HaloCatalog convention: by mass, descending
    pos = np.mod(groups.position[order], box_size)
    pos[pos >= box_size] = 0.0
    particle_halo = None
    if n_particles is not None and groups.member_index is not None:
        rank = np.empty(groups.n_groups, np.int64)
        rank[order] = np.arange(groups.n_groups)
        length = groups.length
        start = np.repeat(groups.offset - (np.cumsum(length) - length), length)  # offset minus packed start
        slots = start + np.arange(int(length.sum()))
        particle_halo = np.full(int(n_particles), -1, np.int64)
        particle_halo[groups.member_index[slots]] = np.repeat(rank, length)
    min_particles = int(groups.length.min()) if groups.n_groups else 20
    return HaloCatalog(mass=groups.mass[order], position=pos, velocity=groups.velocity[order],
                       n_particles=groups.length[order], box_size=float(box_size),
                       particle_mass=float(particle_mass), linking_length=float(linking_length),
                       min_particles=min_particles, a=groups.a, particle_halo=particle_halo)


@dataclass(frozen=True)
class QuijoteSimulation:
    """One Quijote simulation and its files; use :meth:`open`.

    Attributes: ``layout`` (:class:`QuijoteLayout`); ``folder``, ``sim``, ``params_file`` are its.

    Examples
    --------
    >>> QuijoteSimulation.open("no/such/root", sim=3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    emu_backend.errors.FileFormatError: Quijote simulation folder 'no/such/root' does not exist
    """

    layout: QuijoteLayout

    @classmethod
    def open(cls, root, sim: int | None = None, *, halos=None) -> "QuijoteSimulation":
        """Locate simulation ``sim`` from ``root`` (see :meth:`QuijoteLayout.resolve`), checking that its
        cosmology can be known (a latin hypercube needs its parameter table or ``Cosmo_params.dat``)."""
        layout = QuijoteLayout.resolve(root, sim, halos=halos)
        lh_set = layout.kind == "latin_hypercube" or (layout.kind is None and layout.folder != Path(root))
        if lh_set and layout.params_file is None and layout.cosmo_params_file is None:
            raise FileFormatError(
                f"latin-hypercube parameter file {str(layout.folder.parent / LH_FILE)!r} does not exist, nor "
                f"{str(layout.folder / COSMO_PARAMS_FILE)!r} (needed for the cosmology of simulation {layout.sim})")
        return cls(layout)

    # -- paths -----------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        """The simulation folder."""
        return self.layout.folder

    @property
    def sim(self) -> int | None:
        """The simulation index (the folder's name), if numeric."""
        return self.layout.sim

    @property
    def params_file(self) -> Path | None:
        """``latin_hypercube_params.txt`` of the set, where present."""
        return self.layout.params_file

    @property
    def ics_prefix(self) -> Path:
        """``ICs/ics``: resolves ``ics.<k>`` (format 1) or ``ics.<k>.hdf5``."""
        return self.layout.ics_prefix

    @property
    def power_file(self) -> Path:
        """``ICs/Pk_mm_z=0.000.txt``."""
        return self.layout.power_file

    def snapshot_prefix(self, snapnum: int) -> Path:
        """``snapdir_XXX/snap_XXX``."""
        return self.layout.snapshot_prefix(snapnum)

    def groups_dir(self, snapnum: int) -> Path:
        """The ``groups_XXX`` folder of the FoF catalogue (see :meth:`QuijoteLayout.groups_dir`)."""
        return self.layout.groups_dir(snapnum)

    def snapnums(self) -> list[int]:
        """Snapshot numbers with a ``snapdir_XXX`` folder, sorted."""
        return self.layout.snapnums()

    def has_halos(self, snapnum: int) -> bool:
        """Whether a FoF catalogue of ``snapnum`` was found (always True with an explicit halo folder)."""
        return self.layout.has_halos(snapnum)

    # -- contents --------------------------------------------------------------------------
    def cosmology(self) -> Cosmology:
        """The simulation's cosmology.

        Fiducial sets: Quijote's fiducial. Latin hypercubes: row ``sim`` of the parameter table, else
        ``Cosmo_params.dat`` (both, where both exist, must agree). Otherwise the IC header (Omega_m, h;
        the other parameters fiducial, with a warning).
        """
        layout = self.layout
        if layout.kind == "fiducial":
            return QUIJOTE_FIDUCIAL
        own = layout.cosmo_params_file
        if layout.params_file is not None and layout.sim is not None:
            cosmo = latin_hypercube_cosmology(layout.params_file, layout.sim)
            if own is not None:
                other = read_cosmo_params(own)
                keys = ("omega_m", "omega_b", "h", "n_s", "sigma8")
                if any(abs(getattr(cosmo, k) / getattr(other, k) - 1) > 1e-4 for k in keys):
                    raise FileFormatError(f"{str(own)!r} and row {layout.sim} of {str(layout.params_file)!r} give "
                                          f"different cosmologies: {other} vs {cosmo}")
            return cosmo
        if own is not None:
            return read_cosmo_params(own, name=f"quijote_lh_{layout.sim}")
        logger.warning("%s: no latin-hypercube parameters; cosmology from the IC header (Omega_m, h only)", self.folder)
        return header_cosmology(read_particles(self.ics_prefix))

    def seed(self) -> int | None:
        """``Seed`` of ``ICs/2LPT.param`` when present, else the simulation index (Quijote LH: seed of i is i)."""
        param = self.layout.ic_param_file
        return read_seed(param) if param.is_file() else self.sim

    def linear_power(self, cosmology: Cosmology | None = None):
        """The tabulated linear P(k) at z = 0, or None when ``ICs/Pk_mm_z=0.000.txt`` is absent."""
        return read_linear_power(self.power_file, cosmology) if self.power_file.is_file() else None

    def read_ics_with_map(self, cosmology: Cosmology | None = None) -> tuple[Snapshot, LagrangianMap]:
        """The initial conditions (z = 127) in Lagrangian order, and the ID map derived from them.

        Returns
        -------
        ics : Snapshot
            Positions [Mpc/h], velocities [km/s] of grid point ``(i, j, k)`` at row ``i n^2 + j n + k``.
        lagrangian_map : LagrangianMap
            For :meth:`read_snapshot` and :meth:`read_halos` of the same simulation.
        """
        cosmo = self.cosmology() if cosmology is None else cosmology
        particles = read_particles(self.ics_prefix)
        lmap = lagrangian_map_from_ics(particles, omega_m=cosmo.omega_m)
        ics = particles_to_snapshot(particles, cosmo, lagrangian_map=lmap, meta={"quijote_sim": self.sim})
        return ics, lmap

    def read_ics(self, cosmology: Cosmology | None = None) -> Snapshot:
        """The initial conditions (z = 127) as a Snapshot in Lagrangian order."""
        return self.read_ics_with_map(cosmology)[0]

    def lagrangian_map(self, cosmology: Cosmology | None = None) -> LagrangianMap:
        """The ID map of this simulation, from its initial conditions (:func:`lagrangian_map_from_ics`)."""
        om = (self.cosmology() if cosmology is None else cosmology).omega_m
        return lagrangian_map_from_ics(read_particles(self.ics_prefix), omega_m=om)

    def read_snapshot(self, snapnum: int, cosmology: Cosmology | None = None, *,
                      lagrangian_map: LagrangianMap | None = None) -> Snapshot:
        """Snapshot ``snapdir_XXX`` in Lagrangian order (redshift from the header).

        Parameters
        ----------
        snapnum : int
            XXX.
        cosmology : Cosmology, optional
            Default :meth:`cosmology`.
        lagrangian_map : LagrangianMap, optional
            This simulation's ID map (from :meth:`read_ics_with_map`); default: derived from the ICs.

        Raises
        ------
        FileFormatError
            Missing or bad files; particle IDs that are not those of the initial conditions.
        """
        cosmo = self.cosmology() if cosmology is None else cosmology
        prefix = self.snapshot_prefix(snapnum)
        if not prefix.parent.is_dir():
            raise FileFormatError(f"snapshot folder {str(prefix.parent)!r} does not exist (available: "
                                  f"{self.snapnums()})")
        particles = read_gadget_hdf5_particles(prefix, lagrangian=True)
        lmap = self.lagrangian_map(cosmo) if lagrangian_map is None else lagrangian_map
        return particles_to_snapshot(particles, cosmo, lagrangian_map=lmap,
                                     meta={"quijote_sim": self.sim, "snapnum": int(snapnum)})

    def read_halos(self, snapnum: int, snapshot: Snapshot, *, lagrangian_map: LagrangianMap | None = None):
        """The FoF halos of ``snapnum`` as a HaloCatalog (box, particle mass and ``a`` from ``snapshot``).

        With ``lagrangian_map`` and a catalogue with member IDs (``FoF_id``), the catalogue's
        ``particle_halo`` gives the halo of each particle of ``snapshot`` (Lagrangian order).
        """
        groups = read_fof_groups(self.groups_dir(snapnum), snapnum, a=snapshot.a, lagrangian_map=lagrangian_map)
        return halo_catalog_from_fof(groups, snapshot.box_size, snapshot.particle_mass,
                                     n_particles=snapshot.n_particles)

    def linear_displacement(self, ics: Snapshot | None = None, *, correct_2lpt: bool = True) -> np.ndarray:
        """Psi1 at z = 0 [Mpc/h], shape (3, n, n, n), from the ICs (:func:`linear_displacement_from_ics`)."""
        return linear_displacement_from_ics(self.read_ics() if ics is None else ics, correct_2lpt=correct_2lpt)
