"""nbodykit adapter: emulated (or any backend's) particles as an nbodykit ``CatalogSource``.

nbodykit (installed by ``scripts/install_nbodykit.sh``: it needs system MPI, FFTW and GSL and does not
build from PyPI alone, see ``docs/adapters/nbodykit.md``) is imported only when a catalog is built;
importing this module never imports it.

The catalog class (:func:`catalog_class`, a real ``nbodykit.base.catalog.CatalogSource`` subclass,
defined on first use) holds on each MPI rank its share of the particles -- the contiguous slice
``[rank N / size, (rank + 1) N / size)`` of the Lagrangian ids -- with the columns

==================  ======================================================================
``Position``        comoving position [Mpc/h] in ``[0, BoxSize)``, float64, shape (N, 3)
``Velocity``        peculiar velocity ``a dx/dt`` [km/s]
``VelocityOffset``  redshift-space displacement ``Velocity / (a H(z))`` [Mpc/h] with
                    ``H = 100 E(z)`` h km/s/Mpc, so ``Position + VelocityOffset * los`` is
                    the redshift-space position
``InitialPosition`` Lagrangian position ``(i, j, k) BoxSize / n`` [Mpc/h]
``ID``              Lagrangian id ``i n^2 + j n + k`` (int64)
==================  ======================================================================

and attrs ``BoxSize`` (3-vector, Mpc/h), ``Nmesh`` (3-vector; default the particle grid),
``redshift``, ``a``, ``Omega_m``, ``seed``, ``particle_mass`` [Msun/h] (for ``FOF.to_halos``),
``cosmo`` (an ``nbodykit.cosmology.Cosmology`` built by
:func:`nbodykit_cosmology`, or None where that fails: it needs classylss) and ``emu_backend_meta``
(the snapshot provenance as JSON). ``to_mesh()``, ``FFTPower``, ``FOF`` and ``HaloCatalog`` read
these with no extra arguments.

:func:`emulated_catalog` runs a backend of our simulator (the emulator by default) from our
:class:`InitialConditions` or from an nbodykit ``LinearMesh`` (its ``1 + delta`` at the redshift of
its ``Plin``, scaled to z = 0 with our growth factor). The backend runs on rank 0 only; its
snapshot is broadcast and each rank keeps its share.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np

from ..checks import check_int
from ..cosmology import growth
from ..cosmology.params import Cosmology
from ..datatypes.meta import meta_to_json
from ..datatypes.snapshot import Snapshot
from ..errors import ComputationError, InputError, MissingDependencyError
from ..ics.conditions import InitialConditions
from ..simulator import simulate
from ._jax_state import restore_jax_x64

__all__ = ["catalog_class", "catalog_from_snapshot", "emulated_catalog", "initial_conditions_from_linear_mesh",
           "nbodykit_cosmology"]

logger = logging.getLogger(__name__)


def _nbodykit():
    """nbodykit, after importing ``nbodykit.lab`` (pmesh, pfft-python, classylss, kdcount, mpsort, dask).

    A partial install fails here, with the module that failed named, rather than inside nbodykit later.
    """
    try:
        # nbodykit.lab imports mcfit, which switches JAX's x64 on for the whole process where JAX is installed
        with restore_jax_x64("nbodykit.lab (via mcfit)"):
            import nbodykit
            import nbodykit.lab  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"nbodykit is not importable ({type(exc).__name__}: {exc}); install it with "
            "scripts/install_nbodykit.sh (needs system MPI, FFTW and GSL), see docs/adapters/nbodykit.md") from exc
    return nbodykit


def nbodykit_cosmology(cosmology: Cosmology):
    """Our flat LambdaCDM as ``nbodykit.cosmology.Cosmology`` (CLASS via classylss), matched in sigma8.

    ``h, Omega0_b, Omega0_cdm = omega_m - omega_b, n_s``, no massive neutrinos (``m_ncdm=[]``);
    CLASS adds photons and massless neutrinos, which we neglect (Omega_r ~ 1e-4). A ``sigma8``
    cosmology is matched with ``.match(sigma8=...)``, an ``A_s`` one passes ``A_s``.
    """
    if not isinstance(cosmology, Cosmology):
        raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
    _nbodykit()
    from nbodykit import cosmology as nbk_cosmo
    kw = {"h": cosmology.h, "Omega0_b": cosmology.omega_b, "Omega0_cdm": cosmology.omega_cdm,
          "n_s": cosmology.n_s, "m_ncdm": []}
    try:
        if cosmology.A_s is not None:
            return nbk_cosmo.Cosmology(A_s=cosmology.A_s, **kw)
        return nbk_cosmo.Cosmology(**kw).match(sigma8=cosmology.sigma8)
    except Exception as exc:
        raise ComputationError(f"nbodykit/classylss could not build the cosmology {cosmology!r}: {exc}") from exc


@functools.lru_cache(maxsize=1)
def catalog_class():
    """The ``CatalogSource`` subclass of this adapter (nbodykit imported on first call)."""
    _nbodykit()
    from nbodykit.base.catalog import CatalogSource, column

    class SnapshotCatalog(CatalogSource):
        """Particles of an emu_backend :class:`Snapshot`, each MPI rank holding its share.

        Build it with :func:`catalog_from_snapshot` or :func:`emulated_catalog`.
        """

        def __repr__(self):
            return f"SnapshotCatalog(size={self.csize}, BoxSize={self.attrs['BoxSize'][0]}, z={self.attrs['redshift']})"

        def __init__(self, pos, vel, ids, attrs, comm):
            self.comm = comm
            self._pos, self._vel, self._ids = pos, vel, ids
            self._size = len(ids)
            self.attrs.update(attrs)
            CatalogSource.__init__(self, comm=comm)

        @column
        def Position(self):
            """Comoving position [Mpc/h]."""
            return self.make_column(self._pos)

        @column
        def Velocity(self):
            """Peculiar velocity [km/s]."""
            return self.make_column(self._vel)

        @column
        def VelocityOffset(self):
            """Redshift-space displacement ``Velocity / (a H)`` [Mpc/h]."""
            return self.make_column(self._vel * self.attrs["rsd_factor"])

        @column
        def InitialPosition(self):
            """Lagrangian position [Mpc/h]."""
            n = int(self.attrs["grid"])
            cell = float(self.attrs["BoxSize"][0]) / n
            q = np.stack([self._ids // (n * n), (self._ids // n) % n, self._ids % n], axis=1)
            return self.make_column(q.astype("f8") * cell)

        @column
        def ID(self):
            """Lagrangian id ``i n^2 + j n + k``."""
            return self.make_column(self._ids)

    return SnapshotCatalog


def _comm(comm):
    if comm is not None:
        return comm
    from nbodykit import CurrentMPIComm

    return CurrentMPIComm.get()


def _check_n_mesh(n_mesh, default):
    return default if n_mesh is None else check_int(n_mesh, "Nmesh", 1, 8192)


def catalog_from_snapshot(snapshot: Snapshot, *, Nmesh: int | None = None, comm=None, seed: int | None = None,
                          cosmo="auto"):
    """An nbodykit ``CatalogSource`` of a snapshot; each rank keeps its contiguous share of the ids.

    Parameters
    ----------
    snapshot : Snapshot
        The same object on every rank (or at least its share of the particles).
    Nmesh : int, optional
        ``attrs["Nmesh"]`` used by ``to_mesh()`` (default: the particle grid ``n``).
    comm : MPI communicator, optional
        Default nbodykit's current communicator.
    seed : int, optional
        Recorded in ``attrs["seed"]`` (default: the snapshot meta's ``seed``).
    cosmo : "auto", nbodykit Cosmology or None
        ``attrs["cosmo"]``: "auto" builds it with :func:`nbodykit_cosmology` (None, with a logged
        warning, where classylss cannot).

    Returns
    -------
    SnapshotCatalog
        Columns ``Position``, ``Velocity``, ``VelocityOffset``, ``InitialPosition``, ``ID``.
    """
    if not isinstance(snapshot, Snapshot):
        raise InputError(f"snapshot must be a Snapshot, got {type(snapshot).__name__}")
    cls = catalog_class()
    comm = _comm(comm)
    n_mesh = _check_n_mesh(Nmesh, snapshot.grid)
    n_all = snapshot.n_particles
    start, stop = comm.rank * n_all // comm.size, (comm.rank + 1) * n_all // comm.size
    order = np.argsort(snapshot.ids, kind="stable")[start:stop]  # this rank's ids, in id order
    pos = np.asarray(snapshot.positions[order], dtype="f8")
    vel = np.asarray(snapshot.velocities[order], dtype="f8")
    ids = np.asarray(snapshot.ids[order], dtype="i8")
    if isinstance(cosmo, str):
        if cosmo != "auto":
            raise InputError(f"cosmo must be 'auto', an nbodykit Cosmology or None, got {cosmo!r}")
        try:
            cosmo = nbodykit_cosmology(snapshot.cosmology)
        except ComputationError as exc:
            logger.warning("attrs['cosmo'] left None: %s", exc)
            cosmo = None
    a, om = snapshot.a, snapshot.cosmology.omega_m
    attrs = {
        "BoxSize": np.full(3, snapshot.box_size), "Nmesh": np.full(3, n_mesh, dtype="i8"), "a": a,
        "redshift": snapshot.z, "Omega_m": om, "grid": snapshot.grid, "cosmo": cosmo,
        "particle_mass": float(snapshot.particle_mass),  # Msun/h
        "seed": seed if seed is not None else snapshot.meta.get("seed"),
        "rsd_factor": 1.0 / (a * float(growth.hubble(snapshot.z, om))),  # H in h km/s/Mpc
        "emu_backend_meta": meta_to_json(snapshot.meta),
    }
    return cls(pos, vel, ids, attrs, comm)


def initial_conditions_from_linear_mesh(mesh, cosmology: Cosmology) -> InitialConditions:
    """Our z = 0 ICs from an nbodykit ``LinearMesh`` (``1 + delta`` at the redshift of its ``Plin``).

    ``delta_0 = (mesh - 1) D(0) / D(z_plin)`` with our growth (:mod:`emu_backend.cosmology.growth`);
    the mesh must be cubic. The full field is gathered on every rank (``mesh.preview()``).
    """
    nbk = _nbodykit()
    from nbodykit.base.mesh import MeshSource

    if not isinstance(mesh, MeshSource):
        raise InputError(f"mesh must be an nbodykit MeshSource (e.g. LinearMesh), got {type(mesh).__name__}")
    box, n_mesh = np.asarray(mesh.attrs["BoxSize"], float), np.asarray(mesh.attrs["Nmesh"], int)
    if not (np.all(box == box[0]) and np.all(n_mesh == n_mesh[0])):
        raise InputError(f"only cubic meshes convert, got BoxSize={box.tolist()}, Nmesh={n_mesh.tolist()}")
    z_lin = float(mesh.attrs.get("plin.redshift", mesh.attrs.get("redshift", 0.0)))
    if not math.isfinite(z_lin) or z_lin <= -1:
        raise InputError(f"the linear mesh's redshift must be finite and > -1, got {z_lin!r}")
    field = np.asarray(mesh.preview(), dtype=np.float64)
    delta0 = (field - 1.0) / float(growth.growth_factor(z_lin, cosmology.omega_m))
    prov = {"source": "nbodykit_linear_mesh", "plin_redshift": z_lin, "nbodykit_version": nbk.__version__}
    seed = mesh.attrs.get("seed")
    return InitialConditions.from_linear_density(delta0, float(box[0]), seed=None if seed is None else int(seed),
                                                 provenance=prov)


def emulated_catalog(linear, cosmology: Cosmology, z: float, *, backend="emulator", Nmesh: int | None = None,
                     comm=None, **backend_options):
    """Run a simulator backend (the emulator by default) and return its particles as a catalog.

    Parameters
    ----------
    linear : InitialConditions or nbodykit LinearMesh
        The linear field (:func:`initial_conditions_from_linear_mesh` converts a mesh).
    cosmology : Cosmology
    z : float
        Output redshift.
    backend : str or Backend
        Any backend of :func:`emu_backend.simulator.simulate` (``"emulator"``, ``"2lpt"``,
        ``"jaxpm"``, ...); run on rank 0 only.
    Nmesh : int, optional
        ``attrs["Nmesh"]`` (default the particle grid).
    comm : MPI communicator, optional
    **backend_options
        Options of the backend.

    Returns
    -------
    SnapshotCatalog
        This rank's share of the particles.
    """

    comm = _comm(comm)
    _check_n_mesh(Nmesh, 1)  # fail before the run
    ics = linear if isinstance(linear, InitialConditions) else initial_conditions_from_linear_mesh(linear, cosmology)
    snap, error = None, None
    if comm.rank == 0:
        try:
            snap = simulate(ics, cosmology, z=[z], backend=backend, **backend_options)[0]
        except Exception as exc:  # re-raised on every rank below
            error = exc
    error = comm.bcast(error, root=0)
    if error is not None:
        raise error
    snap = comm.bcast(snap, root=0)
    return catalog_from_snapshot(snap, Nmesh=Nmesh, comm=comm, seed=ics.seed)
