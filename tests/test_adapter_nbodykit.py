"""Tests of the nbodykit adapter (emu_backend.adapters.nbodykit) against real nbodykit.

nbodykit needs system MPI/FFTW/GSL and compiled dependencies (pfft-python, pmesh, classylss) that
download sources from GitHub during their build, so CI cannot install it and this file skips
there (as it does wherever nbodykit is not importable). References: the snapshot's own arrays
(columns), our FFT power spectrum of the same CIC mesh (nbodykit's FFTPower), our FoF halo finder
(nbodykit's FOF, the same spherical friends-of-friends), nbodykit's LinearMesh field itself.
Small grids (16^3 particles, 2LPT snapshots): a few seconds plus nbodykit's import.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nbodykit", reason="nbodykit not installed (needs MPI, FFTW, GSL and pfft-python/classylss "
                    "sources; CI cannot build it): see docs/adapters/nbodykit.md")

from emu_backend.cosmology import QUIJOTE_FIDUCIAL as COSMO  # noqa: E402
from emu_backend.errors import InputError  # noqa: E402
from emu_backend.simulator import InitialConditions, simulate  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "adapters" / "nbodykit.md"
N, BOX, SEED = 16, 64.0, 3


@pytest.fixture(scope="module")
def snap():
    ics = InitialConditions.from_noise(N, BOX, COSMO, seed=SEED)
    return simulate(ics, COSMO, z=[0.5], backend="2lpt")[0]


@pytest.fixture(scope="module")
def cat(snap):
    from emu_backend.adapters.nbodykit import catalog_from_snapshot

    return catalog_from_snapshot(snap)


def test_is_a_catalog_source_with_our_columns(cat, snap):
    from nbodykit.base.catalog import CatalogSource

    assert isinstance(cat, CatalogSource) and cat.csize == N**3 and cat.size == N**3  # one rank
    for col in ("Position", "Velocity", "VelocityOffset", "InitialPosition", "ID"):
        assert col in cat.columns
    np.testing.assert_array_equal(cat["ID"].compute(), np.arange(N**3))
    np.testing.assert_array_equal(cat["Position"].compute(), snap.positions.astype("f8"))
    np.testing.assert_array_equal(cat["Velocity"].compute(), snap.velocities.astype("f8"))
    q = np.stack(np.meshgrid(*(np.arange(N) * BOX / N,) * 3, indexing="ij"), -1).reshape(-1, 3)
    np.testing.assert_allclose(cat["InitialPosition"].compute(), q, atol=1e-12)
    np.testing.assert_array_equal(cat.attrs["BoxSize"], [BOX] * 3)
    np.testing.assert_array_equal(cat.attrs["Nmesh"], [N] * 3)
    assert cat.attrs["redshift"] == pytest.approx(0.5) and cat.attrs["seed"] == SEED
    # VelocityOffset = v / (a H(z)): H from nbodykit's (CLASS) cosmology, which adds radiation
    # (Omega_r ~ 1e-4) that we neglect: 1e-3
    cosmo = cat.attrs["cosmo"]
    a = 1 / 1.5
    expected = cat["Velocity"].compute() / (a * 100.0 * cosmo.efunc(0.5))
    np.testing.assert_allclose(cat["VelocityOffset"].compute(), expected, rtol=1e-3)
    assert cosmo.sigma8 == pytest.approx(COSMO.sigma8, rel=1e-3)


def test_fftpower_equals_our_power_spectrum(cat, snap):
    # same CIC painting, no compensation, same bins: nbodykit paints in float32 -> 1e-4
    from nbodykit.lab import FFTPower

    from emu_backend.validation.power import power_spectrum

    kf = 2 * np.pi / BOX
    mesh = cat.to_mesh(resampler="cic", compensated=False, interlaced=False)  # Nmesh, BoxSize from attrs
    r = FFTPower(mesh, mode="1d", dk=kf, kmin=0.5 * kf)
    edges = r.power.edges["k"]
    ours = power_spectrum(snap.density(N, window="cic"), BOX, k_edges=edges)
    theirs = r.power["power"].real
    good = (r.power["modes"] > 0) & (ours.n_modes > 0)
    np.testing.assert_array_equal(r.power["modes"][good], ours.n_modes[good])
    np.testing.assert_allclose(theirs[good], ours.power[good], rtol=1e-4)


def test_fof_and_halocatalog_run_and_match_our_fof(cat, snap):
    from nbodykit.lab import FOF, HaloCatalog

    from emu_backend.validation.halos import find_halos_in_snapshot

    fof = FOF(cat, linking_length=0.2, nmin=5)
    halos = fof.to_halos(snap.particle_mass, cat.attrs["cosmo"], cat.attrs["redshift"])
    assert isinstance(halos, HaloCatalog)
    ours = find_halos_in_snapshot(snap, b=0.2, min_particles=5)
    # the same spherical FoF on the same particles: the same groups
    assert halos.csize == ours.n_halos
    np.testing.assert_allclose(np.sort(halos["Mass"].compute())[::-1], ours.mass, rtol=1e-6)


def test_linear_mesh_in_catalog_out(snap):
    from nbodykit.lab import LinearMesh, cosmology

    from emu_backend.adapters.nbodykit import emulated_catalog, initial_conditions_from_linear_mesh

    plin = cosmology.LinearPower(cosmology.Planck15, redshift=1.0, transfer="EisensteinHu")
    mesh = LinearMesh(plin, BoxSize=BOX, Nmesh=N, seed=42)
    ics = initial_conditions_from_linear_mesh(mesh, COSMO)
    d1 = COSMO.growth_factor(1.0)
    np.testing.assert_allclose(ics.density * d1, mesh.preview() - 1.0, atol=1e-6)
    assert ics.seed == 42
    out = emulated_catalog(mesh, COSMO, 0.0, backend="2lpt")
    assert out.csize == N**3 and out.attrs["redshift"] == 0.0
    with pytest.raises(InputError):
        initial_conditions_from_linear_mesh(np.zeros((4, 4, 4)), COSMO)


_MPI_SCRIPT = """
import numpy as np
from nbodykit import CurrentMPIComm
from emu_backend.adapters.nbodykit import emulated_catalog
from emu_backend.cosmology import QUIJOTE_FIDUCIAL as C
from emu_backend.simulator import InitialConditions
comm = CurrentMPIComm.get()
cat = emulated_catalog(InitialConditions.from_noise(8, 16.0, C, seed=1), C, 0.0, backend="za")
ids = np.concatenate(comm.allgather(cat["ID"].compute()))
assert cat.csize == 512 and cat.size == 512 // comm.size, (cat.size, cat.csize)
assert np.array_equal(ids, np.arange(512))
if comm.rank == 0:
    print("MPI-OK", comm.size)
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun")
def test_each_rank_holds_its_share():
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "2", sys.executable, "-c", _MPI_SCRIPT]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "MPI-OK 2" in out.stdout, out.stderr[-2000:]


def test_doc_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, f"no python block in {DOC}"
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {})
