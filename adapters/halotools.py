"""halotools adapter: our FoF halo catalogs as ``halotools.sim_manager.UserSuppliedHaloCatalog``.

With it a user populates halotools' HOD models (e.g. ``PrebuiltHodModelFactory("zheng07")``) on
emulated halos and measures mock observables. halotools (extra ``halotools``) is imported only
when a function runs; importing this module never imports it.

Columns of the halo table (halotools' conventions: Mpc/h, km/s, Msun/h, ``halo_`` prefix)

=================  ===========================================================================
``halo_id``        ``0 .. N_h - 1`` in our catalog's order (mass, descending)
``halo_x/y/z``     FoF centre of mass [Mpc/h] in ``[0, Lbox)`` (our ``position``, unchanged)
``halo_vx/vy/vz``  mean peculiar velocity of the members [km/s] (our ``velocity``, unchanged)
``halo_mvir``      the FoF mass [Msun/h] (``n_particles * particle_mass``), under the key that
                   halotools' models read by default (``prim_haloprop_key="halo_mvir"``); FoF with
                   b = 0.2 approximates an overdensity of ~180 times the mean, close to but not the
                   virial definition
``halo_mfof``      the same FoF mass, under its own name
``halo_npart``     member count
``halo_rvir``      radius [Mpc/h] enclosing ``halo_mvir`` at the virial overdensity (halotools'
                   ``halo_mass_to_halo_radius(..., mdef="vir")`` for the astropy cosmology of
                   :func:`astropy_cosmology`); HOD satellite profiles need it
``halo_upid``      -1 (every FoF group is a host: FoF finds no subhalos)
``halo_hostid``    ``halo_id``
``halo_nfw_conc``  NFW concentration: by default halotools' Dutton & Maccio (2014) c(M, z) of
                   ``halo_mvir`` (the key halotools' NFW satellite profiles read), or given values
=================  ===========================================================================

Metadata: ``Lbox`` [Mpc/h], ``particle_mass`` [Msun/h], ``redshift``, ``simname``, plus
``linking_length_b`` and ``min_particles`` so that :func:`from_halotools` rebuilds our catalog.
A particle subsample (``UserSuppliedPtclCatalog``: x, y, z [Mpc/h], vx, vy, vz [km/s],
``ptcl_ids`` our Lagrangian ids) can be attached for halotools' galaxy-matter statistics.
A runnable example is in ``docs/adapters/halotools.md``.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ..checks import check_int, check_real
from ..cosmology.params import Cosmology
from ..datatypes.halos import HaloCatalog
from ..datatypes.snapshot import Snapshot
from ..errors import ComputationError, InputError, require
from ..validation.halos import find_halos_in_snapshot

__all__ = ["to_halotools", "from_halotools", "halo_catalog_from_snapshot", "particle_catalog", "astropy_cosmology"]

logger = logging.getLogger(__name__)

_EXTRA = "halotools"
#: Fewest particles halotools accepts in a ``UserSuppliedPtclCatalog``.
_MIN_PTCL = 10_000


def _sim_manager():
    require("halotools", _EXTRA)
    return require("halotools.sim_manager", _EXTRA)


def _halo_catalog_type():

    return HaloCatalog


def astropy_cosmology(cosmology: Cosmology):
    """``astropy.cosmology.FlatLambdaCDM(H0=100 h, Om0=omega_m, Ob0=omega_b)`` (no radiation, like ours).

    halotools' cosmology-dependent functions (halo radii, concentrations) take an astropy cosmology.
    """
    if not isinstance(cosmology, Cosmology):
        raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
    flat = require("astropy.cosmology", _EXTRA).FlatLambdaCDM
    return flat(H0=100.0 * cosmology.h, Om0=cosmology.omega_m, Ob0=cosmology.omega_b, Tcmb0=0.0,
                name=cosmology.name)


def _redshift(catalog, redshift):
    if redshift is None:
        if catalog.a is None:
            raise InputError("the halo catalog has no scale factor a; pass redshift=")
        return 1.0 / catalog.a - 1.0
    return check_real(redshift, "redshift", -1.0, 1e3, lo_open=True, hi_open=True)


def particle_catalog(snapshot: Snapshot, n_particles: int | None = None, *, seed: int = 0):
    """A ``UserSuppliedPtclCatalog`` of a random subsample of a snapshot's particles.

    Parameters
    ----------
    snapshot : Snapshot
    n_particles : int, optional
        Subsample size, in [10000, N] (halotools refuses fewer than 1e4 particles; default: all
        particles); drawn without replacement with ``np.random.default_rng(seed)``, kept in id order.
    seed : int
        Seed of the subsample.

    Returns
    -------
    halotools.sim_manager.UserSuppliedPtclCatalog
        x, y, z [Mpc/h], vx, vy, vz [km/s], ``ptcl_ids`` (our Lagrangian ids); metadata Lbox,
        particle_mass [Msun/h] (of one simulation particle) and redshift.
    """
    if not isinstance(snapshot, Snapshot):
        raise InputError(f"snapshot must be a Snapshot, got {type(snapshot).__name__}")
    n_all = snapshot.n_particles
    n_sub = n_all if n_particles is None else n_particles
    if n_all < _MIN_PTCL:
        raise InputError(f"halotools needs at least {_MIN_PTCL} particles in a particle catalog; the snapshot "
                         f"has {n_all}")
    n_sub = check_int(n_sub, "n_particles", _MIN_PTCL, n_all)
    seed = check_int(seed, "seed", 0)
    keep = np.sort(np.random.default_rng(seed).choice(n_all, size=n_sub, replace=False))
    pos = np.asarray(snapshot.positions[keep], dtype=np.float64)
    vel = np.asarray(snapshot.velocities[keep], dtype=np.float64)
    sm = _sim_manager()
    try:
        return sm.UserSuppliedPtclCatalog(
            x=pos[:, 0], y=pos[:, 1], z=pos[:, 2], vx=vel[:, 0], vy=vel[:, 1], vz=vel[:, 2],
            ptcl_ids=np.asarray(snapshot.ids[keep], dtype=np.int64), Lbox=snapshot.box_size,
            particle_mass=snapshot.particle_mass, redshift=snapshot.z)
    except Exception as exc:
        raise ComputationError(f"halotools refused the particle catalog: {exc}") from exc


def to_halotools(catalog, cosmology: Cosmology, *, redshift: float | None = None, concentration="dutton_maccio14",
                 particles=None, simname: str = "emu_backend"):
    """Our :class:`~emu_backend.validation.halos.HaloCatalog` as a halotools ``UserSuppliedHaloCatalog``.

    Parameters
    ----------
    catalog : HaloCatalog
        FoF halos (``validation.halos.find_halos_in_snapshot``): mass [Msun/h], position [Mpc/h],
        velocity [km/s].
    cosmology : Cosmology
        For ``halo_rvir`` (virial radius of the FoF mass, :func:`astropy_cosmology`).
    redshift : float, optional
        Default: from ``catalog.a`` (required when it is None).
    concentration : "dutton_maccio14", array_like of shape (N_h,), or None
        NFW concentrations stored as ``halo_nfw_conc``: halotools' Dutton & Maccio (2014) relation
        of the FoF mass at ``redshift`` (default), given values, or None for no such column.
    particles : UserSuppliedPtclCatalog, optional
        A particle subsample (:func:`particle_catalog`) with the same Lbox.
    simname : str
        halotools' ``simname`` metadata.

    Returns
    -------
    halotools.sim_manager.UserSuppliedHaloCatalog

    Examples
    --------
    >>> halocat = to_halotools(find_halos_in_snapshot(snap), snap.cosmology)  # doctest: +SKIP
    >>> halocat.halo_table["halo_mvir"][:3]  # doctest: +SKIP
    """
    if not isinstance(catalog, _halo_catalog_type()):
        raise InputError(f"catalog must be a HaloCatalog, got {type(catalog).__name__}")
    if not isinstance(cosmology, Cosmology):
        raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
    z = _redshift(catalog, redshift)
    n_h = catalog.n_halos
    if n_h == 0:
        raise InputError("the halo catalog is empty: halotools needs at least one halo")
    sm = _sim_manager()
    mass = np.asarray(catalog.mass, dtype=np.float64)
    try:
        from halotools.empirical_models import halo_mass_to_halo_radius

        rvir = np.asarray(halo_mass_to_halo_radius(mass, astropy_cosmology(cosmology), z, "vir"), dtype=np.float64)
    except Exception as exc:
        raise ComputationError(f"halotools failed to compute virial radii at z = {z}: {exc}") from exc
    ids = np.arange(n_h, dtype=np.int64)
    cols = {"halo_id": ids, "halo_hostid": ids.copy(), "halo_upid": np.full(n_h, -1, dtype=np.int64),
            "halo_mvir": mass, "halo_mfof": mass.copy(), "halo_rvir": rvir,
            "halo_npart": np.asarray(catalog.n_particles, dtype=np.int64)}
    for c, axis in enumerate("xyz"):
        cols[f"halo_{axis}"] = np.asarray(catalog.position[:, c], dtype=np.float64)
        cols[f"halo_v{axis}"] = np.asarray(catalog.velocity[:, c], dtype=np.float64)
    if isinstance(concentration, str):
        if concentration != "dutton_maccio14":
            raise InputError(f"concentration must be 'dutton_maccio14', an array or None, got {concentration!r}")
        from halotools.empirical_models.phase_space_models.analytic_models.satellites.nfw.conc_mass import (
            dutton_maccio14,
        )

        cols["halo_nfw_conc"] = np.asarray(dutton_maccio14(mass, z), dtype=np.float64)
    elif concentration is not None:
        conc = np.asarray(concentration, dtype=np.float64)
        if conc.shape != (n_h,) or not np.all(np.isfinite(conc)) or np.any(conc <= 0):
            raise InputError(f"concentration must be finite, > 0 and of shape ({n_h},), got shape {conc.shape}")
        cols["halo_nfw_conc"] = conc
    extra = {} if particles is None else {"user_supplied_ptclcat": particles}
    try:
        return sm.UserSuppliedHaloCatalog(
            Lbox=catalog.box_size, particle_mass=catalog.particle_mass, redshift=z, simname=simname,
            linking_length_b=catalog.linking_length, min_particles=int(catalog.min_particles), **extra, **cols)
    except Exception as exc:
        raise ComputationError(f"halotools refused the halo catalog: {exc}") from exc


def from_halotools(halocat):
    """A ``UserSuppliedHaloCatalog`` made by :func:`to_halotools` back as our ``HaloCatalog``.

    Needs the columns ``halo_mfof`` (or ``halo_mvir``), ``halo_x/y/z``, ``halo_vx/vy/vz`` and
    ``halo_npart``; ``linking_length_b`` and ``min_particles`` metadata default to 0.2 and 1.
    """
    sm = _sim_manager()
    if not isinstance(halocat, sm.UserSuppliedHaloCatalog):
        raise InputError(f"halocat must be a UserSuppliedHaloCatalog, got {type(halocat).__name__}")
    t = halocat.halo_table
    missing = [k for k in ("halo_x", "halo_y", "halo_z", "halo_vx", "halo_vy", "halo_vz", "halo_npart")
               if k not in t.colnames]
    if missing or not ({"halo_mfof", "halo_mvir"} & set(t.colnames)):
        raise InputError(f"halo table lacks the column(s) {missing or ['halo_mfof or halo_mvir']}")
    lbox = np.atleast_1d(np.asarray(halocat.Lbox, dtype=np.float64))
    if not np.all(lbox == lbox[0]):
        raise InputError(f"only cubic boxes convert to ours, got Lbox = {lbox.tolist()}")
    mass = np.asarray(t["halo_mfof"] if "halo_mfof" in t.colnames else t["halo_mvir"], dtype=np.float64)
    z = float(halocat.redshift)
    return _halo_catalog_type()(
        mass=mass,
        position=np.stack([np.asarray(t[f"halo_{a}"], dtype=np.float64) for a in "xyz"], axis=1),
        velocity=np.stack([np.asarray(t[f"halo_v{a}"], dtype=np.float64) for a in "xyz"], axis=1),
        n_particles=np.asarray(t["halo_npart"], dtype=np.int64), box_size=float(lbox[0]),
        particle_mass=float(halocat.particle_mass), linking_length=float(getattr(halocat, "linking_length_b", 0.2)),
        min_particles=int(getattr(halocat, "min_particles", 1)), a=1.0 / (1.0 + z) if math.isfinite(z) else None)


def halo_catalog_from_snapshot(snapshot: Snapshot, b: float = 0.2, min_particles: int = 20, *,
                               n_ptcl: int | None = None, seed: int = 0, concentration="dutton_maccio14",
                               simname: str = "emu_backend"):
    """FoF halos of a snapshot as a halotools ``UserSuppliedHaloCatalog`` (one call).

    Parameters
    ----------
    snapshot : Snapshot
        Particles [Mpc/h, km/s]; its cosmology and ``z`` are used.
    b, min_particles
        FoF linking length (in mean inter-particle separations) and smallest group kept
        (:func:`emu_backend.validation.halos.find_halos_in_snapshot`).
    n_ptcl : int, optional
        Attach a random subsample of this many particles (:func:`particle_catalog`).
    seed : int
        Seed of the subsample.
    concentration, simname
        As :func:`to_halotools`.

    Returns
    -------
    halotools.sim_manager.UserSuppliedHaloCatalog
    """
    if not isinstance(snapshot, Snapshot):
        raise InputError(f"snapshot must be a Snapshot, got {type(snapshot).__name__}")
    _sim_manager()  # MissingDependencyError before the (slow) halo finding

    catalog = find_halos_in_snapshot(snapshot, b=b, min_particles=min_particles)
    particles = None if n_ptcl is None else particle_catalog(snapshot, n_ptcl, seed=seed)
    logger.info("halotools catalog: %d FoF halos (b=%g, >= %d particles) at z=%.3g", catalog.n_halos, b,
                min_particles, snapshot.z)
    return to_halotools(catalog, snapshot.cosmology, redshift=snapshot.z, concentration=concentration,
                        particles=particles, simname=simname)
