"""Tests of the nbodykit adapter (emu_backend.adapters.nbodykit) against real nbodykit.

nbodykit does not install from PyPI alone (system MPI/FFTW/GSL; pfft-python and classylss need
sources their builds fetch from GitHub): ``scripts/install_nbodykit.sh`` installs it. Where
``nbodykit.lab`` (or one of its compiled parts) is not importable this file skips, naming the
import that failed. References: the snapshot's own arrays (columns), our FFT power spectrum of
the same CIC mesh (nbodykit's FFTPower), our FoF halo finder (nbodykit's FOF: the same spherical
friends-of-friends), nbodykit's LinearMesh field itself, and serial results (the 2-rank run).
Small grids (16^3 2LPT and 32^3 emulated particles): ~10 s plus ~15 s for the mpirun test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emu_backend.errors import MissingDependencyError  # noqa: E402

try:
    # through the adapter, which imports nbodykit.lab (pmesh, pfft-python, classylss, kdcount, mpsort, dask)
    # without letting mcfit switch JAX's x64 on for the rest of the test session
    from emu_backend.adapters.nbodykit import _nbodykit

    _nbodykit()
except MissingDependencyError as _exc:
    pytest.skip(f"{_exc}", allow_module_level=True)

from emu_backend.cosmology import QUIJOTE_FIDUCIAL as COSMO  # noqa: E402
from emu_backend.errors import InputError  # noqa: E402
from emu_backend.ics import InitialConditions
from emu_backend.simulator import simulate  # noqa: E402

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


@pytest.fixture(scope="module")
def emu_snap():
    # the default emulator at 32^3 (62.5 Mpc/h): 13 FoF groups of >= 6 particles at z = 0 (2LPT: none)
    return simulate(InitialConditions.from_noise(32, None, COSMO, seed=SEED), COSMO, z=[0.0])[0]


def test_is_a_catalog_source_with_our_columns(cat, snap):
    from nbodykit.base.catalog import CatalogSource

    assert isinstance(cat, CatalogSource) and cat.csize == N**3 and cat.size == N**3  # one rank
    for col in ("Position", "Velocity", "VelocityOffset", "InitialPosition", "ID"):
        assert col in cat.columns
    # columns are the snapshot's arrays, exactly (float64 copies)
    np.testing.assert_array_equal(cat["ID"].compute(), np.arange(N**3))
    np.testing.assert_array_equal(cat["Position"].compute(), snap.positions.astype("f8"))
    np.testing.assert_array_equal(cat["Velocity"].compute(), snap.velocities.astype("f8"))
    q = np.stack(np.meshgrid(*(np.arange(N) * BOX / N,) * 3, indexing="ij"), -1).reshape(-1, 3)
    np.testing.assert_allclose(cat["InitialPosition"].compute(), q, atol=1e-12)  # float64 round-off
    np.testing.assert_array_equal(cat.attrs["BoxSize"], [BOX] * 3)
    np.testing.assert_array_equal(cat.attrs["Nmesh"], [N] * 3)
    assert cat.attrs["redshift"] == pytest.approx(0.5) and cat.attrs["seed"] == SEED
    assert cat.attrs["particle_mass"] == snap.particle_mass
    # VelocityOffset = v / (a H(z)): H from nbodykit's (CLASS) cosmology, which adds radiation
    # (Omega_r ~ 1e-4) that we neglect: 1e-3
    cosmo = cat.attrs["cosmo"]
    a = 1 / 1.5
    expected = cat["Velocity"].compute() / (a * 100.0 * cosmo.efunc(0.5))
    np.testing.assert_allclose(cat["VelocityOffset"].compute(), expected, rtol=1e-3)
    # CLASS matched to our sigma8 by nbodykit's own match(): its sigma8 integral, 1e-3
    assert cosmo.sigma8 == pytest.approx(COSMO.sigma8, rel=1e-3)
    # nbodykit's selection (a view built by nbodykit, not by us) keeps the rows
    sub = cat[cat["ID"] % 7 == 0]
    np.testing.assert_array_equal(sub["Position"].compute(), snap.positions[::7].astype("f8"))
    assert sub.attrs["BoxSize"][0] == BOX


@pytest.mark.parametrize("dtype, rtol", [
    ("f8", 1e-12),  # same CIC weights and FFT, float64: round-off only (measured 2e-16)
    ("f4", 1e-5),   # nbodykit's default float32 painting: ~1e-7 per cell (measured 9e-8)
])
def test_fftpower_equals_our_power_spectrum(cat, snap, dtype, rtol):
    from emu_backend.validation.power import power_spectrum
    from nbodykit.lab import FFTPower

    kf = 2 * np.pi / BOX
    mesh = cat.to_mesh(resampler="cic", compensated=False, interlaced=False, dtype=dtype)  # Nmesh, BoxSize: attrs
    r = FFTPower(mesh, mode="1d", dk=kf, kmin=0.5 * kf)
    edges = r.power.edges["k"]
    ours = power_spectrum(snap.density(N, window="cic"), BOX, k_edges=edges)
    good = r.power["modes"] > 0
    assert good.sum() >= N // 2 - 1  # bins of width k_f up to the Nyquist frequency
    np.testing.assert_array_equal(r.power["modes"], ours.n_modes)  # the same mode counting, bin by bin
    np.testing.assert_allclose(r.power["k"][good], ours.k[good], rtol=rtol)  # mean |k|: nbodykit uses the mesh dtype
    np.testing.assert_allclose(r.power["power"].real[good], ours.power[good], rtol=rtol)


def test_fof_and_halocatalog_match_our_fof(emu_snap):
    from emu_backend.adapters.nbodykit import catalog_from_snapshot
    from emu_backend.validation.halos import find_halos_in_snapshot
    from nbodykit.lab import FOF, HaloCatalog

    cat = catalog_from_snapshot(emu_snap)
    fof = FOF(cat, linking_length=0.2, nmin=5)  # BoxSize, periodicity from attrs
    halos = fof.to_halos(cat.attrs["particle_mass"], cat.attrs["cosmo"], cat.attrs["redshift"])
    assert isinstance(halos, HaloCatalog)
    # nbodykit drops groups of exactly nmin members (`N <= nmin` in fof._assign_labels, although its
    # docstring says "fewer"): its nmin=5 is our min_particles=6
    ours = find_halos_in_snapshot(emu_snap, b=0.2, min_particles=6)
    # the same spherical FoF (b = 0.2 of the mean separation) on the same particles: the same groups;
    # masses are member counts times the particle mass: 1e-12
    assert ours.n_halos >= 10 and halos.csize == ours.n_halos
    np.testing.assert_allclose(np.sort(halos["Mass"].compute())[::-1], ours.mass, rtol=1e-12)
    # HaloCatalog's derived columns (CLASS cosmology, halotools mass definition) evaluate
    assert np.all(halos["Radius"].compute() > 0) and np.all(np.isfinite(halos["Concentration"].compute()))


def test_linear_mesh_in_catalog_out():
    from emu_backend.adapters.nbodykit import emulated_catalog, initial_conditions_from_linear_mesh
    from nbodykit.lab import LinearMesh, cosmology

    plin = cosmology.LinearPower(cosmology.Planck15, redshift=1.0, transfer="EisensteinHu")
    mesh = LinearMesh(plin, BoxSize=BOX, Nmesh=N, seed=42)
    ics = initial_conditions_from_linear_mesh(mesh, COSMO)
    d1 = COSMO.growth_factor(1.0)
    # ours * D(1) / D(0) is nbodykit's field; nbodykit paints in float32: 1e-6 absolute on |delta| < 1
    np.testing.assert_allclose(ics.density * d1, mesh.preview() - 1.0, atol=1e-6)
    assert ics.seed == 42
    out = emulated_catalog(mesh, COSMO, 0.0, backend="2lpt")
    assert out.csize == N**3 and out.attrs["redshift"] == 0.0
    with pytest.raises(InputError):
        initial_conditions_from_linear_mesh(np.zeros((4, 4, 4)), COSMO)
    with pytest.raises(InputError):
        emulated_catalog(ics, COSMO, 0.0, backend="2lpt", Nmesh=0)


_MPI_SCRIPT = """
import numpy as np
from nbodykit import CurrentMPIComm
from nbodykit.lab import FFTPower, FOF
from emu_backend.adapters.nbodykit import emulated_catalog
from emu_backend.cosmology import QUIJOTE_FIDUCIAL as C
from emu_backend.ics import InitialConditions
from emu_backend.simulator import simulate
from emu_backend.validation.halos import find_halos_in_snapshot
from emu_backend.validation.power import power_spectrum
comm = CurrentMPIComm.get()
n, n3 = 32, 32**3
ics = InitialConditions.from_noise(n, None, C, seed=3)
cat = emulated_catalog(ics, C, 0.0)  # the emulator runs on rank 0; each rank keeps its share
ids = np.concatenate(comm.allgather(cat["ID"].compute()))
assert cat.csize == n3 and cat.size == n3 // comm.size, (cat.size, cat.csize)
start = comm.rank * n3 // comm.size
assert np.array_equal(cat["ID"].compute(), np.arange(start, start + n3 // comm.size))
assert np.array_equal(ids, np.arange(n3))
kf = 2 * np.pi / ics.box_size
r = FFTPower(cat.to_mesh(resampler="cic", compensated=False, interlaced=False, dtype="f8"), mode="1d",
             dk=kf, kmin=0.5 * kf)
halos = FOF(cat, linking_length=0.2, nmin=5).to_halos(cat.attrs["particle_mass"], cat.attrs["cosmo"], 0.0)
mass = np.sort(np.concatenate(comm.allgather(halos["Mass"].compute())))[::-1]
if comm.rank == 0:
    snap = simulate(ics, C, z=[0.0])[0]
    ours = power_spectrum(snap.density(n, window="cic"), ics.box_size, k_edges=r.power.edges["k"])
    good = r.power["modes"] > 0
    np.testing.assert_allclose(r.power["power"].real[good], ours.power[good], rtol=1e-10)
    ref = find_halos_in_snapshot(snap, b=0.2, min_particles=6)  # nbodykit's nmin=5 keeps >= 6 members
    assert ref.n_halos >= 10 and len(mass) == ref.n_halos, (len(mass), ref.n_halos)
    np.testing.assert_allclose(mass, ref.mass, rtol=1e-12)
    print("MPI-OK", comm.size, len(mass))
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun (apt: openmpi-bin)")
def test_each_rank_holds_its_share():
    # Two ranks: each holds its contiguous share of the ids; nbodykit's parallel FFTPower and FOF on
    # the distributed catalog equal our serial estimators (power 1e-10: float64 painting, sums reordered
    # across ranks; FoF masses 1e-12: the same member counts).
    # The child gets Python's view of the environment: MPI_Init in this process (nbodykit imports
    # mpi4py) adds OMPI_*/PMIX_* variables at the C level, and an mpirun inheriting them exits 1 silently.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_"))}
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "2", sys.executable, "-c", _MPI_SCRIPT]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0 and "MPI-OK 2" in out.stdout, (out.returncode, out.stdout[-1000:], out.stderr[-3000:])


def test_doc_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, f"no python block in {DOC}"
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {})


def test_import_leaves_jax_x64_alone():
    # mcfit (imported by nbodykit.lab) switches JAX's x64 on process-wide where JAX is installed; the adapter's
    # import restores it. Fresh processes, since this one has nbodykit imported already. The bare import is
    # the reference that shows the check can fail.
    pytest.importorskip("jax", reason="JAX not installed: mcfit leaves the flag alone without it")
    probe = ("import jax; {imp}; "
             "print(bool(jax.enable_x64.get_global()) if hasattr(jax.enable_x64, 'get_global') "
             "else jax.config.jax_enable_x64)")
    bare = subprocess.run([sys.executable, "-c", probe.format(imp="import nbodykit.lab")],
                          capture_output=True, text=True, check=True).stdout.split()[-1]
    ours = subprocess.run([sys.executable, "-c", probe.format(
        imp="from emu_backend.adapters.nbodykit import _nbodykit; _nbodykit()")],
        capture_output=True, text=True, check=True).stdout.split()[-1]
    assert (bare, ours) == ("True", "False")
