"""The run configuration of ``emu-backend run``: a frozen, validated dataclass loaded from TOML and flags.

A TOML file holds the keys of :class:`RunConfig` at top level; ``cosmology`` is a preset name or a
table of parameters (optionally with ``preset = "..."`` to start from)::

    grid = 32
    z = [0.0, 1.0]
    backend = "emulator"
    [cosmology]
    preset = "quijote"
    omega_m = 0.3

Flags given on the command line win over the file. Unknown keys, wrong types and out-of-range values
raise :class:`~emu_backend.errors.InputError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cosmology.params import PRESETS, QUIJOTE_FIDUCIAL, Cosmology
from ..errors import FileFormatError, InputError
from ..simulator.backends import available_backends

__all__ = ["RunConfig", "load_toml", "config_from_mapping", "FORMATS", "BASELINES", "LENGTH_UNITS"]

FORMATS = ("gadget", "fields", "npz")
BASELINES = ("2lpt", "za", "none")
LENGTH_UNITS = ("kpc/h", "Mpc/h")
_MAX_GRID = 4096


def _fail(key: str, msg: str, value) -> InputError:
    return InputError(f"config key {key!r} {msg}, got {value!r}")


def _int(key, value, lo, hi=None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(key, "must be an integer", value)
    if value < lo or (hi is not None and value > hi):
        raise _fail(key, f"must be in [{lo}, {hi if hi is not None else 'inf'}]", value)
    return int(value)


def _float(key, value, lo=None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise _fail(key, "must be a finite number", value)
    if lo is not None and not value > lo:
        raise _fail(key, f"must be > {lo}", value)
    return float(value)


def _bool(key, value) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, "must be true or false", value)
    return value


def _str(key, value, allowed=None) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(key, "must be a non-empty string", value)
    if allowed is not None and value not in allowed:
        raise _fail(key, f"must be one of {list(allowed)}", value)
    return value


def _times(key, value, lo, hi, lo_open=False) -> tuple[float, ...]:
    seq = list(value) if isinstance(value, (list, tuple)) else [value]
    if not seq:
        raise _fail(key, "must list at least one value", value)
    out = []
    for v in seq:
        v = _float(key, v)
        if (v <= lo if lo_open else v < lo) or v > hi:
            raise _fail(key, f"values must be in {'(' if lo_open else '['}{lo:.6g}, {hi:.6g}]", v)
        if v in out:
            raise _fail(key, "must not repeat a value", v)
        out.append(v)
    return tuple(out)


def _cosmology(value) -> Cosmology:
    if isinstance(value, Cosmology):
        return value
    if isinstance(value, str):
        if value.lower() not in PRESETS:
            raise _fail("cosmology", f"must be a preset in {sorted(PRESETS)} or a table of parameters", value)
        return PRESETS[value.lower()]
    if isinstance(value, dict):
        params = dict(value)
        base = _cosmology(params.pop("preset")) if "preset" in params else None
        known = {f.name for f in dataclasses.fields(Cosmology)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise InputError(f"unknown config key(s) {['cosmology.' + k for k in unknown]}; "
                             f"allowed in [cosmology]: {sorted(known | {'preset'})}")
        try:
            return base.clone(**params) if base is not None else Cosmology(**params)
        except InputError as exc:
            raise InputError(f"config key 'cosmology': {exc}") from exc
        except TypeError as exc:  # a missing required parameter
            raise InputError(f"config key 'cosmology': {exc}; give omega_m or a preset") from exc
    raise _fail("cosmology", "must be a preset name or a table of parameters", value)


@dataclass(frozen=True)
class RunConfig:
    """Everything ``emu-backend run`` needs; validated on construction.

    Parameters
    ----------
    cosmology : Cosmology
        Default Quijote fiducial (TOML: a preset name or a table of parameters).
    grid : int
        Particles per side, in [8, 4096].
    box_size : float or None
        Box side [Mpc/h]; None: the emulator's resolution ``1000 grid / 512``.
    seed : int
        White-noise seed, >= 0.
    z : tuple of float or None
        Output redshifts (default 0 and 1); exclusive with ``a``.
    a : tuple of float or None
        Output scale factors in (0, 1.5].
    backend : str
        ``"emulator"``, ``"za"``, ``"2lpt"`` or one registered by an adapter.
    weights : str or None
        Emulator checkpoint; None: the shipped default (untrained until trained weights ship).
    tile, batch : int or None, int
        Emulator tile size (multiple of 8; None: automatic) and tiles per network call.
    device : str
        Torch device of the emulator.
    allow_extrapolation : bool
        Let the emulator run outside its training domain (with a warning).
    format : {"gadget", "fields", "npz"}
        Snapshot files: Gadget HDF5, displacement/velocity HDF5 fields, or NumPy ``.npz`` fields.
    out : str
        Output folder.
    overwrite : bool
        Replace existing output files (otherwise refused before anything is computed).
    n_files : int
        Files per Gadget snapshot.
    length_unit : {"kpc/h", "Mpc/h"}
        Gadget length unit.
    plot : bool
        Write ``power.png``.
    baseline : {"2lpt", "za", "none"}
        Baseline backend run from the same ICs for the plot.
    power : str or None
        Two-column text file k [h/Mpc], P [(Mpc/h)^3] at z = 0; None: Eisenstein & Hu.
    fixed_amplitude, paired : bool
        Quijote-style fixed / paired noise.
    """

    cosmology: Cosmology = QUIJOTE_FIDUCIAL
    grid: int = 32
    box_size: float | None = None
    seed: int = 42
    z: tuple | None = (0.0, 1.0)
    a: tuple | None = None
    backend: str = "emulator"
    weights: str | None = None
    tile: int | None = None
    batch: int = 1
    device: str = "cpu"
    allow_extrapolation: bool = False
    format: str = "gadget"
    out: str = "emu_out"
    overwrite: bool = False
    n_files: int = 1
    length_unit: str = "kpc/h"
    plot: bool = True
    baseline: str = "2lpt"
    power: str | None = None
    fixed_amplitude: bool = False
    paired: bool = False

    def __post_init__(self):

        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        put("cosmology", _cosmology(self.cosmology))
        put("grid", _int("grid", self.grid, 8, _MAX_GRID))
        if self.box_size is not None:
            put("box_size", _float("box_size", self.box_size, lo=0.0))
        put("seed", _int("seed", self.seed, 0, 2**63 - 1))
        if (self.z is None) == (self.a is None):
            raise InputError(f"config keys 'z' and 'a' are exclusive: give exactly one, got z={self.z!r}, a={self.a!r}")
        if self.z is not None:
            put("z", _times("z", self.z, -1.0 / 3.0, 1000.0))
        else:
            put("a", _times("a", self.a, 0.0, 1.5, lo_open=True))
        put("backend", _str("backend", self.backend, available_backends()))
        if self.weights is not None:
            put("weights", _str("weights", str(self.weights) if isinstance(self.weights, Path) else self.weights))
        if self.tile is not None:
            put("tile", _int("tile", self.tile, 8, 1024))
            if self.tile % 8:
                raise _fail("tile", "must be a multiple of 8", self.tile)
        put("batch", _int("batch", self.batch, 1, 4096))
        put("device", _str("device", self.device))
        for key in ("allow_extrapolation", "overwrite", "plot", "fixed_amplitude", "paired"):
            put(key, _bool(key, getattr(self, key)))
        put("format", _str("format", self.format, FORMATS))
        put("out", _str("out", str(self.out) if isinstance(self.out, Path) else self.out))
        put("n_files", _int("n_files", self.n_files, 1, self.grid**3))
        put("length_unit", _str("length_unit", self.length_unit, LENGTH_UNITS))
        put("baseline", _str("baseline", self.baseline, BASELINES))
        if self.power is not None:
            put("power", _str("power", str(self.power) if isinstance(self.power, Path) else self.power))

    # -- derived values --------------------------------------------------------------------
    @property
    def box_size_mpc_h(self) -> float:
        """Box side [Mpc/h]: ``box_size`` or ``1000 grid / 512``."""
        return self.box_size if self.box_size is not None else 1000.0 * self.grid / 512.0

    @property
    def redshifts(self) -> tuple[float, ...]:
        """Output redshifts, from ``z`` or ``a``."""
        return self.z if self.z is not None else tuple(1.0 / a - 1.0 for a in self.a)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (cosmology as its parameters)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["cosmology"] = self.cosmology.to_dict()
        d["z"] = None if self.z is None else list(self.z)
        d["a"] = None if self.a is None else list(self.a)
        d["box_size_mpc_h"] = self.box_size_mpc_h
        return d

    def replace(self, **changes) -> "RunConfig":
        """A copy with some keys changed (validated again); ``z`` and ``a`` replace each other."""
        return config_from_mapping(changes, base=self)


_KEYS = tuple(f.name for f in dataclasses.fields(RunConfig))


def config_from_mapping(mapping: dict, base: RunConfig | None = None, source: str = "config") -> RunConfig:
    """Build a :class:`RunConfig` from a dict of keys (e.g. parsed TOML), on top of ``base``.

    Unknown keys raise :class:`InputError` naming them. Giving ``z`` clears the base's ``a`` and vice
    versa; giving both is an error.
    """
    if not isinstance(mapping, dict):
        raise InputError(f"{source} must be a table of keys, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - set(_KEYS))
    if unknown:
        raise InputError(f"unknown config key(s) {unknown} in {source}; allowed keys: {list(_KEYS)}")
    if "z" in mapping and "a" in mapping and mapping["z"] is not None and mapping["a"] is not None:
        raise InputError(f"config keys 'z' and 'a' are exclusive in {source}: give one of them")
    changes = dict(mapping)
    if changes.get("z") is not None:
        changes["a"] = None
    elif changes.get("a") is not None:
        changes["z"] = None
    return dataclasses.replace(base if base is not None else RunConfig(), **changes)


def load_toml(path) -> dict:
    """Read a TOML config file into a dict (no validation; see :func:`config_from_mapping`)."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"config file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"config file {str(path)!r} is not valid UTF-8 TOML: {exc}") from exc
