"""Test-only writers of a small Quijote-format simulation folder, from an N-body run the tests make themselves.

Nothing here is used by the package: the files follow the Quijote / Gadget / 2LPTic layouts documented
in docs/quijote.md (Gadget format-1 ICs, Blosc-compressed multi-file HDF5 snapshots, Gadget-III FoF
``group_tab`` files, ``latin_hypercube_params.txt``, ``Pk_mm_z=0.000.txt``, ``2LPT.param``), written
from first principles so that the readers are checked against an independent writer, in the file
units (kpc/h, ``u = v / sqrt(a)``, 1e10 Msun/h, 1-based IDs) and in a shuffled particle order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.cosmology.linear_power import EisensteinHuPower, TabulatedPower
from emu_backend.datatypes import Snapshot
from emu_backend.ics import InitialConditions
from emu_backend.ics.lpt import lpt_particles
from emu_backend.io.gadget1 import HEADER_DTYPE
from emu_backend.io.subfind import TAB_HEADER_DTYPE
from emu_backend.simulator import simulate

Z_ICS = 127.0
#: A second latin-hypercube row, to check that row ``sim`` is the one read.
OTHER_ROW = (0.1755, 0.06681, 0.7737, 0.8849, 0.6641)


def _record(fh, payload: bytes, order: str = "<") -> None:
    size = np.array([len(payload)], dtype=order + "u4").tobytes()
    fh.write(size + payload + size)


def write_gadget1(prefix, pos_kpc, vel_u, ids, *, a, box_kpc, omega_m, h, mass_1e10, n_files=1, order="<",
                  long_ids=False, format2=False) -> list[Path]:
    """Gadget format-1 (or 2) binary files ``prefix`` or ``prefix.<i>``: HEAD, POS, VEL, ID blocks."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    n_total = len(ids)
    chunks = np.array_split(np.arange(n_total), n_files)
    paths = [prefix] if n_files == 1 else [prefix.with_name(f"{prefix.name}.{i}") for i in range(n_files)]
    hdt = HEADER_DTYPE if order == "<" else HEADER_DTYPE.newbyteorder(">")
    for p, sel in zip(paths, chunks):
        head = np.zeros(1, dtype=hdt)
        head["npart"][0, 1] = len(sel)
        head["massarr"][0, 1] = mass_1e10
        head["time"] = a
        head["redshift"] = 1.0 / a - 1.0
        head["npart_total"][0, 1] = n_total & 0xFFFFFFFF
        head["npart_total_high"][0, 1] = n_total >> 32
        head["num_files"] = n_files
        head["box_size"] = box_kpc
        head["omega0"] = omega_m
        head["omega_lambda"] = 1.0 - omega_m
        head["hubble_param"] = h
        blocks = [("HEAD", head.tobytes()),
                  ("POS ", np.asarray(pos_kpc[sel], dtype=order + "f4").tobytes()),
                  ("VEL ", np.asarray(vel_u[sel], dtype=order + "f4").tobytes()),
                  ("ID  ", np.asarray(ids[sel], dtype=order + ("u8" if long_ids else "u4")).tobytes())]
        with open(p, "wb") as fh:
            for label, payload in blocks:
                if format2:
                    _record(fh, label.encode() + np.array([len(payload) + 8], order + "i4").tobytes(), order)
                _record(fh, payload, order)
    return paths


