"""A tiny Quijote download written in the real tools' conventions, with the truth it was made from.

Nothing of the package writes these files: Gadget format-1 records, HDF5 datasets and FoF tables are
packed here with numpy and h5py from the documented layouts (docs/quijote.md), and the expected arrays
come from the construction itself, never from a reader:

* **IDs** follow 2LPTic's glass-tile loop: the "glass" is the ``G^3`` grid points of one tile listed in a
  random order ``m``, tiled ``T^3`` times (``T = GlassTileFac``, ``n = T G``), and the particle ``m`` of
  tile ``(it, jt, kt)`` gets ``ID = 1 + ((it T + jt) T + kt) G^3 + m``. :attr:`QuijoteDownload.ids`
  holds the ID of every grid point; no reader-side inverse is used.
* **ICs at z = 127** are 2LPT from a ZA field ``psi1`` (the truth of the linear displacement) with this
  module's own spectral 2LPT (:func:`second_order`, physics of docs/quijote.md); Gadget-1 files are slabs
  of the unperturbed grid in x (2LPTic's one file per slab of tasks), the particles of a file in a
  random order; or Blosc-compressed (lossless) HDF5 ``ics.<k>.hdf5`` as Quijote ships them since 2023.
* **The z = 0 snapshot** stands in for the N-body run: 2LPT at z = 0 with some Lagrangian patches
  collapsed into halos. It is written as Quijote's compressed HDF5 (Blosc + zstd, low mantissa bits of
  positions and velocities zeroed) in a Peano-Hilbert-like order (Morton key of the positions), not by ID.
* **Halos**: those patches, as Gadget-III FoF tables with member IDs (``Halos/FoF_id``, two files) and as
  a single-file table without IDs (``Halos/FoF``), in the download tree beside ``Snapshots``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from emu_backend.cosmology import Cosmology, growth
from emu_backend.ics import InitialConditions

Z_ICS = 127.0
SNAPNUM = 4
#: Quijote's lossy preconditioning of the snapshots at 512^3 (quijote-compression): low bits zeroed.
TRUNC_POS_BITS, TRUNC_VEL_BITS = 7, 11
#: A latin-hypercube cosmology (one row of Quijote's table).
LH_COSMOLOGY = Cosmology(omega_m=0.2499, omega_b=0.04157, h=0.7599, n_s=1.0457, sigma8=0.8939, name="lh_fixture")

_GADGET1_HEADER = np.dtype([
    ("npart", "u4", 6), ("massarr", "f8", 6), ("time", "f8"), ("redshift", "f8"), ("flag_sfr", "i4"),
    ("flag_feedback", "i4"), ("npartTotal", "u4", 6), ("flag_cooling", "i4"), ("num_files", "i4"),
    ("BoxSize", "f8"), ("Omega0", "f8"), ("OmegaLambda", "f8"), ("HubbleParam", "f8"), ("flag_stellarage", "i4"),
    ("flag_metals", "i4"), ("npartTotalHighWord", "u4", 6), ("flag_entropy_instead_u", "i4"), ("fill", "V60"),
])
_TAB_HEADER = np.dtype([("Ngroups", "i4"), ("TotNgroups", "i4"), ("Nids", "i4"), ("TotNids", "u8"), ("Nfiles", "u4")])
_IDS_HEADER = np.dtype([("Ngroups", "i4"), ("TotNgroups", "i4"), ("Nids", "i4"), ("TotNids", "u8"), ("Nfiles", "u4"),
                        ("SendOffset", "u4")])


# -- conventions ------------------------------------------------------------------------------------
def glass_tile_ids(n: int, tiles: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """2LPTic's IDs of an ``n^3`` grid made of ``tiles^3`` copies of a ``G^3`` "glass" (the tile's grid points
    in a random order).

    Returns
    -------
    ids : ndarray, shape (n^3,), uint32
        The ID of C-order grid point ``i n^2 + j n + k``.
    write_order : ndarray, shape (n^3,), int64
        Grid points in 2LPTic's loop order (tile by tile, glass index m inside).
    """
    g = n // tiles
    assert g * tiles == n
    glass = np.stack(np.unravel_index(rng.permutation(g**3), (g, g, g)), axis=1)  # glass[m] = (gi, gj, gk)
    ids = np.empty(n**3, np.uint32)
    write_order = []
    for it in range(tiles):
        for jt in range(tiles):
            for kt in range(tiles):
                tile = (it * tiles + jt) * tiles + kt
                point = glass + np.array([it, jt, kt]) * g
                index = np.ravel_multi_index(point.T, (n, n, n))
                ids[index] = 1 + tile * g**3 + np.arange(g**3)
                write_order.append(index)
    return ids, np.concatenate(write_order)


def _k(n: int, box: float):
    k1 = 2 * np.pi * np.fft.fftfreq(n, d=box / n)
    kz = 2 * np.pi * np.fft.rfftfreq(n, d=box / n)
    kx, ky, kz = np.meshgrid(k1, k1, kz, indexing="ij")
    nyq = np.pi * n / box
    keep = ~((np.abs(kx) == nyq) | (np.abs(ky) == nyq) | (np.abs(kz) == nyq))
    return (kx, ky, kz), keep


def second_order(psi1: np.ndarray, box: float) -> np.ndarray:
    """2LPT displacement ``Psi2 = grad phi2``, ``lap phi2 = sum_{i<j} (phi_ii phi_jj - phi_ij^2)``, of
    ``Psi1 = -grad phi1``.

    Spectral derivatives, modes on a Nyquist plane dropped; so that ``x = q + D Psi1 + D2 Psi2`` with
    ``D2 = -3/7 D^2 Omega_m(z)^(-1/143)`` (2LPTic's convention).
    """
    n = psi1.shape[1]
    kv, keep = _k(n, box)
    k2 = kv[0] ** 2 + kv[1] ** 2 + kv[2] ** 2
    k2[0, 0, 0] = 1.0
    delta = -sum(1j * kv[c] * np.fft.rfftn(psi1[c]) for c in range(3)) * keep  # delta = -div Psi1
    phi = -delta / k2  # lap phi1 = delta

    def d2(i, j):
        return np.fft.irfftn(-kv[i] * kv[j] * phi, s=(n, n, n), axes=(0, 1, 2))

    p = {(i, j): d2(i, j) for i in range(3) for j in range(i, 3)}
    source = (p[0, 0] * p[1, 1] + p[0, 0] * p[2, 2] + p[1, 1] * p[2, 2]
              - p[0, 1] ** 2 - p[0, 2] ** 2 - p[1, 2] ** 2)
    phi2 = -np.fft.rfftn(source) * keep / k2
    phi2[0, 0, 0] = 0.0
    return np.stack([np.fft.irfftn(1j * kv[c] * phi2, s=(n, n, n), axes=(0, 1, 2)) for c in range(3)])


def _growth(z: float, om: float):
    """D, D2, a H f, a H f2 D2 / D2 factors of 2LPT at redshift z (2LPTic's D2 and f2 fits)."""
    a = 1.0 / (1.0 + z)
    d1 = float(growth.growth_factor(z, om))
    om_z = om * (1 + z) ** 3 / (om * (1 + z) ** 3 + 1 - om)
    d2 = -3.0 / 7.0 * d1**2 * om_z ** (-1.0 / 143.0)
    a_h = a * float(growth.hubble(z, om))
    return a, d1, d2, a_h * float(growth.growth_rate(z, om)), a_h * 2.0 * om_z ** (6.0 / 11.0)


def lpt(psi1, psi2, box, om, z):
    """Positions [Mpc/h] (wrapped) and velocities [km/s] of every grid point, shape (N, 3) float64."""
    n = psi1.shape[1]
    _, d1, d2, vf1, vf2 = _growth(z, om)
    q = np.stack(np.meshgrid(*[np.arange(n) * box / n] * 3, indexing="ij"))
    pos = np.mod(q + d1 * psi1 + d2 * psi2, box)
    vel = vf1 * d1 * psi1 + vf2 * d2 * psi2
    return pos.reshape(3, -1).T, vel.reshape(3, -1).T


def truncate(values: np.ndarray, bits: int) -> np.ndarray:
    """float32 ``values`` with their ``bits`` low mantissa bits zeroed (Quijote's preconditioning)."""
    raw = np.ascontiguousarray(values, np.float32).view(np.uint32) & ~np.uint32((1 << bits) - 1)
    return raw.view(np.float32)


def morton_order(pos: np.ndarray, box: float, level: int = 4) -> np.ndarray:
    """A Peano-Hilbert-like file order: particles sorted by the Morton key of their cell at ``2^level`` per side."""
    cells = np.minimum((pos / box * 2**level).astype(np.int64), 2**level - 1)
    key = np.zeros(len(pos), np.int64)
    for bit in range(level):
        for ax in range(3):
            key |= ((cells[:, ax] >> bit) & 1) << (3 * bit + 2 - ax)
    return np.argsort(key, kind="stable")


# -- writers -----------------------------------------------------------------------------------------
def _record(fh, payload: bytes) -> None:
    size = np.array([len(payload)], "<u4").tobytes()
    fh.write(size + payload + size)


def write_gadget1(prefix: Path, parts: list, *, a: float, box_kpc: float, om: float, h: float, mass_1e10: float):
    """Gadget format-1 files ``prefix.<f>``: one ``(pos_kpc, u, ids)`` per file; HEAD, POS, VEL, ID records."""
    total = sum(len(p[2]) for p in parts)
    for f, (pos, u, ids) in enumerate(parts):
        head = np.zeros(1, _GADGET1_HEADER)
        head["npart"][0, 1], head["massarr"][0, 1] = len(ids), mass_1e10
        head["time"], head["redshift"] = a, 1.0 / a - 1.0
        head["npartTotal"][0, 1], head["num_files"] = total, len(parts)
        head["BoxSize"], head["Omega0"], head["OmegaLambda"], head["HubbleParam"] = box_kpc, om, 1.0 - om, h
        with open(prefix.with_name(f"{prefix.name}.{f}"), "wb") as fh:
            for payload in (head.tobytes(), np.asarray(pos, "<f4").tobytes(), np.asarray(u, "<f4").tobytes(),
                            np.asarray(ids, "<u4").tobytes()):
                _record(fh, payload)


def write_hdf5(prefix: Path, parts: list, *, a: float, box_kpc: float, om: float, h: float, mass_1e10: float,
               trunc_pos: int = 0, trunc_vel: int = 0):
    """Quijote HDF5 files ``prefix.<f>.hdf5``: Blosc/zstd datasets, ``/CompressionInfo``, low bits zeroed."""
    import hdf5plugin

    total = sum(len(p[2]) for p in parts)
    blosc = {name: dict(hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=shuffle))
             for name, shuffle in (("float", hdf5plugin.Blosc.BITSHUFFLE), ("ids", hdf5plugin.Blosc.SHUFFLE))}
    for f, (pos, u, ids) in enumerate(parts):
        with h5py.File(prefix.with_name(f"{prefix.name}.{f}.hdf5"), "w") as h5:
            this, tot, mass = np.zeros(6, np.int32), np.zeros(6, np.uint32), np.zeros(6)
            this[1], tot[1], mass[1] = len(ids), total, mass_1e10
            header = h5.create_group("Header").attrs
            for key, value in (("BoxSize", np.float64(box_kpc)), ("Time", np.float64(a)),
                               ("Redshift", np.float64(1 / a - 1)), ("NumPart_ThisFile", this),
                               ("NumPart_Total", tot), ("NumPart_Total_HighWord", np.zeros(6, np.uint32)),
                               ("MassTable", mass), ("NumFilesPerSnapshot", np.int32(len(parts))),
                               ("Omega0", np.float64(om)), ("OmegaLambda", np.float64(1 - om)),
                               ("HubbleParam", np.float64(h)), ("Flag_Sfr", np.int32(0))):
                header[key] = value
            info = {"Coordinates": {"truncbits": trunc_pos}, "Velocities": {"truncbits": trunc_vel},
                    "ParticleIDs": {"truncbits": 0}}
            h5.create_group("CompressionInfo").attrs["json"] = json.dumps(info)
            chunk = max(1, min(1 << 16, len(ids)))
            g = h5.create_group("PartType1")
            g.create_dataset("Coordinates", data=truncate(pos, trunc_pos), chunks=(chunk, 3), **blosc["float"])
            g.create_dataset("Velocities", data=truncate(u, trunc_vel), chunks=(chunk, 3), **blosc["float"])
            g.create_dataset("ParticleIDs", data=np.asarray(ids, np.uint32), chunks=(chunk,), **blosc["ids"])


def write_fof(folder: Path, snapnum: int, groups: list, *, particle_mass: float, a: float, n_files: int,
              with_ids: bool):
    """Gadget-III ``group_tab_XXX.<f>`` (and ``group_ids_XXX.<f>``) of groups ``(member_ids, pos_mpc, vel)``."""
    folder.mkdir(parents=True, exist_ok=True)
    length = np.array([len(g[0]) for g in groups], np.int32)
    offset = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int32)
    chunks = np.array_split(np.arange(len(groups)), n_files)
    send = 0
    for f, sel in enumerate(chunks):
        nids = int(length[sel].sum())
        head = np.zeros(1, _TAB_HEADER)
        head["Ngroups"], head["TotNgroups"], head["Nids"] = len(sel), len(groups), nids
        head["TotNids"], head["Nfiles"] = int(length.sum()), n_files
        len_type, mass_type = np.zeros((len(sel), 6), np.int32), np.zeros((len(sel), 6), np.float32)
        mass = (length[sel] * particle_mass / 1e10).astype(np.float32)
        len_type[:, 1], mass_type[:, 1] = length[sel], mass
        pos = np.array([groups[i][1] for i in sel], np.float64).reshape(-1, 3) * 1e3
        vel = np.array([groups[i][2] for i in sel], np.float64).reshape(-1, 3) * a  # v = GroupVel (1 + z)
        with open(folder / f"group_tab_{snapnum:03d}.{f}", "wb") as fh:
            for arr in (head, length[sel], offset[sel], mass, pos.astype(np.float32), vel.astype(np.float32),
                        len_type, mass_type):
                fh.write(np.ascontiguousarray(arr).tobytes())
        if with_ids:
            ids_head = np.zeros(1, _IDS_HEADER)
            ids_head["Ngroups"], ids_head["TotNgroups"], ids_head["Nids"] = len(sel), len(groups), nids
            ids_head["TotNids"], ids_head["Nfiles"], ids_head["SendOffset"] = int(length.sum()), n_files, send
            members = [np.asarray(groups[i][0], np.uint32) for i in sel]
            with open(folder / f"group_ids_{snapnum:03d}.{f}", "wb") as fh:
                fh.write(ids_head.tobytes() + (np.concatenate(members).tobytes() if members else b""))
        send += nids


