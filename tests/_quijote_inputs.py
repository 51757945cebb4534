"""Quijote files whose particles cannot be placed on the Lagrangian grid, and broken download layouts: rows of
the bad-input table of ``tests/test_bad_inputs.py`` (and so of docs/reliability.md).

The files are an 8^3 download in the real conventions (tests/_quijote_fixtures.py: 2LPTic glass-tile IDs,
Blosc snapshots, FoF tables with member IDs), written once per table run into the table's temporary folder.
"""

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
from _quijote_fixtures import SNAPNUM, build_download

from emu_backend.errors import FileFormatError
from emu_backend.io.quijote import (
    QuijoteSimulation,
    lagrangian_map_from_ics,
    particles_to_snapshot,
    read_fof_groups,
    read_gadget_hdf5_particles,
    read_particles,
)


def _download(folder: Path, name: str = "quijote_download", **kwargs):
    root = Path(folder) / name / "DOWNLOAD"
    marker = root.parent / "written"
    if not marker.exists():
        build_download(root, n=8, **kwargs)
        marker.touch()
    return root


def _sim(folder: Path) -> QuijoteSimulation:
    return QuijoteSimulation.open(_download(folder), 0)


def _foreign_snapshot_ids(folder: Path):
    """The download with snap_004.0.hdf5's IDs moved out of the ICs' range, read through the simulation."""
    root = _download(folder, "foreign_ids")
    path = root / "Snapshots" / "latin_hypercube" / "0" / "snapdir_004" / "snap_004.0.hdf5"
    with h5py.File(path, "r+") as f:
        ids = f["PartType1/ParticleIDs"][...]
        if ids.max() <= 8**3:
            del f["PartType1/ParticleIDs"]
            f["PartType1/ParticleIDs"] = ids + 8**3
    return QuijoteSimulation.open(root, 0).read_snapshot(SNAPNUM)


def _glass(folder: Path):
    raw = read_particles(_sim(folder).ics_prefix)
    glass = np.random.default_rng(0).uniform(0, raw.box_size, raw.positions.shape).astype(np.float32)
    return lagrangian_map_from_ics(replace(raw, positions=glass))


def _late_without_map(folder: Path):
    sim = _sim(folder)
    return particles_to_snapshot(read_gadget_hdf5_particles(sim.snapshot_prefix(SNAPNUM)), sim.cosmology())


def _foreign_member(folder: Path):
    sim = _sim(folder)
    groups = Path(folder) / "foreign_member" / "groups_004"
    if not groups.is_dir():
        groups.mkdir(parents=True)
        src = _download(folder) / "Halos" / "FoF_id" / "latin_hypercube" / "0" / "groups_004"
        for p in src.iterdir():
            data = bytearray(p.read_bytes())
            if p.name == "group_ids_004.0":
                data[28:32] = np.array([99999], "<u4").tobytes()
            (groups / p.name).write_bytes(bytes(data))
    return read_fof_groups(groups, SNAPNUM, a=1.0, lagrangian_map=sim.lagrangian_map())


def _empty(folder: Path) -> str:
    path = Path(folder) / "empty_halos"
    path.mkdir(exist_ok=True)
    return str(path)


def _two_sets(folder: Path) -> str:
    root = _download(folder, "two_sets")
    if not (root / "Snapshots" / "fiducial").is_dir():
        build_download(root, n=8, set_name="fiducial")
    return str(root)


def reliability_cases(case) -> list:
    """Rows of the bad-input table: ``case`` is ``tests/test_bad_inputs.py``'s ``Case``; the calls get its
    ``ctx`` (a temporary ``dir``)."""
    never = ("--candidates", "2lpt", "-o")
    return [
        case("quijote-snapshot-foreign-ids", "reader", "QuijoteSimulation.read_snapshot of a snapshot whose IDs "
             "are not those of the simulation's initial conditions",
             lambda c: _foreign_snapshot_ids(c.dir), FileFormatError,
             r"snap_004\.0\.hdf5.*: \d+ particle IDs \(e\.g\. \d+\) are not IDs of the initial conditions "
             r".*ics\.0.* \(IDs 1\.\.512\): not this simulation's particles"),
        case("quijote-ics-glass", "reader", "lagrangian_map_from_ics of ICs whose particles are a glass, not a "
             "perturbed grid", lambda c: _glass(c.dir), FileFormatError,
             r"ics\.0.*: the particles cannot be placed on the 8\^3 Lagrangian grid: from the positions: \d+ grid "
             r"points get two or more particles and \d+ get none \(not a permutation of the grid\)"),
        case("gadget-late-snapshot-no-map", "API", "particles_to_snapshot of a z = 0 Quijote snapshot without "
             "the ID map of its initial conditions", lambda c: _late_without_map(c.dir), FileFormatError,
             r"snap_004\.0\.hdf5.*cannot be placed on the 8\^3 Lagrangian grid.*no ID map of the simulation's "
             r"initial conditions was given"),
        case("quijote-fof-foreign-member", "reader", "read_fof_groups of member IDs that are not the "
             "simulation's particles", lambda c: _foreign_member(c.dir), FileFormatError,
             r"FoF member IDs .*groups_004': 1 particle IDs \(e\.g\. 99999\) are not IDs of the initial "
             r"conditions"),
        case("cli-validate-halos-missing", "CLI", "validate --against quijote --halos DIR where DIR holds no "
             "groups_004", lambda c: ["validate", "--against", "quijote", str(_download(c.dir)), "--sim", "0",
                                      "--halos", _empty(c.dir), *never, str(c.dir / "never_written")],
             FileFormatError, r"FoF catalogue folder '.*empty_halos/groups_004' does not exist"),
        case("cli-validate-download-two-sets", "CLI", "validate --against quijote DOWNLOAD holding two "
             "simulation sets", lambda c: ["validate", "--against", "quijote", _two_sets(c.dir), "--sim", "0",
                                           *never, str(c.dir / "never_written")],
             FileFormatError, r"download root '.*DOWNLOAD' holds 2 known simulation sets \['fiducial', "
             r"'latin_hypercube'\] under Snapshots/ .*give ROOT as '.*Snapshots/<set>'"),
    ]