def write_gadget_hdf5(prefix, pos_kpc, vel_u, ids, *, a, box_kpc, omega_m, h, mass_1e10, n_files=1,
                      compress=True) -> list[Path]:
    """Quijote-style HDF5 files ``prefix.<i>.hdf5`` (or ``prefix.hdf5``), Blosc-compressed via hdf5plugin."""
    import h5py

    opts = {}
    if compress:
        import hdf5plugin

        opts = dict(hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=hdf5plugin.Blosc.BITSHUFFLE))
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    n_total = len(ids)
    chunks = np.array_split(np.arange(n_total), n_files)
    paths = ([prefix.with_name(prefix.name + ".hdf5")] if n_files == 1
             else [prefix.with_name(f"{prefix.name}.{i}.hdf5") for i in range(n_files)])
    for p, sel in zip(paths, chunks):
        with h5py.File(p, "w") as f:
            hd = f.create_group("Header").attrs
            this = np.zeros(6, np.int32)
            this[1] = len(sel)
            total = np.zeros(6, np.uint32)
            total[1] = n_total
            mass = np.zeros(6)
            mass[1] = mass_1e10
            for key, value in (("Time", a), ("Redshift", 1.0 / a - 1.0), ("BoxSize", box_kpc),
                               ("NumPart_ThisFile", this), ("NumPart_Total", total),
                               ("NumPart_Total_HighWord", np.zeros(6, np.uint32)), ("MassTable", mass),
                               ("NumFilesPerSnapshot", np.int32(n_files)), ("Omega0", omega_m),
                               ("OmegaLambda", 1.0 - omega_m), ("HubbleParam", h), ("Flag_Sfr", np.int32(0))):
                hd[key] = value
            g = f.create_group("PartType1")
            g.create_dataset("Coordinates", data=np.asarray(pos_kpc[sel], np.float32), **opts)
            g.create_dataset("Velocities", data=np.asarray(vel_u[sel], np.float32), **opts)
            g.create_dataset("ParticleIDs", data=np.asarray(ids[sel], np.uint32), **opts)
    return paths


def write_fof_tab(groups_dir, snapnum, *, length, mass_msun_h, pos_mpc_h, vel_km_s, a, n_files=1) -> list[Path]:
    """Gadget-III ``group_tab_XXX.<i>`` files (Pylians ``readfof`` layout, 84 bytes per group)."""
    groups_dir = Path(groups_dir)
    groups_dir.mkdir(parents=True, exist_ok=True)
    n = len(length)
    chunks = np.array_split(np.arange(n), n_files)
    offsets = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int32)
    paths = []
    for i, sel in enumerate(chunks):
        head = np.zeros(1, TAB_HEADER_DTYPE)
        head["n_groups"], head["tot_n_groups"] = len(sel), n
        head["n_ids"], head["tot_n_ids"], head["n_files"] = int(np.sum(length[sel])), int(np.sum(length)), n_files
        len_type = np.zeros((len(sel), 6), np.int32)
        len_type[:, 1] = length[sel]
        mass_type = np.zeros((len(sel), 6), np.float32)
        mass_type[:, 1] = mass_msun_h[sel] / 1e10
        p = groups_dir / f"group_tab_{snapnum:03d}.{i}"
        with open(p, "wb") as fh:
            for arr in (head, np.asarray(length[sel], np.int32), offsets[sel],
                        np.asarray(mass_msun_h[sel] / 1e10, np.float32),
                        np.asarray(pos_mpc_h[sel] * 1e3, np.float32), np.asarray(vel_km_s[sel] * a, np.float32),
                        len_type, mass_type):
                fh.write(arr.tobytes())
        paths.append(p)
    return paths


@dataclass
class QuijoteFixture:
    """What :func:`build_quijote_dir` wrote and the in-memory truth it was written from."""

    root: Path
    sim: int
    snapnum: int
    cosmology: object
    ics: InitialConditions
    ics_snapshot: Snapshot  # 2LPT particles at z = 127, exact (float64) before writing
    truth: Snapshot  # the JaxPM z = 0 snapshot written to snapdir_XXX
    halos: object  # HaloCatalog written to groups_XXX, or None
    seed: int

    @property
    def folder(self) -> Path:
        return self.root / str(self.sim)


def _shuffled(rng, n_part):
    return rng.permutation(n_part)