# -- the download --------------------------------------------------------------------------------------
@dataclass
class QuijoteDownload:
    """What :func:`build_download` wrote (under ``root``) and the truth it was made from (grid order)."""

    root: Path
    set_name: str
    sim: int
    n: int
    box: float
    cosmology: Cosmology
    ids: np.ndarray  # (N,) uint32: 2LPTic ID of grid point i n^2 + j n + k
    psi1: np.ndarray  # (3, n, n, n) ZA displacement at z = 0 [Mpc/h]
    psi2: np.ndarray  # (3, n, n, n) this module's 2LPT displacement [Mpc/h]
    ics_pos: np.ndarray  # (N, 3) float64 [Mpc/h], grid order, before float32 storage
    ics_vel: np.ndarray  # (N, 3) float64 [km/s]
    snap_pos: np.ndarray  # (N, 3) float64 [Mpc/h], z = 0, grid order
    snap_vel: np.ndarray  # (N, 3) float64 [km/s]
    halo_members: list  # per halo (catalogue order), grid indices
    particle_mass: float  # Msun/h
    files: dict = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.root / "Snapshots" / self.set_name / str(self.sim)

    def halos(self, tree: str = "FoF_id") -> Path:
        return self.root / "Halos" / tree / self.set_name / str(self.sim)


