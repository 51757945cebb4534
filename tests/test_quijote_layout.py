"""Quijote's download layout: ROOT as the download root, ``Snapshots/<set>`` or one simulation folder; halos in
the sibling ``Halos/FoF_id`` / ``Halos/FoF`` trees or an explicit folder; the set's cosmology. Nothing is
copied or linked. The download is tests/_quijote_fixtures.py's (16^3, about 0.1 s to write). About 5 s.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("hdf5plugin", reason="hdf5plugin not installed: pip install 'emu_backend[quijote]'")

from _quijote_fixtures import LH_COSMOLOGY, SNAPNUM, build_download  # noqa: E402

from emu_backend.cosmology import QUIJOTE_FIDUCIAL  # noqa: E402
from emu_backend.errors import FileFormatError  # noqa: E402
from emu_backend.io.quijote import QuijoteLayout, QuijoteSimulation  # noqa: E402


@pytest.fixture(scope="module")
def dl(tmp_path_factory):
    return build_download(tmp_path_factory.mktemp("layout") / "DOWNLOAD", n=8)


def _tree(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("where", ["download", "set", "simulation"])
def test_every_root_finds_the_same_simulation_and_its_halos(dl, where):
    root, sim = {"download": (dl.root, 0), "set": (dl.root / "Snapshots" / "latin_hypercube", 0),
                 "simulation": (dl.folder, None)}[where]
    layout = QuijoteLayout.resolve(root, sim)
    assert (layout.folder, layout.sim, layout.set_name, layout.download) == (dl.folder, 0, "latin_hypercube", dl.root)
    assert layout.groups_dir(SNAPNUM) == dl.halos("FoF_id") / "groups_004"  # FoF_id (member IDs) before FoF
    assert layout.halo_folders(SNAPNUM)[1:] == [dl.root / "Halos" / t / "latin_hypercube" / "0" / "groups_004"
                                                for t in ("FoF_id", "FoF", "")]
    cosmo = QuijoteSimulation.open(root, sim).cosmology()  # Cosmo_params.dat of the simulation folder
    assert (cosmo.omega_m, cosmo.omega_b, cosmo.h, cosmo.n_s, cosmo.sigma8) == pytest.approx(
        (LH_COSMOLOGY.omega_m, LH_COSMOLOGY.omega_b, LH_COSMOLOGY.h, LH_COSMOLOGY.n_s, LH_COSMOLOGY.sigma8), rel=1e-12)


def test_halo_trees_explicit_folder_and_nothing_copied(dl, tmp_path):
    before = _tree(dl.root)
    sim = QuijoteSimulation.open(dl.root, 0)
    ics, lmap = sim.read_ics_with_map()
    snap = sim.read_snapshot(SNAPNUM, lagrangian_map=lmap)
    assert sim.read_halos(SNAPNUM, snap, lagrangian_map=lmap).particle_halo is not None
    assert _tree(dl.root) == before  # read in place: no file added, copied, linked or touched
    for halos in (dl.halos("FoF"), dl.halos("FoF") / "groups_004"):  # --halos: the folder, or groups_XXX itself
        explicit = QuijoteSimulation.open(dl.root, 0, halos=halos)
        assert explicit.groups_dir(SNAPNUM) == dl.halos("FoF") / "groups_004"
        assert explicit.read_halos(SNAPNUM, snap).n_halos == len(dl.halo_members)
    empty = tmp_path / "no_halos"
    empty.mkdir()
    explicit = QuijoteSimulation.open(dl.root, 0, halos=empty)
    assert explicit.has_halos(SNAPNUM)  # an explicit folder is read (and reported), never skipped
    with pytest.raises(FileFormatError, match=r"no_halos/groups_004.*does not exist"):
        explicit.read_halos(SNAPNUM, snap)
    with pytest.raises(FileFormatError, match=r"halo folder .*nowhere.* \(--halos\) does not exist"):
        QuijoteSimulation.open(dl.root, 0, halos=tmp_path / "nowhere")
    copy = tmp_path / "copy"
    shutil.copytree(dl.root, copy)
    shutil.rmtree(copy / "Halos" / "FoF_id")
    assert QuijoteLayout.resolve(copy, 0).groups_dir(SNAPNUM) == copy / "Halos" / "FoF" / "latin_hypercube" / "0" / \
        "groups_004"
    shutil.rmtree(copy / "Halos")
    assert not QuijoteSimulation.open(copy, 0).has_halos(SNAPNUM)


def test_fiducial_set_has_the_fiducial_cosmology(tmp_path):
    fid = build_download(tmp_path / "DOWNLOAD", n=8, set_name="fiducial", sim=3, cosmology=QUIJOTE_FIDUCIAL)
    (fid.folder / "Cosmo_params.dat").unlink()  # fiducial folders need no parameter file
    sim = QuijoteSimulation.open(fid.root, 3)
    assert sim.layout.kind == "fiducial" and sim.cosmology() is QUIJOTE_FIDUCIAL
    assert sim.seed() == 5  # ICs/2LPT.param


def test_ambiguous_or_incomplete_roots_are_errors(dl, tmp_path):
    root = tmp_path / "DOWNLOAD"
    build_download(root, n=8)
    build_download(root, n=8, set_name="fiducial", cosmology=QUIJOTE_FIDUCIAL)
    with pytest.raises(FileFormatError, match=r"holds 2 known simulation sets \['fiducial', 'latin_hypercube'\]"):
        QuijoteLayout.resolve(root, 0)
    assert QuijoteLayout.resolve(root / "Snapshots" / "fiducial", 0).set_name == "fiducial"
    with pytest.raises(FileFormatError, match=r"holds a set of simulations; give the simulation index \(--sim N\)"):
        QuijoteLayout.resolve(dl.root / "Snapshots" / "latin_hypercube")
    with pytest.raises(FileFormatError, match=r"is the folder of one simulation \(0\), not of simulation 2"):
        QuijoteLayout.resolve(dl.folder, 2)
    with pytest.raises(FileFormatError, match=r"Quijote simulation folder .*latin_hypercube/7' does not exist"):
        QuijoteLayout.resolve(dl.root, 7)


def test_parameter_table_and_cosmo_params_must_agree(dl, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dl.root, copy)
    table = copy / "Snapshots" / "latin_hypercube" / "latin_hypercube_params.txt"
    row = [LH_COSMOLOGY.omega_m, LH_COSMOLOGY.omega_b, LH_COSMOLOGY.h, LH_COSMOLOGY.n_s, LH_COSMOLOGY.sigma8]
    np.savetxt(table, np.array([row, row]))
    assert QuijoteSimulation.open(copy, 0).cosmology().name == "quijote_lh_0"  # the table's row 0
    np.savetxt(table, np.array([[0.3, 0.05, 0.7, 0.96, 0.8], row]))
    with pytest.raises(FileFormatError, match=r"Cosmo_params\.dat' and row 0 of .*latin_hypercube_params\.txt"):
        QuijoteSimulation.open(copy, 0).cosmology()
    table.unlink()
    (copy / "Snapshots" / "latin_hypercube" / "0" / "Cosmo_params.dat").unlink()
    with pytest.raises(FileFormatError, match=r"latin_hypercube_params\.txt' does not exist, nor .*Cosmo_params\.dat"):
        QuijoteSimulation.open(copy, 0)
