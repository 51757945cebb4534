"""The run configuration of :func:`emu_backend.pipelines.run.run` (``emu-backend run``): a frozen,
validated dataclass, loaded from TOML files and command-line flags.

A TOML file holds the keys of :class:`RunConfig` at top level; ``cosmology`` is a preset name or a
table of parameters (optionally with ``preset = "..."`` to start from)::

    grid = 32
    z = [0.0, 1.0]
    backend = "emulator"
    tile_size = 32            # 'tile' is accepted as an alias
    [cosmology]
    preset = "quijote"
    omega_m = 0.3

Unknown keys, wrong types and out-of-range values raise :class:`~emu_backend.errors.InputError`
naming the key as it was written and what is allowed.

Examples
--------
>>> config_from_mapping({"grid": 16, "tile": 16, "z": [0.5]}).tile_size
16
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checks import check_int, check_real
from ..cosmology.params import PRESETS, QUIJOTE_FIDUCIAL, Cosmology
from ..errors import FileFormatError, InputError
from ..simulator.backends import available_backends
from ..simulator.simulate import A_MIN, Z_MAX

__all__ = ["RunConfig", "load_toml", "config_from_mapping", "default_toml", "FORMATS", "BASELINES", "REFERENCES",
           "LENGTH_UNITS", "KEY_ALIASES"]

FORMATS = ("gadget", "fields", "npz")
BASELINES = ("2lpt", "za", "none")
#: N-body references of the figure: a PM backend run on the same ICs (an adapter's extra), or none.
REFERENCES = ("none", "jaxpm", "pmwd")
LENGTH_UNITS = ("kpc/h", "Mpc/h")
#: Older spellings of config keys, still accepted: alias -> key (the library's argument name).
KEY_ALIASES = {"tile": "tile_size", "batch": "batch_size"}
_MAX_GRID = 4096


def _fail(key: str, msg: str, value) -> InputError:
    return InputError(f"config key {key!r} {msg}, got {value!r}")


def _int(key, value, lo, hi=None) -> int:
    return check_int(value, f"config key {key!r}", lo, hi)


def _float(key, value, lo=None) -> float:
    if lo is None:
        return check_real(value, f"config key {key!r}", what="a finite number")
    return check_real(value, f"config key {key!r}", lo, lo_open=True, what=f"a finite number > {lo}")


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


def _path(key, value) -> str:
    return _str(key, str(value) if isinstance(value, Path) else value)


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
    """Everything :func:`~emu_backend.pipelines.run.run` (``emu-backend run``) needs; validated on
    construction.

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
        Output scale factors in [1/1001, 1.5] (z <= 1000).
    backend : str
        ``"emulator"``, ``"za"``, ``"2lpt"`` or one registered by an adapter.
    weights : str or None
        Emulator checkpoint; None: the shipped default weights.
    tile_size : int or None
        Emulator output cells per tile side, a multiple of 8 in [8, 1024]; None: automatic (the box
        rounded up to a multiple of 8, at most 128). TOML alias ``tile``.
    batch_size : int
        Tiles per network call, in [1, 4096]. TOML alias ``batch``.
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
        Files per Gadget snapshot, in [1, grid^3].
    length_unit : {"kpc/h", "Mpc/h"}
        Gadget length unit.
    plot : bool
        Write ``power.png``.
    baseline : {"2lpt", "za", "none"}
        Baseline backend run from the same ICs for the plot.
    reference : {"none", "jaxpm", "pmwd"}
        N-body reference of the plot: that PM backend run on the same ICs (needs its extra).
    halofit : bool
        Draw CLASS's halofit P(k) on the plot where classy is installed (a few seconds).
    power : str or None
        Two-column text file k [h/Mpc], P [(Mpc/h)^3] at z = 0; None: Eisenstein & Hu.
    fixed_amplitude, paired : bool
        Quijote-style fixed / paired noise.
    check_memory : bool
        Estimate the run's peak memory before computing and refuse one that does not fit in the
        available memory (:mod:`emu_backend.inference.memory`); false (``--ignore-memory-check``)
        runs anyway.

    Examples
    --------
    >>> RunConfig(grid=16, backend="za").box_size_mpc_h
    31.25
    """

    cosmology: Cosmology = QUIJOTE_FIDUCIAL
    grid: int = 32
    box_size: float | None = None
    seed: int = 42
    z: tuple | None = (0.0, 1.0)
    a: tuple | None = None
    backend: str = "emulator"
    weights: str | None = None
    tile_size: int | None = None
    batch_size: int = 1
    device: str = "cpu"
    allow_extrapolation: bool = False
    format: str = "gadget"
    out: str = "emu_out"
    overwrite: bool = False
    n_files: int = 1
    length_unit: str = "kpc/h"
    plot: bool = True
    baseline: str = "2lpt"
    reference: str = "none"
    halofit: bool = True
    power: str | None = None
    fixed_amplitude: bool = False
    paired: bool = False
    check_memory: bool = True

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)
        put("cosmology", _cosmology(self.cosmology))
        put("grid", _int("grid", self.grid, 8, _MAX_GRID))
        if self.box_size is not None:
            put("box_size", _float("box_size", self.box_size, lo=0.0))
        put("seed", _int("seed", self.seed, 0, 2**63 - 1))
        if (self.z is None) == (self.a is None):
            raise InputError(f"config keys 'z' and 'a' are exclusive: give exactly one, got z={self.z!r}, a={self.a!r}")
        if self.z is not None:
            put("z", _times("z", self.z, -1.0 / 3.0, Z_MAX))
        else:
            put("a", _times("a", self.a, A_MIN, 1.5))
        put("backend", _str("backend", self.backend, available_backends()))
        if self.weights is not None:
            put("weights", _path("weights", self.weights))
        if self.tile_size is not None:
            put("tile_size", _int("tile_size", self.tile_size, 8, 1024))
            if self.tile_size % 8:
                raise _fail("tile_size", "must be a multiple of 8", self.tile_size)
        put("batch_size", _int("batch_size", self.batch_size, 1, 4096))
        put("device", _str("device", self.device))
        for key in ("allow_extrapolation", "overwrite", "plot", "halofit", "fixed_amplitude", "paired", "check_memory"):
            put(key, _bool(key, getattr(self, key)))
        put("format", _str("format", self.format, FORMATS))
        put("out", _path("out", self.out))
        put("n_files", _int("n_files", self.n_files, 1, self.grid**3))
        put("length_unit", _str("length_unit", self.length_unit, LENGTH_UNITS))
        put("baseline", _str("baseline", self.baseline, BASELINES))
        put("reference", _str("reference", self.reference, REFERENCES))
        if self.power is not None:
            put("power", _path("power", self.power))

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

    def replace(self, **changes) -> RunConfig:
        """A copy with some keys changed (validated again); ``z`` and ``a`` replace each other."""
        return config_from_mapping(changes, base=self)


_KEYS = tuple(f.name for f in dataclasses.fields(RunConfig))


def _resolve_aliases(mapping: dict, source: str) -> tuple[dict, dict]:
    """``mapping`` with alias keys renamed, and ``{key: alias}`` for the keys that were given by alias."""
    changes, spelled = {}, {}
    for written, value in mapping.items():
        key = KEY_ALIASES.get(written, written)
        if key in changes:
            raise InputError(f"config keys {spelled[key]!r} and {written!r} in {source} are the same key "
                             f"{key!r}: give one of them")
        changes[key], spelled[key] = value, written
    return changes, {key: written for key, written in spelled.items() if key != written}


def config_from_mapping(mapping: dict, base: RunConfig | None = None, source: str = "config") -> RunConfig:
    """Build a :class:`RunConfig` from a dict of keys (e.g. parsed TOML), on top of ``base``.

    Parameters
    ----------
    mapping : dict
        Keys of :class:`RunConfig`, or their aliases in :data:`KEY_ALIASES` (``tile``, ``batch``).
    base : RunConfig, optional
        The values of the keys not given (default: ``RunConfig()``).
    source : str
        Where the keys come from, for error messages.

    Raises
    ------
    InputError
        Unknown keys (named), a key given twice (by its name and its alias), ``z`` and ``a`` together,
        or a bad value: the message names the key as it was written. Giving ``z`` clears the base's
        ``a`` and vice versa.
    """
    if not isinstance(mapping, dict):
        raise InputError(f"{source} must be a table of keys, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - set(_KEYS) - set(KEY_ALIASES))
    if unknown:
        raise InputError(f"unknown config key(s) {unknown} in {source}; allowed keys: {list(_KEYS)} "
                         f"(aliases: {', '.join(f'{a} = {k}' for a, k in KEY_ALIASES.items())})")
    changes, aliased = _resolve_aliases(mapping, source)
    if changes.get("z") is not None and changes.get("a") is not None:
        raise InputError(f"config keys 'z' and 'a' are exclusive in {source}: give one of them")
    if changes.get("z") is not None:
        changes["a"] = None
    elif changes.get("a") is not None:
        changes["z"] = None
    try:
        return dataclasses.replace(base if base is not None else RunConfig(), **changes)
    except InputError as exc:  # name the key as the user wrote it
        message = str(exc)
        for key, written in aliased.items():
            named = f"config key {key!r}"
            if message.startswith(named):
                raise InputError(f"config key {written!r}{message[len(named):]}") from exc
        raise


def load_toml(path) -> dict:
    """Read a TOML config file into a dict (no validation; see :func:`config_from_mapping`).

    Raises
    ------
    FileFormatError
        The file does not exist or is not UTF-8 TOML.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"config file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"config file {str(path)!r} is not valid UTF-8 TOML: {exc}") from exc


