"""Where the files of one Quijote simulation are: the download layout, a set folder, or one simulation folder.

Quijote ships snapshots and halo catalogues in separate trees (docs/quijote.md)::

    DOWNLOAD/Snapshots/<set>/<i>/ICs/ics.<k> | ics.<k>.hdf5    initial conditions (z = 127)
    DOWNLOAD/Snapshots/<set>/<i>/ICs/2LPT.param, Pk_mm_z=0.000.txt
    DOWNLOAD/Snapshots/<set>/<i>/snapdir_XXX/snap_XXX.<k>.hdf5
    DOWNLOAD/Snapshots/<set>/<i>/Cosmo_params.dat             Omega_m Omega_b h n_s sigma_8 [...] (latin hypercubes)
    DOWNLOAD/Halos/FoF_id/<set>/<i>/groups_XXX/group_tab_XXX.<k>, group_ids_XXX.<k>   FoF with member IDs
    DOWNLOAD/Halos/FoF/<set>/<i>/groups_XXX/group_tab_XXX.0                          single-file FoF tables

``ROOT`` may be ``DOWNLOAD`` (with one set under ``Snapshots/``), ``DOWNLOAD/Snapshots/<set>`` or any folder
of numbered simulations (with ``sim``), or one simulation folder (holding ``ICs/``). The halos of
simulation ``<i>`` are found, in this order, in an explicit ``halos`` folder, in the simulation folder
itself (``<i>/groups_XXX``), then in the sibling trees ``Halos/FoF_id``, ``Halos/FoF`` and ``Halos`` of the
download: nothing is copied or linked. This module only resolves paths; :mod:`emu_backend.io.quijote`
reads the files.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..checks import check_int
from ..errors import FileFormatError
from .quijote_params import PK_FILE

__all__ = ["SETS", "LH_FILE", "COSMO_PARAMS_FILE", "HALO_TREES", "QuijoteLayout"]

logger = logging.getLogger(__name__)

#: Simulation sets understood by name -> where their cosmology comes from: ``"latin_hypercube"`` (the
#: parameter table or ``Cosmo_params.dat``) or ``"fiducial"`` (Quijote's fiducial cosmology).
SETS = {"latin_hypercube": "latin_hypercube", "latin_hypercube_HR": "latin_hypercube",
        "fiducial": "fiducial", "fiducial_HR": "fiducial", "fiducial_LR": "fiducial"}
#: The latin-hypercube parameter table (rows ``Omega_m Omega_b h n_s sigma_8``, row i = simulation i).
LH_FILE = "latin_hypercube_params.txt"
#: The parameter file inside each latin-hypercube simulation folder.
COSMO_PARAMS_FILE = "Cosmo_params.dat"
#: Halo trees of a download, searched in this order under ``DOWNLOAD/Halos`` ("" is ``Halos/<set>/<i>``).
HALO_TREES = ("FoF_id", "FoF", "")


def _snapnum(snapnum) -> int:
    return check_int(snapnum, "snapnum", 0, 999)


def _is_simulation(folder: Path) -> bool:
    return (folder / "ICs").is_dir()


@dataclass(frozen=True)
class QuijoteLayout:
    """The files of one Quijote simulation; use :meth:`resolve`.

    Attributes
    ----------
    folder : Path
        The simulation folder (``ICs/``, ``snapdir_XXX/``).
    sim : int or None
        Its index in the set (the folder's name), if numeric.
    set_name : str or None
        The set (a key of :data:`SETS`), when the set folder has that name.
    params_file : Path or None
        ``latin_hypercube_params.txt`` of the set folder, where present.
    download : Path or None
        The download root, when the folder sits in ``DOWNLOAD/Snapshots/<set>/<i>``.
    halos : Path or None
        The halo folder given by the caller (``--halos``), searched before everything else.

    Examples
    --------
    >>> QuijoteLayout.resolve("no/such/download", sim=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    emu_backend.errors.FileFormatError: Quijote simulation folder 'no/such/download' does not exist
    """

    folder: Path
    sim: int | None = None
    set_name: str | None = None
    params_file: Path | None = None
    download: Path | None = None
    halos: Path | None = None

    @classmethod
    def resolve(cls, root, sim: int | None = None, *, halos=None) -> "QuijoteLayout":
        """Find simulation ``sim`` from ``root`` (download root, set folder, or the simulation folder).

        Parameters
        ----------
        root : str or Path
            ``DOWNLOAD``, ``DOWNLOAD/Snapshots/<set>`` (or a folder of numbered simulations), or one
            simulation folder.
        sim : int, optional
            Simulation index; needed unless ``root`` is the simulation folder (then it must be its name).
        halos : str or Path, optional
            A folder holding ``groups_XXX/`` (or a ``groups_XXX`` folder), used instead of the search.

        Raises
        ------
        FileFormatError
            A folder that does not exist, a download with several sets, a missing simulation or ``ICs/``.
        InputError
            A bad ``sim``.
        """
        root = Path(root)
        if sim is not None:
            sim = check_int(sim, "simulation index (--sim)", 0)
        if not root.is_dir():
            raise FileFormatError(f"Quijote simulation folder {str(root)!r} does not exist")
        if _is_simulation(root):
            if sim is not None and root.name != str(sim):
                raise FileFormatError(f"{str(root)!r} is the folder of one simulation ({root.name}), not of "
                                      f"simulation {sim}; give the set folder with --sim, or this folder alone")
            folder, set_dir = root, root.parent
            sim = int(root.name) if root.name.isdigit() else None
        else:
            set_dir = cls._set_folder(root)
            if sim is None:
                raise FileFormatError(f"{str(set_dir)!r} holds a set of simulations; give the simulation index "
                                      f"(--sim N)")
            folder = set_dir / str(sim)
            if not folder.is_dir():
                raise FileFormatError(f"Quijote simulation folder {str(folder)!r} does not exist (looked for "
                                      f"simulation {sim} under {str(root)!r})")
            if not _is_simulation(folder):
                raise FileFormatError(f"{str(folder)!r} has no 'ICs' folder; expected a Quijote simulation folder "
                                      f"(ICs/, snapdir_XXX/)")
        if halos is not None and not Path(halos).is_dir():
            raise FileFormatError(f"halo folder {str(halos)!r} (--halos) does not exist")
        params = set_dir / LH_FILE
        download = set_dir.parent.parent if set_dir.parent.name == "Snapshots" else None
        layout = cls(folder, sim, set_dir.name if set_dir.name in SETS else None,
                     params if params.is_file() else None, download, None if halos is None else Path(halos))
        logger.info("Quijote simulation %s: set %s, download root %s", folder, layout.set_name, download)
        return layout

    @staticmethod
    def _set_folder(root: Path) -> Path:
        """``root`` itself, or the one known set under ``root/Snapshots`` of a download root."""
        snapshots = root / "Snapshots"
        if not snapshots.is_dir():
            return root
        sets = sorted(p.name for p in snapshots.iterdir() if p.is_dir() and p.name in SETS)
        if len(sets) != 1:
            raise FileFormatError(f"download root {str(root)!r} holds {len(sets)} known simulation sets "
                                  f"{sets} under Snapshots/ (known: {sorted(SETS)}); give ROOT as "
                                  f"{str(snapshots / '<set>')!r}")
        return snapshots / sets[0]

    # -- what the set says ------------------------------------------------------------------
    @property
    def kind(self) -> str | None:
        """``"latin_hypercube"``, ``"fiducial"`` or None: where the cosmology comes from (:data:`SETS`)."""
        return SETS.get(self.set_name) if self.set_name else None

    @property
    def cosmo_params_file(self) -> Path | None:
        """``<i>/Cosmo_params.dat`` where present."""
        path = self.folder / COSMO_PARAMS_FILE
        return path if path.is_file() else None

    # -- paths -----------------------------------------------------------------------------
    @property
    def ics_prefix(self) -> Path:
        """``ICs/ics``: resolves ``ics.<k>`` (format 1) or ``ics.<k>.hdf5``."""
        return self.folder / "ICs" / "ics"

    @property
    def power_file(self) -> Path:
        """``ICs/Pk_mm_z=0.000.txt``."""
        return self.folder / "ICs" / PK_FILE

    @property
    def ic_param_file(self) -> Path:
        """``ICs/2LPT.param``."""
        return self.folder / "ICs" / "2LPT.param"

    def snapshot_prefix(self, snapnum: int) -> Path:
        """``snapdir_XXX/snap_XXX``."""
        s = _snapnum(snapnum)
        return self.folder / f"snapdir_{s:03d}" / f"snap_{s:03d}"

    def snapnums(self) -> list[int]:
        """Snapshot numbers with a ``snapdir_XXX`` folder, sorted."""
        found = (re.fullmatch(r"snapdir_(\d{3})", p.name) for p in self.folder.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def halo_folders(self, snapnum: int) -> list[Path]:
        """The candidate ``groups_XXX`` folders of ``snapnum``, in search order (existing or not)."""
        name = f"groups_{_snapnum(snapnum):03d}"
        if self.halos is not None:
            return [self.halos if self.halos.name == name else self.halos / name]
        found = [self.folder / name]
        if self.download is not None and self.set_name is not None:
            for tree in HALO_TREES:
                found.append(self.download / "Halos" / tree / self.set_name / self.folder.name / name)
        return found

    def groups_dir(self, snapnum: int) -> Path:
        """The first candidate folder holding ``group_tab_XXX.0``; the first candidate when none does."""
        s = _snapnum(snapnum)
        folders = self.halo_folders(s)
        return next((f for f in folders if (f / f"group_tab_{s:03d}.0").is_file()), folders[0])

    def has_halos(self, snapnum: int) -> bool:
        """Whether a FoF catalogue of ``snapnum`` was found; always True with an explicit ``halos`` folder
        (so that a missing catalogue there is reported, not skipped)."""
        s = _snapnum(snapnum)
        return self.halos is not None or (self.groups_dir(s) / f"group_tab_{s:03d}.0").is_file()
