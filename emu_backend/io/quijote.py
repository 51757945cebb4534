"""Quijote simulation folders: cosmology, seed, linear P(k), initial conditions, snapshots and FoF halos.

Layout understood (one latin-hypercube simulation ``i``; see docs/quijote.md)::

    ROOT/latin_hypercube_params.txt       Omega_m Omega_b h n_s sigma_8, row i = simulation i
    ROOT/<i>/ICs/ics.<k> | ics.<k>.hdf5   initial conditions at z = 127 (Gadget format 1 or HDF5)
    ROOT/<i>/ICs/Pk_mm_z=0.000.txt        linear P(k) at z = 0: k [h/Mpc], P [(Mpc/h)^3]   (optional)
    ROOT/<i>/ICs/2LPT.param               2LPTic parameters; its ``Seed`` line        (optional)
    ROOT/<i>/snapdir_XXX/snap_XXX.<k>.hdf5
    ROOT/<i>/groups_XXX/group_tab_XXX.<k>  FoF catalogue                               (optional)

``ROOT`` may also be the simulation folder itself (``ROOT/ICs`` exists); its cosmology is then row
``int(ROOT.name)`` of ``ROOT/../latin_hypercube_params.txt`` when both exist, else the IC header's
Omega0 and HubbleParam. Every reader converts to Mpc/h, km/s, Msun/h; a missing or bad file raises
:class:`~emu_backend.errors.FileFormatError` naming it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checks import check_int
from ..cosmology.linear_power import TabulatedPower
from ..cosmology.params import QUIJOTE_FIDUCIAL, Cosmology
from ..datatypes.halos import HaloCatalog
from ..datatypes.snapshot import Snapshot
from ..errors import FileFormatError, InputError
from .gadget_hdf5 import read_gadget_hdf5_particles
from .gadget_particles import header_cosmology, particles_to_snapshot
from .quijote_particles import linear_displacement_from_ics, read_particles
from .subfind import FoFGroups, read_fof_groups

__all__ = [
    "QUIJOTE_FIDUCIAL",
    "LH_FILE",
    "PK_FILE",
    "read_latin_hypercube",
    "latin_hypercube_cosmology",
    "read_seed",
    "read_linear_power",
    "halo_catalog_from_fof",
    "QuijoteSimulation",
    "read_particles",
    "read_gadget_hdf5_particles",
    "particles_to_snapshot",
    "linear_displacement_from_ics",
    "read_fof_groups",
    "FoFGroups",
]

logger = logging.getLogger(__name__)

LH_FILE = "latin_hypercube_params.txt"
PK_FILE = "Pk_mm_z=0.000.txt"
_LH_COLUMNS = ("omega_m", "omega_b", "h", "n_s", "sigma8")


def read_latin_hypercube(path) -> np.ndarray:
    """The rows of ``latin_hypercube_params.txt``: shape (n_sims, 5), columns Omega_m Omega_b h n_s sigma_8."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"latin-hypercube parameter file {str(path)!r} does not exist")
    try:
        table = np.loadtxt(path, dtype=np.float64, ndmin=2, comments="#")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{str(path)!r}: not numeric text with 5 columns (Omega_m Omega_b h n_s sigma_8): "
                              f"{exc}") from exc
    if table.ndim != 2 or table.shape[1] != 5 or table.shape[0] == 0:
        raise FileFormatError(f"{str(path)!r}: expected rows of 5 columns (Omega_m Omega_b h n_s sigma_8), got "
                              f"shape {table.shape}")
    if not np.all(np.isfinite(table)):
        raise FileFormatError(f"{str(path)!r}: contains non-finite values")
    return table


def latin_hypercube_cosmology(path, sim: int) -> Cosmology:
    """The cosmology of simulation ``sim`` (row ``sim``) of a latin-hypercube parameter file.

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "latin_hypercube_params.txt")
    >>> _ = open(p, "w").write("#Omega_m Omega_b h n_s sigma_8\\n0.1755 0.06681 0.7737 0.8849 0.6641\\n")
    >>> latin_hypercube_cosmology(p, 0).omega_m
    0.1755
    """
    table = read_latin_hypercube(path)
    sim = check_int(sim, f"simulation index into the {table.shape[0]} rows of {str(path)!r}", 0, table.shape[0] - 1)
    row = dict(zip(_LH_COLUMNS, (float(v) for v in table[sim])))
    try:
        return Cosmology(**row, name=f"quijote_lh_{int(sim)}")
    except InputError as exc:
        raise FileFormatError(f"{str(path)!r} row {int(sim)}: {exc}") from exc