#: One line per key of the TOML config (``emu-backend run --print-config``, ``--help``, docs/simulator.md).
KEY_HELP = {
    "grid": "particles per side, in [8, 4096]",
    "box_size": "box side [Mpc/h], > 0; unset: 1000 grid / 512, the emulator's resolution",
    "seed": "white-noise seed, >= 0",
    "z": "output redshifts (or give a = [...], scale factors, instead)",
    "a": "output scale factors in [1/1001, 1.5], instead of z",
    "backend": "emulator, za, 2lpt; jaxpm or pmwd with their extras",
    "weights": "emulator weights file; unset: the shipped demo weights (docs/shipped_weights.md)",
    "tile_size": "emulator output cells per tile side, a multiple of 8 (alias tile); unset: automatic",
    "batch_size": "tiles per network call (alias batch)",
    "device": "torch device of the emulator: cpu, cuda, cuda:1, ...",
    "allow_extrapolation": "let the emulator run outside its training domain (with a warning)",
    "format": "snapshot files: gadget, fields (HDF5) or npz",
    "out": "output folder",
    "overwrite": "replace existing output files",
    "n_files": "files per Gadget snapshot",
    "length_unit": "Gadget length unit: kpc/h or Mpc/h",
    "plot": "write power.png",
    "baseline": "baseline of the plot run from the same ICs: 2lpt, za or none",
    "reference": "N-body reference of the plot from the same ICs: none, jaxpm or pmwd",
    "halofit": "draw CLASS's halofit P(k) on the plot where classy is installed",
    "power": "two-column text file k [h/Mpc], P [(Mpc/h)^3] of the linear P(k) at z = 0; unset: Eisenstein & Hu",
    "fixed_amplitude": "fixed-amplitude noise (Quijote 'fixed')",
    "paired": "phase-flipped noise (Quijote 'paired')",
    "check_memory": "refuse a run whose estimated peak memory exceeds the available memory",
}
#: One line per key of the ``[cosmology]`` table.
COSMOLOGY_HELP = {
    "preset": "start from a preset: quijote or planck18 (the other keys change it)",
    "omega_m": "total matter density Omega_m, in (0, 1)",
    "omega_b": "baryon density Omega_b, in [0, Omega_m)",
    "h": "H0 / (100 km/s/Mpc)",
    "n_s": "scalar spectral index",
    "sigma8": "rms linear density in 8 Mpc/h spheres at z = 0 (or give A_s instead)",
    "A_s": "primordial amplitude at 0.05/Mpc, instead of sigma8",
    "name": "a name recorded in the outputs",
}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def default_toml(config: RunConfig | None = None) -> str:
    """``config`` (default: the embedded default) as a commented TOML file that :func:`load_toml` reads back.

    Keys that are unset (None) are written commented out. ``emu-backend run --print-config`` prints it.

    Examples
    --------
    >>> text = default_toml()
    >>> config_from_mapping(tomllib.loads(text)) == RunConfig()
    True
    """
    config = config if config is not None else RunConfig()
    lines = ["# emu-backend run configuration: emu-backend run --config THIS.toml (flags win over its keys).",
             "# Lengths in Mpc/h; every key is optional (unset keys take the defaults shown here)."]
    for key in _KEYS:
        if key == "cosmology":
            continue
        value = getattr(config, key)
        if key == "a" and config.z is not None:
            continue
        lines.append(f"# {KEY_HELP[key]}")
        lines.append(f"# {key} = ..." if value is None else f"{key} = {_toml_value(value)}")
    lines += ["", "# the cosmology of the ICs and the emulator's style (flat LambdaCDM)", "[cosmology]"]
    cosmo = config.cosmology.to_dict()
    for key, value in cosmo.items():
        lines.append(f"# {COSMOLOGY_HELP.get(key, key)}")
        lines.append(f"# {key} = ..." if value is None else f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
