"""The on-disk layout of a lightcone: one HDF5 file per shell, each written atomically (docs/lightcone.md).

``shell_XXX.h5`` (``XXX`` the shell index from the observer outwards):

* attributes: ``format`` (:data:`FORMAT`), ``version``, ``config_digest``, ``shell``, ``z_lo``, ``z_hi``,
  ``chi_lo``, ``chi_hi`` [Mpc/h], ``step_redshifts`` (the outputs used, sub-steps included),
  ``n_particles``, ``n_replicas``, ``observer`` [Mpc/h], ``box_size`` [Mpc/h], ``grid``, ``interpolation``;
* particle datasets of length ``N`` (:data:`PARTICLE_FIELDS`);
* group ``maps``: ``counts`` (npix,) int64, the particles per HEALPix pixel (RING order); ``kappa``
  (n_sources, npix) float64, this shell's Born convergence for each source redshift (attribute
  ``source_redshifts``); attributes ``nside``, ``volume`` [(Mpc/h)^3, full sky], ``nbar`` [(h/Mpc)^3];
* group ``power``: ``k`` [h/Mpc], ``power_lo``, ``power_hi`` [(Mpc/h)^3], the snapshot P(k) at the shell's
  edges ``z_lo`` and ``z_hi`` (CIC, interlaced, deconvolved; shot noise not subtracted), attribute
  ``shot_noise`` ``= L^3 / N``.

A file exists only when its shell is complete: it is written under a temporary name and renamed at the end.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import h5py
import numpy as np

from ..errors import FileFormatError
from ..io.atomic import atomic_path

__all__ = ["FORMAT", "VERSION", "PARTICLE_FIELDS", "shell_path", "ShellWriter", "read_shell_attrs", "read_shell",
           "check_digest"]

FORMAT = "emu_backend.lightcone_shell"
VERSION = 1

#: name -> (dtype, per-particle shape, unit and meaning)
PARTICLE_FIELDS = {
    "position": ("f4", (3,), "comoving position relative to the observer [Mpc/h] at the crossing"),
    "velocity": ("f4", (3,), "peculiar velocity [km/s] at the crossing"),
    "chi": ("f8", (), "comoving distance of the crossing [Mpc/h]"),
    "ra": ("f8", (), "right ascension [deg], from +x towards +y"),
    "dec": ("f8", (), "declination [deg], from the x-y plane towards +z"),
    "z_cos": ("f8", (), "cosmological redshift of the crossing"),
    "z_obs": ("f8", (), "observed redshift (1 + z_cos)(1 + v_los / c) - 1"),
    "v_los": ("f4", (), "line-of-sight peculiar velocity [km/s], positive away from the observer"),
    "id": ("i8", (), "Lagrangian C-order index i n^2 + j n + k"),
    "replica": ("i4", (3,), "replica vector r: the particle is at x + r L of the periodic box"),
}


def shell_path(folder, index: int) -> Path:
    """``folder/shell_XXX.h5``."""
    return Path(folder) / f"shell_{index:03d}.h5"


class ShellWriter(contextlib.AbstractContextManager):
    """Append particles of one shell chunk by chunk into a temporary file renamed onto ``path`` on success.

    Appended particles are buffered in memory up to ``buffer_particles`` and then written to resizable
    datasets, so memory is bounded by the buffer, not by the shell.
    """

    def __init__(self, path, attrs: dict, buffer_particles: int = 1 << 21):
        self.path = Path(path)
        self._attrs = attrs
        self._atomic = atomic_path(self.path)
        self.n = 0  # particles appended (written or buffered)
        self._written = 0
        self._buffer: list[dict] = []
        self._buffered = 0
        self.buffer_particles = buffer_particles

    def __enter__(self):
        self._tmp = self._atomic.__enter__()
        self.file = h5py.File(self._tmp, "w")
        self.file.attrs["format"] = FORMAT
        self.file.attrs["version"] = VERSION
        for key, value in self._attrs.items():
            self.file.attrs[key] = value
        for name, (dtype, shape, doc) in PARTICLE_FIELDS.items():
            ds = self.file.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                          chunks=(65536, *shape))
            ds.attrs["description"] = doc
        return self

    def append(self, **fields) -> None:
        """Add particles: every name of :data:`PARTICLE_FIELDS`, with equal lengths."""
        m = len(fields["id"])
        if not m:
            return
        self._buffer.append({name: np.asarray(fields[name], dtype=PARTICLE_FIELDS[name][0]) for name in PARTICLE_FIELDS})
        self._buffered += m
        self.n += m
        if self._buffered >= self.buffer_particles:
            self.flush()

    def flush(self) -> None:
        """Write the buffered particles to the file."""
        if not self._buffered:
            return
        end = self._written + self._buffered
        for name in PARTICLE_FIELDS:
            ds = self.file[name]
            ds.resize(end, axis=0)
            ds[self._written:end] = np.concatenate([b[name] for b in self._buffer])
        self._written, self._buffer, self._buffered = end, [], 0

    def finish(self, maps: dict, map_attrs: dict, power: dict, power_attrs: dict, **attrs) -> None:
        """Write the shell's maps, P(k) and closing attributes (``n_particles`` is set here)."""
        self.flush()
        g = self.file.create_group("maps")
        for key, value in maps.items():
            g.create_dataset(key, data=value)
        g.attrs.update(map_attrs)
        p = self.file.create_group("power")
        for key, value in power.items():
            p.create_dataset(key, data=value)
        p.attrs.update(power_attrs)
        self.file.attrs["n_particles"] = self.n
        self.file.attrs.update(attrs)

    def __exit__(self, exc_type, exc, tb):
        self.file.close()
        return self._atomic.__exit__(exc_type, exc, tb)


def read_shell_attrs(path) -> dict:
    """The attributes of a shell file (FileFormatError if it is not one)."""
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except OSError as exc:
        raise FileFormatError(f"{str(path)!r} is not a readable HDF5 file: {exc}") from exc
    if attrs.get("format") != FORMAT:
        raise FileFormatError(f"{str(path)!r} is not a lightcone shell file (format {attrs.get('format')!r})")
    return attrs


def read_shell(path, fields=None) -> dict:
    """Particle datasets of a shell file as arrays (all of :data:`PARTICLE_FIELDS` by default), with ``attrs``,
    ``counts``, ``kappa`` and the ``power`` group as a dict."""
    attrs = read_shell_attrs(path)
    with h5py.File(path, "r") as f:
        out = {name: f[name][...] for name in (fields or PARTICLE_FIELDS)}
        out["attrs"] = attrs
        out["counts"] = f["maps/counts"][...]
        out["kappa"] = f["maps/kappa"][...]
        out["map_attrs"] = dict(f["maps"].attrs)
        out["power"] = {k: f["power"][k][...] for k in f["power"]} | dict(f["power"].attrs)
    return out


def check_digest(path, digest: str) -> bool:
    """Whether the shell file at ``path`` belongs to the run of ``digest`` (FileFormatError if unreadable)."""
    return str(read_shell_attrs(path).get("config_digest")) == digest