def _halo_patches(n: int, rng, sizes=(4, 3, 3, 3, 3, 3)) -> list:
    """Disjoint Lagrangian cubes (grid indices) that collapse into halos."""
    taken = np.zeros((n, n, n), bool)
    patches = []
    while len(patches) < len(sizes):
        s = sizes[len(patches)]
        corner = rng.integers(0, n, 3)
        sl = np.ix_(*[(corner[ax] + np.arange(s)) % n for ax in range(3)])
        if taken[sl].any():
            continue
        taken[sl] = True
        block = np.zeros((n, n, n), bool)
        block[sl] = True
        patches.append(np.flatnonzero(block))
    return patches


def build_download(root, *, n: int = 16, tiles: int = 2, sim: int = 0, set_name: str = "latin_hypercube",
                   seed: int = 5, cosmology: Cosmology = LH_COSMOLOGY, ic_format: str = "gadget1",
                   n_ic_files: int = 2, n_snap_files: int = 3, bulk_cells: float = 0.0,
                   zero_ic_velocities: bool = False) -> QuijoteDownload:
    """Write ``root/Snapshots/<set>/<sim>/...`` and ``root/Halos/FoF_id|FoF/<set>/<sim>/groups_004``.

    ``bulk_cells`` adds a box-sized flow ``A sin(2 pi q_c / L)`` along each axis c whose z = 127 amplitude A is
    that many cells: IC particles then lie beyond half a cell of their grid points while neighbours move
    together, as in the low-Omega_m corner of the latin hypercube and at 1024^3. ``zero_ic_velocities``
    writes ICs without velocities.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    box = 1000.0 * n / 512
    om = cosmology.omega_m
    psi1 = np.asarray(InitialConditions.from_noise(n, box, cosmology, seed=seed).displacement, np.float64)
    wave = np.sin(2 * np.pi * np.arange(n) / n) * bulk_cells * (box / n) / float(growth.growth_factor(Z_ICS, om))
    for c in range(3):
        psi1[c] += wave.reshape([n if ax == c else 1 for ax in range(3)])
    psi2 = second_order(psi1, box)
    ids, write_order = glass_tile_ids(n, tiles, rng)
    mass_1e10 = cosmology.particle_mass(box, n) / 1e10
    folder = root / "Snapshots" / set_name / str(sim)
    (folder / "ICs").mkdir(parents=True, exist_ok=True)
    row = (cosmology.omega_m, cosmology.omega_b, cosmology.h, cosmology.n_s, cosmology.sigma8)
    (folder / "Cosmo_params.dat").write_text(" ".join(f"{v:.5f}" for v in row) + "\n")
    (folder / "ICs" / "2LPT.param").write_text(f"Nmesh {n}\nNsample {n}\nBox {box * 1e3}\nGlassTileFac {tiles}\n"
                                               f"Seed {seed}\n")

    # initial conditions: 2LPTic's loop order, one file per slab of the unperturbed grid, shuffled inside
    a_i, *_ = _growth(Z_ICS, om)
    ics_pos, ics_vel = lpt(psi1, psi2, box, om, Z_ICS)
    if zero_ic_velocities:
        ics_vel = np.zeros_like(ics_vel)
    slab = (write_order // n**2) * n_ic_files // n
    parts = []
    for f in range(n_ic_files):
        sel = write_order[slab == f]
        sel = sel[rng.permutation(len(sel))]
        parts.append((ics_pos[sel] * 1e3, ics_vel[sel] / math.sqrt(a_i), ids[sel]))
    common = dict(box_kpc=box * 1e3, om=om, h=cosmology.h, mass_1e10=mass_1e10)
    if ic_format == "gadget1":
        write_gadget1(folder / "ICs" / "ics", parts, a=a_i, **common)
    else:  # as compress_IC.py: consecutive slabs merged into lossless HDF5 files (two here)
        halves = np.array_split(np.arange(n_ic_files), 2)
        merged = [tuple(np.concatenate([parts[f][i] for f in half]) for i in range(3)) for half in halves]
        write_hdf5(folder / "ICs" / "ics", merged, a=a_i, **common)

    # the z = 0 "N-body" snapshot: 2LPT with collapsed Lagrangian patches
    pos, vel = lpt(psi1, psi2, box, om, 0.0)
    patches = _halo_patches(n, rng)
    groups = []
    for members in patches:
        d = pos[members] - pos[members[0]]
        d -= box * np.round(d / box)
        com = pos[members[0]] + d.mean(axis=0)
        pos[members] = np.mod(com + 0.03 * (d - d.mean(axis=0)), box)
        groups.append((ids[members][rng.permutation(len(members))], np.mod(com, box), vel[members].mean(axis=0)))
    order = morton_order(pos, box)  # files of unequal sizes, each a run of the space-filling curve
    weights = np.arange(n_snap_files, 0, -1)
    cuts = np.split(order, (np.cumsum(weights)[:-1] * len(order)) // weights.sum())
    snap = folder / f"snapdir_{SNAPNUM:03d}"
    snap.mkdir(parents=True, exist_ok=True)
    write_hdf5(snap / f"snap_{SNAPNUM:03d}", [(pos[c] * 1e3, vel[c], ids[c]) for c in cuts], a=1.0,
               trunc_pos=TRUNC_POS_BITS, trunc_vel=TRUNC_VEL_BITS, **common)

    particle_mass = cosmology.particle_mass(box, n)
    for tree, n_files, with_ids in (("FoF_id", 2, True), ("FoF", 1, False)):
        halo_dir = root / "Halos" / tree / set_name / str(sim) / f"groups_{SNAPNUM:03d}"
        write_fof(halo_dir, SNAPNUM, groups, particle_mass=particle_mass, a=1.0, n_files=n_files, with_ids=with_ids)
    return QuijoteDownload(root, set_name, sim, n, box, cosmology, ids, psi1, psi2, ics_pos, ics_vel, pos, vel,
                           patches, particle_mass)
