"""The one call of the simulator interface: ICs + cosmology + output times -> list of snapshots.

Swapping the emulator for ZA, 2LPT or (through the adapters) a PM N-body code is the ``backend``
argument; inputs and outputs do not change.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

from .._version import __version__
from ..checks import check_reals
from ..cosmology.params import Cosmology
from ..datatypes.meta import meta_to_json
from ..datatypes.snapshot import A_MAX, Snapshot
from ..errors import ComputationError, InputError
from ..ics.conditions import InitialConditions
from .backends import Backend, get_backend

__all__ = ["simulate", "output_redshifts", "Z_MAX", "A_MIN"]

logger = logging.getLogger(__name__)

#: Latest output time: redshift 1000 (recombination). The cosmology here is matter + Lambda without
#: radiation, so earlier times are not modelled, and far earlier ones overflow H(z) and the velocities.
Z_MAX = 1000.0
#: Earliest output scale factor, ``1 / (1 + Z_MAX)``.
A_MIN = 1.0 / (1.0 + Z_MAX)


def output_redshifts(z=None, a=None) -> list[float]:
    """Validate output times given as redshifts or scale factors; return redshifts in the given order.

    Parameters
    ----------
    z : float or sequence of float, optional
        Redshifts, each in ``[1/1.5 - 1, Z_MAX] = [-1/3, 1000]`` (``a <= 1.5``).
    a : float or sequence of float, optional
        Scale factors in ``[A_MIN, 1.5] = [1/1001, 1.5]``. Exactly one of ``z`` and ``a``.

    Returns
    -------
    list of float

    Examples
    --------
    >>> output_redshifts(a=[1.0, 0.5])
    [0.0, 1.0]
    """
    if (z is None) == (a is None):
        raise InputError(f"give exactly one of z and a (output redshifts or scale factors), got z={z!r}, a={a!r}")
    if a is not None:
        scale = check_reals(a, "scale factor a", 0.0, A_MAX, lo_open=True, item="output time")
        for v in scale:
            if v < A_MIN:
                raise InputError(f"scale factor a = {v!r} is before the earliest output time a = {A_MIN:.6g} "
                                 f"(z = {Z_MAX:g}; radiation is not modelled)")
        zs = [1.0 / v - 1.0 for v in scale]
    else:
        zs = check_reals(z, "redshift z", item="output time")
        for v in zs:
            if not v >= 1.0 / A_MAX - 1.0:  # a <= A_MAX, stated with a rounded bound
                raise InputError(f"redshift z = {v!r} is outside the allowed range [{1.0 / A_MAX - 1.0:.6g}, inf)")
            if v > Z_MAX:
                raise InputError(f"redshift z = {v!r} is before the earliest output time z = {Z_MAX:g} (radiation "
                                 f"is not modelled)")
    seen = set()
    for v in zs:
        if v in seen:
            raise InputError(f"output time z = {v!r} is requested twice")
        seen.add(v)
    return zs


def simulate(ics: InitialConditions, cosmology: Cosmology, z=None, a=None, backend="emulator",
             *, meta: dict | None = None, **backend_options) -> list[Snapshot]:
    """Evolve initial conditions to the output times with an interchangeable backend.

    Parameters
    ----------
    ics : InitialConditions
        z = 0 linear field of the ``n^3`` particle grid [Mpc/h].
    cosmology : Cosmology
        The cosmology of the run (Omega_m for growth and the emulator's style).
    z : float or sequence of float, optional
        Output redshifts (snapshots come back in this order).
    a : float or sequence of float, optional
        Output scale factors, instead of ``z``.
    backend : str or Backend
        ``"emulator"`` (default), ``"za"``, ``"2lpt"``, a name registered by an adapter, or an instance.
    meta : dict, optional
        Extra JSON-serialisable provenance recorded in every snapshot (e.g. a run config).
    **backend_options
        Passed to the backend's constructor, e.g. ``tile_size=``, ``weights=``,
        ``allow_extrapolation=`` for the emulator.

    Returns
    -------
    list of Snapshot
        One per output time, in the order given. ``meta`` records ``backend``, ``package_version``,
        ``seed``, ``checksum`` (emulator weights, else None), ``cosmology``, ``untrained``, ``ics``,
        ``z`` and ``a``.

    Raises
    ------
    InputError
        Bad ICs, cosmology, output times or backend options.
    DomainError
        The emulator's training domain (Omega_m, z, cell size 1000/512 Mpc/h) is left without
        ``allow_extrapolation=True``.

    Examples
    --------
    >>> from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    >>> ics = InitialConditions.from_noise(8, None, QUIJOTE_FIDUCIAL, seed=1)
    >>> snaps = simulate(ics, QUIJOTE_FIDUCIAL, z=[1.0, 0.0], backend="2lpt")
    >>> [s.z for s in snaps], snaps[0].meta["backend"]
    ([1.0, 0.0], '2lpt')
    """

    if not isinstance(ics, InitialConditions):
        raise InputError(f"ics must be InitialConditions, got {type(ics).__name__}")
    if not isinstance(cosmology, Cosmology):
        raise InputError(f"cosmology must be a Cosmology, got {type(cosmology).__name__}")
    zs = output_redshifts(z, a)
    extra = {} if meta is None else meta
    if not isinstance(extra, dict):
        raise InputError(f"meta must be a dict, got {type(extra).__name__}")
    meta_to_json(extra)
    ics_cosmo = ics.provenance.get("ics_cosmology")
    if ics_cosmo is not None and ics_cosmo != cosmology.to_dict():
        logger.warning("the ICs were made with cosmology %s but the run uses %s", ics_cosmo, cosmology.to_dict())
    impl = get_backend(backend, **backend_options)
    if not isinstance(impl, Backend):  # pragma: no cover - get_backend guarantees it
        raise InputError(f"backend must be a Backend, got {type(impl).__name__}")
    logger.info("simulate: backend %s, n=%d, L=%g Mpc/h, z=%s", impl.name, ics.n, ics.box_size, zs)
    t0 = time.perf_counter()
    snaps = impl.run(ics, cosmology, zs)
    if len(snaps) != len(zs) or not all(isinstance(s, Snapshot) for s in snaps):
        raise ComputationError(f"backend {impl.name!r} returned {len(snaps)} objects for {len(zs)} output times")
    common = {"backend": impl.name, "package_version": __version__, "seed": ics.seed, "checksum": None,
              "untrained": False, "cosmology": cosmology.to_dict(), "ics": ics.describe()}
    out = []
    for snap, zi in zip(snaps, zs):
        if not math.isclose(snap.a, 1.0 / (1.0 + zi), rel_tol=1e-9):
            raise ComputationError(f"backend {impl.name!r} returned a = {snap.a} for z = {zi}")
        snap_meta = {**extra, **common, **snap.meta, "z": zi, "a": 1.0 / (1.0 + zi)}
        out.append(dataclasses.replace(snap, meta=snap_meta))
    logger.info("simulate: %d snapshot(s) with %s in %.1f s", len(out), impl.name, time.perf_counter() - t0)
    return out
