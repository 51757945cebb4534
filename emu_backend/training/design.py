"""The cosmologies of a training set: a Latin hypercube over Omega_m and sigma8 (optionally more).

A Latin hypercube of ``K`` points in ``d`` parameters splits each parameter range into ``K`` equal
strata and puts exactly one point in every stratum of every parameter (McKay, Beckman & Conover
1979); scipy's :class:`scipy.stats.qmc.LatinHypercube` draws one, seeded, with each point placed at
random inside its stratum. Parameters that are not varied keep the Quijote fiducial values.

Default ranges: Omega_m in [0.1, 0.5] (the emulator's training domain, which a design may not
leave) and sigma8 in [0.6, 1.0]; ``vary_all=True`` adds the Quijote latin-hypercube ranges of
Omega_b [0.03, 0.07], h [0.5, 0.9] and n_s [0.8, 1.2] (Villaescusa-Navarro et al. 2020, table 1).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import qmc

from ..checks import check_int, check_real
from ..cosmology.params import QUIJOTE_FIDUCIAL, Cosmology
from ..errors import DomainError, InputError
from ..inference.domain import TrainingDomain

__all__ = ["Design", "latin_hypercube", "DEFAULT_RANGES", "QUIJOTE_LH_RANGES", "ALLOWED_RANGES"]

logger = logging.getLogger(__name__)

#: Varied by default: Omega_m over the emulator's training domain, sigma8 as in Quijote's LH.
DEFAULT_RANGES: dict[str, tuple[float, float]] = {"omega_m": (0.1, 0.5), "sigma8": (0.6, 1.0)}
#: The five ranges of the Quijote latin hypercube (``vary_all=True``).
QUIJOTE_LH_RANGES: dict[str, tuple[float, float]] = {
    **DEFAULT_RANGES, "omega_b": (0.03, 0.07), "h": (0.5, 0.9), "n_s": (0.8, 1.2)}
#: Closed bounds a range must lie in: Omega_m the training domain, the others what a
#: :class:`Cosmology` accepts (Omega_b additionally below the smallest Omega_m, checked separately).
ALLOWED_RANGES: dict[str, tuple[float, float]] = {
    "omega_m": tuple(TrainingDomain().omega_m), "omega_b": (0.0, 0.5), "h": (0.2, 2.0), "n_s": (0.5, 1.5),
    "sigma8": (0.05, 3.0)}
#: Order of the columns of :attr:`Design.table`.
_ORDER = ("omega_m", "sigma8", "omega_b", "h", "n_s")


def _check_range(name: str, value) -> tuple[float, float]:
    allowed = ALLOWED_RANGES[name]
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise InputError(f"range of {name} must be a pair (low, high), got {value!r}") from None
    lo, hi = (check_real(v, f"each end of the range of {name}") for v in (lo, hi))
    if not lo < hi:
        raise InputError(f"range of {name} = ({lo!r}, {hi!r}) must have low < high")
    if lo < allowed[0] or hi > allowed[1]:
        cls = DomainError if name == "omega_m" else InputError
        what = "the emulator's training domain" if name == "omega_m" else "the allowed range"
        raise cls(f"range of {name} = ({lo!r}, {hi!r}) leaves {what} [{allowed[0]}, {allowed[1]}]")
    return lo, hi


@dataclass(frozen=True, eq=False)
class Design:
    """The cosmologies of a training set, with the table they were drawn from.

    Attributes
    ----------
    names : tuple of str
        Varied parameters (columns of ``table``), in the order omega_m, sigma8, omega_b, h, n_s.
    ranges : dict
        ``name -> (low, high)`` of each varied parameter.
    table : ndarray, shape (n_sims, len(names)), float64
        Parameter values per simulation (read-only).
    base : Cosmology
        Source of the parameters that are not varied.
    seed : int or None
        Seed of the hypercube, or None for a design given as a list.
    """

    names: tuple
    ranges: dict
    table: np.ndarray
    base: Cosmology = QUIJOTE_FIDUCIAL
    seed: int | None = None
    cosmologies: tuple = field(init=False, repr=False)

    def __post_init__(self):
        table = np.array(self.table, dtype=np.float64)
        if table.ndim != 2 or table.shape[1] != len(self.names) or table.shape[0] < 1:
            raise InputError(f"design table must have shape (n_sims >= 1, {len(self.names)}), got {table.shape}")
        table.setflags(write=False)
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "ranges", {k: tuple(v) for k, v in self.ranges.items()})
        cosmos = tuple(self.base.clone(name=f"lh_{i:04d}", **{k: float(v) for k, v in zip(self.names, row)})
                       for i, row in enumerate(table))
        object.__setattr__(self, "cosmologies", cosmos)

    def __len__(self) -> int:
        return self.table.shape[0]

    @classmethod
    def from_cosmologies(cls, cosmologies: Sequence[Cosmology]) -> "Design":
        """A design given as an explicit list of cosmologies (every parameter in the table)."""
        cosmologies = list(cosmologies)
        if not cosmologies or not all(isinstance(c, Cosmology) for c in cosmologies):
            raise InputError("a design needs a non-empty sequence of Cosmology objects")
        if any(c.sigma8 is None for c in cosmologies):
            raise InputError("every cosmology of a design must be normalised by sigma8 (A_s is not supported here)")
        table = [[getattr(c, k) for k in _ORDER] for c in cosmologies]
        design = cls(_ORDER, {}, table, base=cosmologies[0], seed=None)
        object.__setattr__(design, "cosmologies", tuple(cosmologies))
        return design

    def to_dict(self) -> dict:
        """JSON-serialisable description (for ``manifest.json``)."""
        return {"names": list(self.names), "ranges": {k: list(v) for k, v in self.ranges.items()},
                "seed": self.seed, "base": self.base.to_dict(),
                "cosmologies": [c.to_dict() for c in self.cosmologies]}


def latin_hypercube(n_sims: int, seed: int, *, ranges: Mapping | None = None, vary_all: bool = False,
                    base: Cosmology = QUIJOTE_FIDUCIAL) -> Design:
    """A seeded Latin hypercube of cosmologies.

    Parameters
    ----------
    n_sims : int
        Number of simulations, >= 1.
    seed : int
        Non-negative seed of the hypercube (``scipy.stats.qmc.LatinHypercube(rng=seed)``).
    ranges : mapping, optional
        ``name -> (low, high)`` for names among omega_m, sigma8, omega_b, h, n_s; added to (or
        replacing) the default ranges. Omega_m must stay in the training domain [0.1, 0.5].
    vary_all : bool
        Vary Omega_b, h and n_s too, over the Quijote latin-hypercube ranges.
    base : Cosmology
        Values of the parameters that are not varied (default: Quijote fiducial).

    Returns
    -------
    Design
        ``design.cosmologies[i]`` is the cosmology of simulation ``i``.

    Raises
    ------
    InputError
        A bad count, seed, parameter name or range (the message names it and the allowed range).
    DomainError
        An Omega_m range outside the training domain.

    Examples
    --------
    >>> d = latin_hypercube(4, seed=0)
    >>> d.names, len(d.cosmologies)
    (('omega_m', 'sigma8'), 4)
    >>> sorted(int(4 * (c.omega_m - 0.1) / 0.4) for c in d.cosmologies)  # one per stratum
    [0, 1, 2, 3]
    """

    n_sims = check_int(n_sims, "n_sims", 1)
    seed = check_int(seed, "seed", 0)
    if not isinstance(base, Cosmology):
        raise InputError(f"base must be a Cosmology, got {type(base).__name__}")
    if ranges is not None and not isinstance(ranges, Mapping):
        raise InputError(f"ranges must be a mapping name -> (low, high), got {type(ranges).__name__}")
    chosen = dict(QUIJOTE_LH_RANGES if vary_all else DEFAULT_RANGES)
    for name, value in (ranges or {}).items():
        if name not in ALLOWED_RANGES:
            raise InputError(f"unknown design parameter {name!r}; choose among {list(_ORDER)}")
        chosen[name] = value
    checked = {name: _check_range(name, chosen[name]) for name in _ORDER if name in chosen}
    om_lo = checked["omega_m"][0] if "omega_m" in checked else base.omega_m
    ob_hi = checked["omega_b"][1] if "omega_b" in checked else base.omega_b
    if ob_hi >= om_lo:
        raise InputError(f"Omega_b up to {ob_hi!r} is not below the smallest Omega_m {om_lo!r}")
    if "sigma8" not in checked and base.sigma8 is None:
        raise InputError("the base cosmology has no sigma8 and sigma8 is not varied")
    names = tuple(checked)
    generator = np.random.default_rng(seed)
    try:
        sampler = qmc.LatinHypercube(d=len(names), rng=generator)
    except TypeError:  # scipy < 1.15 names the argument ``seed``
        sampler = qmc.LatinHypercube(d=len(names), seed=generator)
    unit = sampler.random(n_sims)
    lo = np.array([checked[k][0] for k in names])
    hi = np.array([checked[k][1] for k in names])
    table = lo + unit * (hi - lo)
    logger.info("Latin hypercube: %d sims over %s (seed %d)", n_sims, checked, seed)
    return Design(names, checked, table, base=base, seed=seed)