def read_seed(param_file) -> int:
    """The ``Seed`` of a 2LPTic / N-GenIC parameter file (``Seed  <int>``)."""
    path = Path(param_file)
    if not path.is_file():
        raise FileFormatError(f"IC parameter file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise FileFormatError(f"{str(path)!r}: cannot be read: {exc}") from exc
    match = re.search(r"^\s*Seed\s+(\d+)", text, flags=re.MULTILINE)
    if match is None:
        raise FileFormatError(f"{str(path)!r}: no 'Seed <integer>' line")
    return int(match.group(1))


def read_linear_power(path, cosmology: Cosmology | None = None):
    """Quijote's ``Pk_mm_z=0.000.txt``: linear matter P(k) at z = 0 as a :class:`TabulatedPower`.

    Columns k [h/Mpc], P(k) [(Mpc/h)^3], read as is (no renormalisation).
    """

    return TabulatedPower.from_file(path, cosmology=cosmology)


def halo_catalog_from_fof(groups: FoFGroups, box_size: float, particle_mass: float, *, linking_length: float = 0.2):
    """A :class:`~emu_backend.validation.halos.HaloCatalog` of a FoF catalogue read from files.

    Sorted by mass (descending); positions wrapped into ``[0, box_size)``; ``n_particles`` is GroupLen;
    ``min_particles`` is the smallest GroupLen (Quijote's FoF kept groups of >= 20 particles).
    """

    order = np.argsort(-groups.mass, kind="stable")  # HaloCatalog convention: by mass, descending
    pos = np.mod(groups.position[order], box_size)
    pos[pos >= box_size] = 0.0
    min_particles = int(groups.length.min()) if groups.n_groups else 20
    return HaloCatalog(mass=groups.mass[order], position=pos, velocity=groups.velocity[order],
                       n_particles=groups.length[order], box_size=float(box_size),
                       particle_mass=float(particle_mass), linking_length=float(linking_length),
                       min_particles=min_particles, a=groups.a)


@dataclass(frozen=True)
class QuijoteSimulation:
    """One Quijote simulation folder and where its files are.

    Use :meth:`open`. Attributes: ``folder`` (the simulation folder), ``sim`` (its latin-hypercube
    index or None), ``params_file`` (``latin_hypercube_params.txt`` or None).

    Examples
    --------
    >>> QuijoteSimulation.open("no/such/root", sim=3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    emu_backend.errors.FileFormatError: Quijote simulation folder 'no/such/root/3' does not exist...
    """

    folder: Path
    sim: int | None = None
    params_file: Path | None = None

    @classmethod
    def open(cls, root, sim: int | None = None) -> "QuijoteSimulation":
        """Locate simulation ``sim`` under ``root`` (or ``root`` itself when ``sim`` is None)."""
        root = Path(root)
        if sim is not None:
            folder = root / str(check_int(sim, "simulation index", 0))
            params = root / LH_FILE
        else:
            folder = root
            params = root.parent / LH_FILE
            sim = int(root.name) if root.name.isdigit() else None
            if sim is None or not params.is_file():
                params, sim = None, None
        if not folder.is_dir():
            raise FileFormatError(f"Quijote simulation folder {str(folder)!r} does not exist"
                                  + (f" (looked for simulation {sim} under {str(root)!r})" if sim is not None else ""))
        if not (folder / "ICs").is_dir():
            raise FileFormatError(f"{str(folder)!r} has no 'ICs' folder; expected a Quijote simulation folder "
                                  f"(ICs/, snapdir_XXX/, groups_XXX/)")
        if params is not None and not params.is_file():
            raise FileFormatError(f"latin-hypercube parameter file {str(params)!r} does not exist (needed for "
                                  f"simulation {sim})")
        return cls(folder, sim, params)

    # -- paths -----------------------------------------------------------------------------
    @property
    def ics_prefix(self) -> Path:
        """``ICs/ics``: resolves ``ics.<k>`` (format 1) or ``ics.<k>.hdf5``."""
        return self.folder / "ICs" / "ics"

    @property
    def power_file(self) -> Path:
        """``ICs/Pk_mm_z=0.000.txt``."""
        return self.folder / "ICs" / PK_FILE

    def snapshot_prefix(self, snapnum: int) -> Path:
        """``snapdir_XXX/snap_XXX``."""
        s = _snapnum(snapnum)
        return self.folder / f"snapdir_{s:03d}" / f"snap_{s:03d}"

    def groups_dir(self, snapnum: int) -> Path:
        """``groups_XXX``."""
        return self.folder / f"groups_{_snapnum(snapnum):03d}"

    def snapnums(self) -> list[int]:
        """Snapshot numbers with a ``snapdir_XXX`` folder, sorted."""
        found = (re.fullmatch(r"snapdir_(\d{3})", p.name) for p in self.folder.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def has_halos(self, snapnum: int) -> bool:
        """Whether ``groups_XXX/group_tab_XXX.0`` exists."""
        s = _snapnum(snapnum)
        return (self.groups_dir(s) / f"group_tab_{s:03d}.0").is_file()

    # -- contents --------------------------------------------------------------------------
    def cosmology(self) -> Cosmology:
        """Latin-hypercube row ``sim``; else the IC header (Omega0, h; other parameters fiducial)."""
        if self.params_file is not None:
            return latin_hypercube_cosmology(self.params_file, self.sim)

        logger.warning("%s: no latin-hypercube parameter file; cosmology from the IC header (Omega_m, h only)",
                       self.folder)
        return header_cosmology(read_particles(self.ics_prefix))

    def seed(self) -> int | None:
        """``Seed`` of ``ICs/2LPT.param`` when present, else the simulation index (Quijote LH: seed of i is i)."""
        param = self.folder / "ICs" / "2LPT.param"
        return read_seed(param) if param.is_file() else self.sim

    def linear_power(self, cosmology: Cosmology | None = None):
        """The tabulated linear P(k) at z = 0, or None when ``ICs/Pk_mm_z=0.000.txt`` is absent."""
        return read_linear_power(self.power_file, cosmology) if self.power_file.is_file() else None

    def read_ics(self, cosmology: Cosmology | None = None) -> Snapshot:
        """The initial conditions (z = 127) as a Snapshot in Lagrangian order."""
        cosmo = self.cosmology() if cosmology is None else cosmology
        return particles_to_snapshot(read_particles(self.ics_prefix), cosmo, meta={"quijote_sim": self.sim})

    def read_snapshot(self, snapnum: int, cosmology: Cosmology | None = None) -> Snapshot:
        """Snapshot ``snapdir_XXX`` as a Snapshot in Lagrangian order (its redshift from the header)."""
        cosmo = self.cosmology() if cosmology is None else cosmology
        prefix = self.snapshot_prefix(snapnum)
        if not prefix.parent.is_dir():
            raise FileFormatError(f"snapshot folder {str(prefix.parent)!r} does not exist (available: "
                                  f"{self.snapnums()})")
        particles = read_gadget_hdf5_particles(prefix)
        return particles_to_snapshot(particles, cosmo, meta={"quijote_sim": self.sim, "snapnum": int(snapnum)})

    def read_halos(self, snapnum: int, snapshot: Snapshot):
        """The FoF halos of ``groups_XXX`` as a HaloCatalog (box, particle mass and ``a`` from ``snapshot``)."""
        groups = read_fof_groups(self.groups_dir(snapnum), snapnum, a=snapshot.a)
        return halo_catalog_from_fof(groups, snapshot.box_size, snapshot.particle_mass)

    def linear_displacement(self, ics: Snapshot | None = None, *, correct_2lpt: bool = True) -> np.ndarray:
        """Psi1 at z = 0 [Mpc/h], shape (3, n, n, n), from the ICs (:func:`linear_displacement_from_ics`)."""
        return linear_displacement_from_ics(self.read_ics() if ics is None else ics, correct_2lpt=correct_2lpt)


def _snapnum(snapnum) -> int:
    return check_int(snapnum, "snapnum", 0, 999)
