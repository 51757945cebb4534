"""Observed density meshes for field-level inference: from a snapshot of any backend, or made here.

* :func:`observe`: a snapshot's particles painted on a mesh (real or redshift space), with optional
  Gaussian noise added, as a :class:`~emu_backend.io.density_mesh.DensityMesh`;
* :func:`synthetic_observation`: seeded initial conditions run through a simulator backend
  (``"emulator"`` for the closed loop, ``"jaxpm"`` or ``"pmwd"`` for data from a PM code: model mismatch,
  ``"za"``/``"2lpt"``), observed with noise; the file keeps the true white noise for the report.

The white noise is the ICs' (:func:`emu_backend.ics.white_noise` with the seed) and the linear field the
Eisenstein & Hu P(k) of the cosmology, the convention of :class:`~emu_backend.differentiable.ForwardModel`,
so the emulator backend and the forward model agree on the same noise.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..checks import check_choice, check_int, check_real
from ..cosmology.growth import hubble
from ..cosmology.params import QUIJOTE_FIDUCIAL, Cosmology
from ..datatypes.snapshot import Snapshot
from ..differentiable import DENSITY_WINDOW
from ..errors import InputError
from ..ics import InitialConditions, white_noise
from ..io.density_mesh import DensityMesh
from ..mesh.paint import check_window
from ..simulator import simulate

__all__ = ["observe", "synthetic_observation"]


def observe(snapshot: Snapshot, n_mesh: int, noise_sigma: float, *, seed: int | None = None,
            window: str = DENSITY_WINDOW, los: int | None = None, add_noise: bool = True,
            initial_noise=None) -> DensityMesh:
    """A snapshot's overdensity on an ``n_mesh^3`` mesh, with Gaussian noise of ``noise_sigma`` per voxel.

    Parameters
    ----------
    snapshot : Snapshot
    n_mesh : int
        Mesh cells per side.
    noise_sigma : float
        Noise standard deviation per voxel (recorded in the result; added when ``add_noise``).
    seed : int, optional
        Seed of the added noise (required with ``add_noise``).
    window : {"tsc", "cic", "ngp"}
        Mass assignment (default TSC, the forward model's: model and data must paint alike).
    los : {0, 1, 2}, optional
        Redshift space along this axis (``s = x + v_los / (a H)``); None: real space.
    add_noise : bool
        Add the noise (synthetic data) or only record its level (data that already carries it).
    initial_noise : array (N, N, N), optional
        The true white noise, kept in the result.
    """
    if not isinstance(snapshot, Snapshot):
        raise InputError(f"snapshot must be a Snapshot, got {type(snapshot).__name__}")
    n_mesh = check_int(n_mesh, "n_mesh", 2)
    sigma = check_real(noise_sigma, "noise_sigma", 0.0, lo_open=True)
    window = check_window(window)
    if los is not None:
        los = check_choice(los, "los", (0, 1, 2))
        a = 1.0 / (1.0 + snapshot.z)
        shift = snapshot.velocities[:, los] / (a * float(hubble(snapshot.z, snapshot.cosmology.omega_m)))
        pos = snapshot.positions.astype(np.float64).copy()
        pos[:, los] = np.mod(pos[:, los] + shift, snapshot.box_size)
        snapshot = dataclasses.replace(snapshot, positions=pos.astype(snapshot.positions.dtype))
    delta = snapshot.density(n_mesh, window=window).astype(np.float64)
    if add_noise:
        if seed is None:
            raise InputError("observe: pass seed=... for the added noise (or add_noise=False)")
        delta = delta + sigma * np.random.default_rng(check_int(seed, "seed", 0)).normal(size=delta.shape)
    meta = {"source": "observe", "snapshot": snapshot.meta, "window": window, "los": los, "noise_seed": seed,
            "noise_added": bool(add_noise)}
    return DensityMesh(delta, snapshot.box_size, snapshot.z, snapshot.cosmology, noise_sigma=sigma,
                       initial_noise=initial_noise, meta=meta)


def synthetic_observation(grid: int, z: float, noise_sigma: float, *, seed: int, backend: str = "emulator",
                          box_size: float | None = None, cosmology: Cosmology = QUIJOTE_FIDUCIAL,
                          n_mesh: int | None = None, window: str = DENSITY_WINDOW, los: int | None = None,
                          noise_seed: int | None = None, **backend_options) -> DensityMesh:
    """Seeded ICs -> ``backend`` -> density mesh with noise, keeping the true white noise.

    Parameters
    ----------
    grid : int
        Particles per side.
    z : float
        Redshift of the observation.
    noise_sigma : float
        Noise per voxel.
    seed : int
        White-noise seed of the ICs.
    backend : str
        A :func:`~emu_backend.simulator.simulate` backend: ``"emulator"`` (closed loop), ``"jaxpm"``,
        ``"pmwd"`` (a PM code: model mismatch), ``"za"``, ``"2lpt"``.
    box_size : float, optional
        Box side [Mpc/h] (default the emulator's cell, ``1000 grid / 512``).
    cosmology : Cosmology
        Must carry sigma8 (the linear P(k) is normalised by it).
    n_mesh : int, optional
        Mesh of the observation (default ``grid``).
    window, los
        As :func:`observe`.
    noise_seed : int, optional
        Seed of the observation noise (default ``seed + 1``).
    **backend_options
        Passed to the backend (``weights=``, ``mesh_factor=``, ...).

    Returns
    -------
    DensityMesh
        The noisy overdensity (n_mesh, n_mesh, n_mesh), with ``initial_noise`` the true white noise
        (grid, grid, grid) and ``meta`` recording ``source`` ("synthetic_observation"), ``backend`` (the
        simulator's name: "emulator" for the closed loop, "pmwd" or "jaxpm" for PM data), ``ics_seed``,
        ``noise_seed`` and the snapshot's provenance under ``snapshot``.
    """
    grid = check_int(grid, "grid", 8)
    if cosmology.sigma8 is None:
        raise InputError(f"cosmology {cosmology.name!r} has no sigma8; the linear P(k) is normalised by it")
    ics = InitialConditions.from_noise(grid, box_size, cosmology, seed)
    snap = simulate(ics, cosmology, z=[float(z)], backend=backend, **backend_options)[0]
    obs = observe(snap, grid if n_mesh is None else n_mesh, noise_sigma,
                  seed=(seed + 1) if noise_seed is None else noise_seed, window=window, los=los,
                  initial_noise=white_noise(grid, seed).astype(np.float64))
    # provenance at the top level of meta: which simulator made the data (the closed loop or a model
    # mismatch) and from which white-noise seed; the snapshot's own meta stays under "snapshot"
    meta = {**obs.meta, "source": "synthetic_observation", "backend": snap.meta.get("backend"), "ics_seed": seed}
    return dataclasses.replace(obs, meta=meta)