def build_quijote_dir(root, *, n=32, seed=11, sim=0, snapnum=4, mesh_factor=1, cosmology=QUIJOTE_FIDUCIAL,
                      ic_format="gadget1", n_files=2, truth=None, halos="auto", compress=True) -> QuijoteFixture:
    """A Quijote latin-hypercube folder ``root`` with simulation ``sim`` built from a JaxPM run.

    ``truth`` (a z = 0 Snapshot from the same ICs) may be given to skip the N-body run; ``halos`` is
    "auto" (FoF with the validation suite when available), None, or a HaloCatalog.
    """
    root = Path(root)
    folder = root / str(sim)
    rng = np.random.default_rng(seed + 1000)
    box = 1000.0 * n / 512.0
    # linear power table and the ICs made from it
    k = np.logspace(-4, 2, 300)
    p_lin = EisensteinHuPower(cosmology)(k)
    power = TabulatedPower(k, p_lin)
    ics = InitialConditions.from_noise(n, box, cosmology, seed=seed, power=power)
    (folder / "ICs").mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "ICs" / "Pk_mm_z=0.000.txt", np.stack([k, p_lin], axis=1))
    (folder / "ICs" / "2LPT.param").write_text(f"Nmesh {n}\nNsample {n}\nBox {box * 1e3}\nSeed {seed}\n")
    rows = [OTHER_ROW] * (sim + 2)
    rows[sim] = (cosmology.omega_m, cosmology.omega_b, cosmology.h, cosmology.n_s, cosmology.sigma8)
    np.savetxt(root / "latin_hypercube_params.txt", np.array(rows), header="Omega_m Omega_b h n_s sigma_8")

    # 2LPT initial conditions at z = 127 (as 2LPTic makes them)
    a_i = 1.0 / (1.0 + Z_ICS)
    pos, vel = lpt_particles(ics.displacement, box, cosmology, Z_ICS, order=2, dtype=np.float64)
    pos_i, vel_i = pos.reshape(3, -1).T, vel.reshape(3, -1).T
    ids0 = np.arange(n**3)
    ics_snapshot = Snapshot(pos_i, vel_i, ids0, a_i, box, n, cosmology)
    mass = cosmology.particle_mass(box, n) / 1e10
    common = dict(box_kpc=box * 1e3, omega_m=cosmology.omega_m, h=cosmology.h, mass_1e10=mass, n_files=n_files)
    order = _shuffled(rng, n**3)
    args = (pos_i[order] * 1e3, vel_i[order] / math.sqrt(a_i), ids0[order] + 1)
    if ic_format == "gadget1":
        write_gadget1(folder / "ICs" / "ics", *args, a=a_i, **common)
    else:
        write_gadget_hdf5(folder / "ICs" / "ics", *args, a=a_i, compress=False, **common)

    # the N-body snapshot
    if truth == "2lpt":  # no N-body run: a 2LPT snapshot stands in (reader tests that need no JaxPM)
        truth = simulate(ics, cosmology, z=0.0, backend="2lpt")[0]
    elif truth is None:
        truth = simulate(ics, cosmology, z=0.0, backend="jaxpm", mesh_factor=mesh_factor, rtol=1e-3, atol=1e-3)[0]
    order = _shuffled(rng, n**3)
    a = truth.a
    write_gadget_hdf5(folder / f"snapdir_{snapnum:03d}" / f"snap_{snapnum:03d}",
                      np.asarray(truth.positions, np.float64)[order] * 1e3,
                      np.asarray(truth.velocities, np.float64)[order] / math.sqrt(a),
                      np.asarray(truth.ids)[order] + 1, a=a, compress=compress, **common)

    if halos == "auto":  # FoF with the validation suite (halotools) when installed
        try:
            from emu_backend.validation.halos import find_halos_in_snapshot

            halos = find_halos_in_snapshot(truth, b=0.2, min_particles=20)  # Quijote kept >= 20
        except ImportError:  # MissingDependencyError is an ImportError
            halos = None
    if halos is not None and len(halos.mass):
        write_fof_tab(folder / f"groups_{snapnum:03d}", snapnum, length=np.asarray(halos.n_particles),
                      mass_msun_h=np.asarray(halos.mass), pos_mpc_h=np.asarray(halos.position),
                      vel_km_s=np.asarray(halos.velocity), a=a, n_files=n_files)
    return QuijoteFixture(root, sim, snapnum, cosmology, ics, ics_snapshot, truth, halos, seed)


_CACHE: dict = {}


def shared_quijote_dir(**kwargs) -> QuijoteFixture:
    """:func:`build_quijote_dir` once per test process and set of arguments (shared by the test modules).

    The folder lives in a temporary directory removed at exit; tests must not modify it (copy first).
    """
    import atexit
    import shutil
    import tempfile

    key = tuple(sorted(kwargs.items()))
    if key not in _CACHE:
        root = Path(tempfile.mkdtemp(prefix="quijote_fixture_")) / "latin_hypercube"
        atexit.register(shutil.rmtree, root.parent, True)
        _CACHE[key] = build_quijote_dir(root, **kwargs)
    return _CACHE[key]
